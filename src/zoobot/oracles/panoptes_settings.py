"""Settings of the Zooniverse Panoptes oracle: which project and workflow, how answers map to
the schema, when a galaxy is complete, and how patiently to talk to the API.

Credentials are not settings: they come from ``PANOPTES_USERNAME`` / ``PANOPTES_PASSWORD`` or
from the file named by ``credentials_file`` (``panoptes_session.read_credentials``), so the
experiment's ``instructions.json`` never holds a password.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from zoobot.checks import SettingsError, check_int, check_number
from zoobot.convert.common import ConversionError
from zoobot.convert.panoptes_annotations import TaskMap, parse_task_map, read_task_map_file

OWNER = "panoptes oracle"
REQUIRED = ("project_id", "workflow_id", "task_map")
POOL_CATALOG = "unlabelled_catalog.parquet"  # inside a define-experiment folder: file_loc, ra, dec
SET_NAME_FIELDS = {"experiment", "iteration"}


@dataclass(frozen=True)
class PanoptesSettings:
    """One Panoptes project and workflow, and the schema answers its tasks stand for.

    ``task_map`` is the converter's task map (``convert.panoptes_annotations``) as a mapping:
    ``{"schema": ..., "tasks": {"T0": {"question": ..., "answers": {label or index: answer}}}}``.
    ``catalog_path`` holds ``file_loc`` (and ``ra``/``dec`` when present) of the galaxies
    that can be requested.
    """

    project_id: str
    workflow_id: str
    task_map: dict
    catalog_path: str
    retirement_limit: int = 40  # votes that complete a galaxy (also BALD's expected votes)
    subject_set_name: str = "zoobot {experiment} iteration {iteration}"
    endpoint: str = "https://www.zooniverse.org"
    credentials_file: str | None = None  # YAML/JSON {username, password}; default: the environment
    link_batch_size: int = 100  # subjects linked to a set per request
    page_size: int = 100  # results per page when listing subjects and classifications
    retries: int = 5  # attempts after the first, for each call that failed in transit or with a 5xx
    backoff_s: float = 2.0  # the first wait between attempts; it doubles each time
    timeout_s: float = 60.0  # seconds before a request counts as failed in transit

    def __post_init__(self) -> None:
        for name in ("project_id", "workflow_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not str(value).isdigit():
                raise SettingsError(f"{OWNER}.{name}: expected a Panoptes id (digits, e.g. 1234), got {value!r}")
            object.__setattr__(self, name, str(value))
        self.parsed_task_map()
        if not isinstance(self.catalog_path, str) or not self.catalog_path:
            raise SettingsError(f"{OWNER}.catalog_path: expected the path of a catalog with file_loc, got {self.catalog_path!r}")
        check_int(OWNER, "retirement_limit", self.retirement_limit, minimum=1)
        check_int(OWNER, "link_batch_size", self.link_batch_size, minimum=1)
        check_int(OWNER, "page_size", self.page_size, minimum=1)
        check_int(OWNER, "retries", self.retries, minimum=0)
        check_number(OWNER, "backoff_s", self.backoff_s, 0.0, None)
        check_number(OWNER, "timeout_s", self.timeout_s, 0.0, None, low_inclusive=False)
        self._check_set_name()
        if not isinstance(self.endpoint, str) or not self.endpoint.startswith(("https://", "http://")):
            raise SettingsError(f"{OWNER}.endpoint: expected a URL such as https://www.zooniverse.org, got {self.endpoint!r}")
        if self.endpoint.endswith("/"):
            raise SettingsError(f"{OWNER}.endpoint: expected no trailing slash, got {self.endpoint!r}")
        if self.credentials_file is not None and (not isinstance(self.credentials_file, str) or not self.credentials_file):
            raise SettingsError(f"{OWNER}.credentials_file: expected a path or null, got {self.credentials_file!r}")

    def _check_set_name(self) -> None:
        name = self.subject_set_name
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(name) if f is not None} if isinstance(name, str) else None
        except ValueError:
            used = None
        if used is None or "iteration" not in used or used - SET_NAME_FIELDS:
            raise SettingsError(
                f"{OWNER}.subject_set_name: expected a name pattern with {{iteration}} (and optionally "
                f"{{experiment}}), e.g. 'zoobot {{experiment}} iteration {{iteration}}', got {name!r}"
            )

    def parsed_task_map(self) -> TaskMap:
        try:
            return parse_task_map(self.task_map, source=f"{OWNER}.task_map")
        except ConversionError as error:
            raise SettingsError(str(error)) from None

    def set_name(self, experiment: str, iteration: int) -> str:
        return self.subject_set_name.format(experiment=experiment, iteration=iteration)

    def votes_per_galaxy(self) -> int:
        """How many votes a requested galaxy gets: the retirement limit."""
        return self.retirement_limit

    @classmethod
    def for_experiment(cls, catalog_dir: str | Path, seed: int, **options: Any) -> "PanoptesSettings":
        """Settings from ``--oracle-config`` options; the galaxies come from ``catalog_dir``'s pool.

        ``task_map`` may be the mapping itself or the path of a task map file (read now, so the
        experiment keeps a copy). ``seed`` is unused: nothing here is random.
        """
        missing = [name for name in REQUIRED if name not in options]
        if missing:
            raise SettingsError(
                f"{OWNER}: missing {', '.join(repr(m) for m in missing)} in the oracle config; expected "
                f"{', '.join(REQUIRED)} (see docs/live.md)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise SettingsError(f"{OWNER}: unknown settings {unknown}; expected some of {sorted(known)}")
        options = dict(options)
        if isinstance(options["task_map"], str):
            try:
                options["task_map"] = read_task_map_file(options["task_map"])
            except ConversionError as error:
                raise SettingsError(f"{OWNER}.task_map: {error}") from None
        if isinstance(options.get("credentials_file"), str):  # absolute, so cron can run from anywhere
            options["credentials_file"] = str(Path(options["credentials_file"]).expanduser().resolve())
        if "catalog_path" not in options:
            path = Path(catalog_dir) / POOL_CATALOG
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: the Panoptes oracle uploads the pool galaxies' images from it; "
                    "pass a folder made by `zoobot define-experiment`"
                )
            options["catalog_path"] = str(path.resolve())
        return cls(**options)

