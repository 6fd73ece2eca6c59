"""The Zooniverse Panoptes oracle (``--oracle panoptes``): real volunteers, through the
``panoptes-client`` package.

``request(ids, iteration)`` uploads each galaxy's image as a subject of the iteration's subject
set, linked to the workflow (``panoptes_upload``); ``collect(iteration)`` reads the
classifications made since the last collection and hands their votes over as deliveries
(``panoptes_collect``). Both keep their progress in ``EXPERIMENT/oracle_state.sqlite``
(``panoptes_state``), so either can be killed and rerun. Nothing logs in until there is
something to upload or collect. See docs/live.md for running it against a real project.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zoobot.catalog import read_table
from zoobot.ids import describe_ids
from zoobot.oracles.base import Delivery
from zoobot.oracles.panoptes_collect import Collector
from zoobot.oracles.panoptes_session import PanoptesError, PanoptesSession, read_credentials
from zoobot.oracles.panoptes_settings import PanoptesSettings
from zoobot.oracles.panoptes_state import PanoptesState
from zoobot.oracles.panoptes_upload import Uploader
from zoobot.oracles.registry import register_oracle
from zoobot.schema import Schema, get_schema


@register_oracle("panoptes")
class PanoptesOracle:
    """Votes from Zooniverse volunteers on a Panoptes workflow."""

    Settings = PanoptesSettings
    live = True  # votes come from people, hours or days after a request

    def __init__(self, settings: PanoptesSettings, experiment_dir: str | Path, schema: Schema):
        self.settings = settings
        self.schema = schema
        self.experiment_dir = Path(experiment_dir)
        self.task_map = settings.parsed_task_map()
        _check_schema(settings, schema.name, list(schema.answer_columns), self.task_map)
        self.state = PanoptesState(self.experiment_dir)
        self._session: PanoptesSession | None = None
        self._galaxies: dict[str, dict] | None = None

    @staticmethod
    def check_shards(settings: PanoptesSettings, reader) -> None:
        """The task map's schema must be the shards' schema, and the pool must have images to upload."""
        schema = get_schema(reader.schema_spec)
        _check_schema(settings, schema.name, list(schema.answer_columns), settings.parsed_task_map())
        pool = set(reader.ids("pool"))
        catalog = set(read_table(settings.catalog_path)["id_str"].astype(str))
        missing = sorted(pool - catalog)
        if missing:
            raise ValueError(
                f"pool galaxies {describe_ids(missing)} in {reader.shard_dir} are not in {settings.catalog_path}, "
                "so their images cannot be uploaded; make the shards from the same experiment's catalogs"
            )

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.state.close()

    def request(self, ids: Sequence[str], iteration: int) -> None:
        """Upload the galaxies not uploaded yet as subjects of iteration's set (first request wins)."""
        ids = [str(i) for i in ids]
        galaxies = self._catalog()
        unknown = [i for i in ids if i not in galaxies]
        if unknown:
            raise KeyError(
                f"the Panoptes oracle has no image for {describe_ids(unknown)}: they are not in "
                f"{self.settings.catalog_path}"
            )
        missing = [i for i in ids if not os.path.isfile(galaxies[i]["file_loc"])]
        if missing:
            raise FileNotFoundError(
                f"the images of {describe_ids(missing)} are missing (file_loc in {self.settings.catalog_path}, "
                f"e.g. {galaxies[missing[0]]['file_loc']})"
            )
        self.state.add_requests(ids, iteration)
        if self.state.unfinished():
            Uploader(self._connect(), self.state, self.settings, self.experiment_dir.name, galaxies).run()

    def collect(self, iteration: int) -> list[Delivery]:
        """Deliveries handed over in ``iteration``, after reading what volunteers did since the last call."""
        session = self._connect() if self.state.subject_ids() else None
        return Collector(session, self.state, self.settings, self.task_map).collect(iteration)

    def report(self) -> dict:
        """Collection so far: classifications by status, unknown answers, watermark, galaxies complete."""
        return Collector(None, self.state, self.settings, self.task_map).report()

    def _connect(self) -> PanoptesSession:
        if self._session is None:
            settings = self.settings
            self._session = PanoptesSession(
                settings.endpoint, read_credentials(settings.credentials_file), settings.timeout_s,
                settings.retries, settings.backoff_s,
            )
        return self._session

    def _catalog(self) -> dict[str, dict]:
        """id_str -> {file_loc (absolute), ra, dec} of the galaxies that can be requested."""
        if self._galaxies is None:
            path = Path(self.settings.catalog_path)
            catalog = read_table(path)
            if "file_loc" not in catalog.columns:
                raise PanoptesError(f"{path} has no file_loc column: the Panoptes oracle needs the image of each galaxy")
            folder = path.resolve().parent
            columns = [c for c in ("ra", "dec") if c in catalog.columns]
            self._galaxies = {
                str(row["id_str"]): {
                    "file_loc": str(folder / str(row["file_loc"])),  # an absolute file_loc stays as it is
                    **{c: row[c] for c in columns},
                }
                for row in catalog[["id_str", "file_loc", *columns]].to_dict("records")
            }
        return self._galaxies


def _check_schema(settings: PanoptesSettings, schema_name: str, answer_columns: list[str], task_map) -> None:
    if list(task_map.schema.answer_columns) != answer_columns:
        raise ValueError(
            f"panoptes oracle.task_map: expected a task map for the experiment's schema {schema_name!r}, "
            f"got one for {task_map.schema.name!r}; set 'schema' in the task map to {schema_name!r}"
        )
