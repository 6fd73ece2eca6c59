"""Raw Panoptes classification exports -> vote counts per galaxy.

A Zooniverse project's classification export is a CSV with one row per classification:
``classification_id, user_name, user_id, user_ip, workflow_id, workflow_name, workflow_version,
created_at, gold_standard, expert, metadata, annotations, subject_data, subject_ids``.
``annotations`` is a JSON list of ``{"task": "T0", "value": ...}``; ``value`` is an answer index
(int), an answer label (str), a list of them (multiple-choice questions), a list of nested
``{"task", "value"}`` (combo tasks) or null (skipped). ``subject_data`` is a JSON object
``{"<subject id>": {metadata uploaded with the subject}}``.

A *task map* (JSON or YAML, see :func:`load_task_map` and docs/converters.md) says which
schema the votes belong to, which question each task asks, and which schema answer each
Panoptes answer (label or index) is.

Conversion steps, each reported: keep one workflow, drop classifications made on workflow
versions older than ``min_workflow_version`` and outside ``[since, until)``, drop repeated
``classification_id`` rows, drop classifications of several subjects at once, keep only the
first classification of a galaxy by each volunteer, then count one vote per answer.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from zoobot.ids import describe_ids
from zoobot.convert.common import (
    N_EXAMPLES,
    ConversionError,
    ConversionReport,
    ConversionResult,
    Timer,
    check_ids,
    finish,
    require_columns,
    resolve_images,
)
from zoobot.convert.decals import DECALS_SCHEMAS
from zoobot.schema import SCHEMAS, Schema, get_schema

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "classification_id", "user_name", "workflow_id", "workflow_version", "created_at",
    "annotations", "subject_ids",
)
LOGGED_OUT_PREFIX = "not-logged-in"
TASK_MAP_KEYS = {"schema", "workflow_id", "image_field", "id_field", "ignore_tasks", "tasks"}


@dataclass(frozen=True)
class TaskSpec:
    """One Panoptes task: the schema question it asks and {label or index: answer column}."""

    task: str
    question: str
    answers: dict[str, str]


@dataclass(frozen=True)
class TaskMap:
    schema: Schema
    tasks: dict[str, TaskSpec]
    ignore_tasks: frozenset[str] = frozenset()
    workflow_id: str | None = None
    image_field: str | None = None  # subject metadata key holding the image file name
    id_field: str | None = None  # subject metadata key used as id_str (default: subject id)
    source: str = "task map"


def _known_schema(name: str, source) -> Schema:
    if name in DECALS_SCHEMAS:
        return DECALS_SCHEMAS[name]
    try:
        return get_schema(name)
    except KeyError:
        raise ConversionError(
            f"{source}: unknown schema {name!r}; expected one of {sorted({*SCHEMAS, *DECALS_SCHEMAS})}"
        ) from None


def parse_task_map(raw: dict, source: str = "task map") -> TaskMap:
    """Validate a task map given as a dict (the parsed JSON or YAML file)."""
    if not isinstance(raw, dict):
        raise ConversionError(f"{source}: expected a mapping with 'schema' and 'tasks', got {type(raw).__name__}")
    unknown_keys = set(raw) - TASK_MAP_KEYS
    if unknown_keys:
        raise ConversionError(f"{source}: unknown keys {sorted(unknown_keys)}; expected {sorted(TASK_MAP_KEYS)}")
    for key in ("schema", "tasks"):
        if key not in raw:
            raise ConversionError(f"{source}: missing {key!r}; see docs/converters.md for an example")
    schema = _known_schema(str(raw["schema"]), source)
    if not isinstance(raw["tasks"], dict) or not raw["tasks"]:
        raise ConversionError(f"{source}: 'tasks' must map task keys (e.g. T0) to {{question, answers}}")
    tasks = {}
    for task, spec in raw["tasks"].items():
        task = str(task)
        where = f"{source}: task {task}"
        if not isinstance(spec, dict) or set(spec) != {"question", "answers"}:
            raise ConversionError(f"{where}: expected exactly the keys 'question' and 'answers', got {spec!r}")
        try:
            question = schema.question(str(spec["question"]))
        except KeyError as error:
            raise ConversionError(f"{where}: {error.args[0]}") from None
        answers = spec["answers"]
        if isinstance(answers, list):  # shorthand: answer index -> schema answer
            answers = dict(enumerate(answers))
        if not isinstance(answers, dict) or not answers:
            raise ConversionError(f"{where}: 'answers' must map answer labels or indices to schema answers")
        mapped = {}
        for label, answer in answers.items():
            if isinstance(label, bool) or isinstance(answer, bool):
                raise ConversionError(
                    f"{where}: {label!r}: {answer!r} was read as a true/false value; YAML reads bare "
                    "yes/no/on/off that way. Quote answer names and labels, e.g. 'yes'."
                )
            answer = str(answer)
            column = answer if answer in question.columns() else f"{question.name}_{answer}"
            if column not in question.columns():
                raise ConversionError(
                    f"{where}: answer {label!r} maps to {answer!r}, which question {question.name!r} "
                    f"does not have; its answers are {list(question.answers)}"
                )
            mapped[str(label).strip()] = column
        tasks[task] = TaskSpec(task, question.name, mapped)
    ignore = frozenset(str(t) for t in raw.get("ignore_tasks") or [])
    both = ignore & set(tasks)
    if both:
        raise ConversionError(f"{source}: tasks {sorted(both)} are both mapped and in ignore_tasks")
    text = {k: (None if raw.get(k) is None else str(raw[k])) for k in ("workflow_id", "image_field", "id_field")}
    return TaskMap(schema, tasks, ignore, source=source, **text)


def load_task_map(path: str | Path) -> TaskMap:
    """Read a task map from ``.json``, ``.yaml`` or ``.yml``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"task map {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
        elif path.suffix.lower() in (".yaml", ".yml"):
            raw = yaml.safe_load(path.read_text())
        else:
            raise ConversionError(f"task map {path}: expected a .json, .yaml or .yml file")
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConversionError(f"task map {path} is not valid {path.suffix[1:].upper()}: {error}") from error
    return parse_task_map(raw, source=str(path))


