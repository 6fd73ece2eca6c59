"""Raw Panoptes classification exports -> vote counts per galaxy.

A Zooniverse project's classification export is a CSV with one row per classification:
``classification_id, user_name, user_id, user_ip, workflow_id, workflow_name, workflow_version,
created_at, gold_standard, expert, metadata, annotations, subject_data, subject_ids``.
``annotations`` is a JSON list of ``{"task": "T0", "value": ...}``, read against a task map by
:mod:`zoobot.convert.panoptes_annotations`. ``subject_data`` is a JSON object
``{"<subject id>": {metadata uploaded with the subject}}``.

Conversion steps, each reported: keep one workflow, drop classifications made on workflow
versions older than ``min_workflow_version`` and outside ``[since, until)``, drop repeated
``classification_id`` rows, drop classifications of several subjects at once, keep only the
first classification of a galaxy by each volunteer, then count one vote per answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

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
from zoobot.convert.panoptes_annotations import LOGGED_OUT_PREFIX, TaskMap, VoteTally, load_task_map

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "classification_id", "user_name", "workflow_id", "workflow_version", "created_at",
    "annotations", "subject_ids",
)


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
        tally = VoteTally(task_map)
        for row, items in zip(kept_rows, annotations):
            if not isinstance(items, list):
                raise ConversionError(
                    f"{path}: annotations of classification {export['classification_id'].iloc[row]} "
                    f"(line {row + 2}) is {type(items).__name__}; expected a JSON list of {{task, value}}"
                )
            for annotation in items:
                tally.add(galaxy[row], annotation)
        tally.raise_unknown(path)
        if tally.empty:
            report.note(f"{tally.empty} annotations had no answer (skipped questions); they add no votes")

        galaxy_ids, galaxy_index = np.unique(galaxy[kept_rows], return_inverse=True)
        counts = tally.counts(galaxy_ids)
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