def parse_version(text: str) -> tuple[int, int]:
    """'12.3' -> (12, 3); '12' -> (12, 0). Raises ValueError on anything else."""
    parts = str(text).strip().split(".")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected a workflow version like '12.3', got {text!r}")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def parse_time(text: str | pd.Timestamp) -> pd.Timestamp:
    """A date or date-time, read as UTC when it names no time zone."""
    stamp = pd.Timestamp(str(text).replace(" UTC", ""))
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _read_export(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConversionError(f"Panoptes export {path} does not exist or is not a file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ConversionError(f"Panoptes export {path} is not a readable CSV: {error}") from error


def _loads(texts: pd.Series, column: str, export: pd.DataFrame, path) -> list:
    """json.loads every cell; raise naming the classifications (and CSV lines) that are not JSON."""
    parsed, bad = [], []
    for index, text in zip(texts.index, texts.to_numpy(dtype=object)):
        try:
            parsed.append(json.loads(text))
        except (json.JSONDecodeError, TypeError):
            parsed.append(None)
            bad.append(index)
    if bad:
        rows = export.loc[bad]
        shown = ", ".join(
            f"{cid} (line {i + 2})" for i, cid in zip(rows.index[:N_EXAMPLES], rows["classification_id"])
        )
        raise ConversionError(
            f"{path}: column {column!r} is not valid JSON in {len(bad)} classifications: {shown}"
            f"{', ...' if len(bad) > N_EXAMPLES else ''}. Re-download the export, or remove those rows."
        )
    return parsed


class _Tally:
    """Votes found in annotations, plus what could not be mapped."""

    def __init__(self, task_map: TaskMap):
        self.task_map = task_map
        self.schema_index = {c: i for i, c in enumerate(task_map.schema.answer_columns)}
        self.rows: list[int] = []
        self.answers: list[int] = []
        self.unknown_tasks: Counter = Counter()
        self.unknown_answers: Counter = Counter()
        self.empty = 0
        self._simple: dict = {}  # (task, value) -> answer index, for single str/int values

    def add(self, row: int, annotation) -> None:
        try:  # fast path: a single answer seen before (bools are never answers: True == 1)
            value = annotation["value"]
            if type(value) is not bool:
                self.answers.append(self._simple[annotation["task"], value])
                self.rows.append(row)
                return
        except (KeyError, TypeError):
            pass
        if not isinstance(annotation, dict) or "task" not in annotation:
            self.unknown_answers[("?", repr(annotation)[:80])] += 1
            return
        task = str(annotation["task"])
        value = annotation.get("value")
        if task in self.task_map.ignore_tasks:
            return
        if isinstance(value, list) and value and all(isinstance(v, dict) and "task" in v for v in value):
            for nested in value:  # combo task
                self.add(row, nested)
            return
        spec = self.task_map.tasks.get(task)
        if spec is None:
            self.unknown_tasks[task] += 1
            return
        values = value if isinstance(value, list) else [value]
        if not values or all(v is None for v in values):
            self.empty += 1
            return
        for item in values:
            if item is None:
                continue
            key = str(item).strip() if isinstance(item, (str, int)) and not isinstance(item, bool) else None
            column = spec.answers.get(key) if key is not None else None
            if column is None:
                self.unknown_answers[(task, repr(item)[:80])] += 1
                continue
            self.rows.append(row)
            self.answers.append(self.schema_index[column])
            if value is item and type(item) in (str, int):
                self._simple[annotation["task"], item] = self.schema_index[column]

    def raise_unknown(self, path) -> None:
        if self.unknown_tasks:
            listed = ", ".join(f"{t} ({n} annotations)" for t, n in self.unknown_tasks.most_common())
            raise ConversionError(
                f"{path}: tasks that the task map {self.task_map.source} does not cover: {listed}. "
                "Map them under 'tasks', or list them under 'ignore_tasks' to leave them out."
            )
        if self.unknown_answers:
            listed = ", ".join(
                f"{task}: {value} ({n})" for (task, value), n in self.unknown_answers.most_common(20)
            )
            more = f" and {len(self.unknown_answers) - 20} more" if len(self.unknown_answers) > 20 else ""
            raise ConversionError(
                f"{path}: answers that the task map {self.task_map.source} does not know (task: answer "
                f"(annotations)): {listed}{more}. Add each label (or answer index) to that task's "
                "'answers', or check that the export and the map are for the same workflow."
            )


def _subject_field(data, subject: str, field: str):
    """A metadata field of one subject in a parsed subject_data blob, or None."""
    if not isinstance(data, dict):
        return None
    metadata = data.get(subject)
    if metadata is None and len(data) == 1:
        metadata = next(iter(data.values()))
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(field)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def convert_panoptes(
    export_path: str | Path,
    task_map: TaskMap | str | Path,
    images_dir: str | Path | None = None,
    workflow_id: str | int | None = None,
    min_workflow_version: str | None = None,
    since: str | None = None,
    until: str | None = None,
    dedupe_users: bool = True,
    missing_images: str = "error",
) -> ConversionResult:
    """Aggregate a Panoptes classification export into one row of vote counts per galaxy.

    workflow_id: the workflow to keep (default: the task map's, else the only one in the export).
    min_workflow_version: drop classifications made on older versions, e.g. "12.3".
    since, until: keep classifications with ``since <= created_at < until`` (UTC).
    dedupe_users: keep only each volunteer's first classification of a galaxy. Logged-in
        volunteers are keyed by user_id; logged-out ones by user_ip when the export has it,
        else they cannot be told apart and are kept (the report counts them).
    images_dir: images are ``images_dir / <subject metadata image_field>``; None for no images.
    """
    if not isinstance(task_map, TaskMap):
        task_map = load_task_map(task_map)
    try:
        minimum = None if min_workflow_version is None else parse_version(min_workflow_version)
        start = None if since is None else parse_time(since)
        stop = None if until is None else parse_time(until)
    except ValueError as error:
        raise ConversionError(
            f"--workflow-version/--since/--until: {error}; expected e.g. 12.3 and 2020-01-31"
        ) from None
    path = Path(export_path)
    report = ConversionReport("panoptes", str(path), unit="classifications")
    with Timer() as timer:
        export = _read_export(path)
        report.n_read = len(export)
        require_columns(
            export, REQUIRED_COLUMNS, path,
            "Expected a Panoptes classification export (Project Builder > Data Exports).",
        )
        needs_subject_data = task_map.image_field is not None or task_map.id_field is not None
        if needs_subject_data:
            require_columns(export, ["subject_data"], path, "The task map reads image_field/id_field from it.")
        if images_dir is not None and task_map.image_field is None:
            raise ConversionError(
                f"--images needs 'image_field' in the task map {task_map.source}: the subject metadata "
                "key that holds each image's file name (e.g. '!filename'); or pass --no-images."
            )
        keep = np.ones(len(export), bool)
        ids = export["classification_id"]

        chosen = _choose_workflow(export, workflow_id if workflow_id is not None else task_map.workflow_id, path)
        other = keep & (export["workflow_id"].str.strip() != chosen).to_numpy()
        for other_id in sorted(export.loc[other, "workflow_id"].unique()):
            rows = other & (export["workflow_id"] == other_id).to_numpy()
            report.drop(f"other workflow {other_id} (kept workflow {chosen})", ids[rows])
        keep &= ~other
        report.note(f"workflow {chosen}")

        if minimum is not None:
            versions = _versions(export, keep, path)
            old = keep & np.array([v is not None and v < minimum for v in versions])
            report.drop(f"workflow_version below {min_workflow_version}", ids[old])
            keep &= ~old

        created = _created_at(export, keep, path)
        if start is not None:
            early = keep & (created < start).to_numpy()
            report.drop(f"created before {since}", ids[early])
            keep &= ~early
        if stop is not None:
            late = keep & (created >= stop).to_numpy()
            report.drop(f"created on or after {until}", ids[late])
            keep &= ~late

        repeated = keep & export["classification_id"].where(keep).duplicated(keep="first").to_numpy()
        report.drop("repeated classification_id (first row kept)", ids[repeated])
        keep &= ~repeated

        subjects = export["subject_ids"].str.strip()
        empty = keep & (subjects == "").to_numpy()
        if empty.any():
            raise ConversionError(
                f"{path}: subject_ids is empty for classifications {describe_ids(ids[empty])}. "
                "Every classification must name its subject."
            )
        several = keep & subjects.str.contains(r"[;,\s]", regex=True).to_numpy()
        report.drop("classification of several subjects at once (not one galaxy)", ids[several])
        keep &= ~several

        galaxy, metadata = _galaxies(export, subjects, keep, task_map, path, report)

        if dedupe_users:
            keep = _dedupe_users(export, galaxy, created, keep, report)

        kept_rows = np.flatnonzero(keep)
        annotations = _loads(export["annotations"].iloc[kept_rows], "annotations", export, path)
        tally = _Tally(task_map)
        for row, items in zip(kept_rows, annotations):
            if not isinstance(items, list):
                raise ConversionError(
                    f"{path}: annotations of classification {export['classification_id'].iloc[row]} "
                    f"(line {row + 2}) is {type(items).__name__}; expected a JSON list of {{task, value}}"
                )
            for annotation in items:
                tally.add(row, annotation)
        tally.raise_unknown(path)
        if tally.empty:
            report.note(f"{tally.empty} annotations had no answer (skipped questions); they add no votes")

        galaxy_ids, galaxy_index = np.unique(galaxy[kept_rows], return_inverse=True)
        row_to_galaxy = np.full(len(export), -1)
        row_to_galaxy[kept_rows] = galaxy_index
        counts = np.zeros((len(galaxy_ids), task_map.schema.n_answers), dtype=np.int64)
        np.add.at(counts, (row_to_galaxy[np.asarray(tally.rows, dtype=np.int64)], np.asarray(tally.answers, dtype=np.int64)), 1)
        classifications = np.bincount(galaxy_index, minlength=len(galaxy_ids))

        ids_out = pd.Series(galaxy_ids.astype(str), dtype=object)
        ids_out = check_ids(ids_out, path, task_map.id_field or "subject_ids")
        first_row = {g: r for r, g in zip(kept_rows[::-1], galaxy[kept_rows][::-1])}
        extras = pd.DataFrame({
            "subject_ids": [metadata["subject"][first_row[g]] for g in galaxy_ids],
            "n_classifications": classifications.astype(np.int64),
        })
        counts_frame = pd.DataFrame(counts, columns=task_map.schema.answer_columns)

        file_loc, keep_galaxies = None, None
        if images_dir is None:
            report.note("no images: file_loc is empty (votes-only catalog)")
        else:
            names = pd.Series([metadata["image"][first_row[g]] for g in galaxy_ids], dtype=object)
            scratch = ConversionReport("panoptes", str(path))
            file_loc, keep_galaxies = resolve_images(
                ids_out, names, images_dir, missing_images, scratch,
                f"subject metadata {task_map.image_field!r}",
            )
            for note in scratch.notes:
                report.note(note)
            lost = ~keep_galaxies
            if lost.any():
                report.drop(
                    f"image not found for {lost.sum()} galaxies (subject metadata {task_map.image_field!r})",
                    ids_out[lost], count=int(classifications[lost].sum()),
                )
        result = finish(ids_out, file_loc, counts_frame, extras, task_map.schema, report, keep_galaxies)
    report.seconds = timer.seconds
    return result


def _choose_workflow(export: pd.DataFrame, wanted, path) -> str:
    present = export["workflow_id"].str.strip().value_counts()
    listing = ", ".join(f"{w} ({n} classifications)" for w, n in present.items())
    if wanted is None:
        if len(present) == 1:
            return str(present.index[0])
        raise ConversionError(
            f"{path} holds several workflows: {listing}. Choose one with --workflow-id "
            "(or 'workflow_id' in the task map)."
        )
    wanted = str(wanted).strip()
    if wanted not in present.index:
        raise ConversionError(f"{path}: no classifications of workflow {wanted}; it holds {listing}")
    return wanted


def _versions(export: pd.DataFrame, keep: np.ndarray, path) -> list:
    versions, bad = [], []
    for index, (text, wanted) in enumerate(zip(export["workflow_version"], keep)):
        try:
            versions.append(parse_version(text) if wanted else None)
        except ValueError:
            versions.append(None)
            bad.append(index)
    if bad:
        raise ConversionError(
            f"{path}: workflow_version is not 'major.minor' for classifications "
            f"{describe_ids(export['classification_id'].iloc[bad])} (e.g. {export['workflow_version'].iloc[bad[0]]!r})."
        )
    return versions


def _created_at(export: pd.DataFrame, keep: np.ndarray, path) -> pd.Series:
    text = export["created_at"].str.replace(" UTC", "", regex=False).str.strip()
    created = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = keep & created.isna().to_numpy()
    if bad.any():
        raise ConversionError(
            f"{path}: created_at is not a date-time (like '2019-03-14 12:34:56 UTC') for classifications "
            f"{describe_ids(export['classification_id'][bad])}."
        )
    return created


def _galaxies(export, subjects, keep, task_map: TaskMap, path, report):
    """Galaxy key per row (id_field value, else subject id) and per-row subject metadata."""
    rows = np.flatnonzero(keep)
    image = np.full(len(export), None, dtype=object)
    galaxy = subjects.to_numpy(dtype=object).copy()
    if task_map.image_field is not None or task_map.id_field is not None:
        first = pd.Series(rows, index=subjects.iloc[rows].to_numpy()).groupby(level=0).first()
        parsed = _loads(export["subject_data"].iloc[first.to_numpy()], "subject_data", export, path)
        by_subject = dict(zip(first.index, parsed))
        if task_map.id_field is not None:
            names = {s: _subject_field(d, s, task_map.id_field) for s, d in by_subject.items()}
            nameless = [s for s, n in names.items() if n is None]
            if nameless:
                raise ConversionError(
                    f"{path}: subject_data has no {task_map.id_field!r} (the task map's id_field) for "
                    f"subjects {describe_ids(nameless)}. Fix the field name, or remove id_field to use "
                    "subject ids."
                )
            galaxy[rows] = [names[s] for s in subjects.iloc[rows]]
            shared = pd.Series(list(names)).groupby(pd.Series(list(names.values()))).size()
            if (shared > 1).any():
                report.note(
                    f"{int((shared > 1).sum())} galaxies were shown as several subjects; their votes are "
                    f"counted together (e.g. {describe_ids(shared[shared > 1].index)})"
                )
        if task_map.image_field is not None:
            files = {s: _subject_field(d, s, task_map.image_field) for s, d in by_subject.items()}
            image[rows] = [files[s] for s in subjects.iloc[rows]]
    return galaxy, {"subject": subjects.to_numpy(dtype=object), "image": image}


def _dedupe_users(export, galaxy, created, keep, report) -> np.ndarray:
    """Keep each volunteer's earliest classification of a galaxy; report the rest."""
    user_id = export["user_id"].str.strip() if "user_id" in export.columns else pd.Series("", index=export.index)
    user_ip = export["user_ip"].str.strip() if "user_ip" in export.columns else pd.Series("", index=export.index)
    logged_out = export["user_name"].str.startswith(LOGGED_OUT_PREFIX) | (user_id == "")
    key = np.where(~logged_out, "user:" + user_id, np.where(user_ip != "", "ip:" + user_ip, ""))
    known = keep & (key != "")
    unknown = keep & (key == "")
    if unknown.any():
        report.note(
            f"{unknown.sum()} classifications by logged-out volunteers without user_ip could not be "
            "de-duplicated by volunteer; all are kept"
        )
    frame = pd.DataFrame({"key": key, "galaxy": galaxy, "created": created, "row": np.arange(len(export))})
    frame = frame[known].sort_values(["created", "row"], kind="stable")
    repeat_rows = frame.loc[frame.duplicated(["key", "galaxy"], keep="first"), "row"].to_numpy()
    repeat = np.zeros(len(export), bool)
    repeat[repeat_rows] = True
    report.drop(
        "repeat classification of a galaxy by the same volunteer (earliest kept)",
        export["classification_id"][repeat],
    )
    return keep & ~repeat
