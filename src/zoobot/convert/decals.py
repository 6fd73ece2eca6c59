"""Galaxy Zoo DECaLS volunteer tables (Walmsley et al. 2022) -> a DECaLS master catalog.

The public tables ``gz_decals_volunteers_{1_and_2,5}.csv`` hold, per question,
``{question}_total-votes`` and, per answer, ``{question}_{answer}`` (raw votes),
``{question}_{answer}_fraction`` and ``{question}_{answer}_debiased``. Vote columns already use
zoobot's naming, so they copy across. The two tables follow two decision trees:

- ``gz_decals_volunteers_5.csv``: the DECaLS DR5 tree, zoobot's ``decals-dr5`` schema;
- ``gz_decals_volunteers_1_and_2.csv``: the older DR1/2 tree (bar yes/no, how-rounded
  completely/in-between/cigar-shaped, bulge-size dominant/obvious/none, merging
  merger/tidal-debris/both/neither, no "can't tell" arm count), :data:`zoobot.schema.DECALS_DR12`.

The tree is recognised from the columns. Images are found by ``iauname`` anywhere under
``--images``: the release unpacks to ``gz_decals_dr5_png_partN/J###/{iauname}.png``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.ids import describe_ids
from zoobot.convert.common import (
    ConversionError,
    ConversionReport,
    ConversionResult,
    with_debiased,
    Timer,
    check_ids,
    counts_as_int,
    finish,
    read_csv,
    require_columns,
    resolve_images,
)
from zoobot.schema import DECALS_DR5, DECALS_DR12, Schema

logger = logging.getLogger(__name__)

ID_COLUMN = "iauname"
TOTAL_SUFFIX = "_total-votes"
DERIVED_SUFFIXES = ("_fraction", "_debiased")

DECALS_SCHEMAS: dict[str, Schema] = {s.name: s for s in (DECALS_DR5, DECALS_DR12)}


def detect_schema(columns, path) -> Schema:
    """The DECaLS tree whose vote columns are all in the table."""
    columns = set(columns)
    missing = {name: [c for c in s.answer_columns if c not in columns] for name, s in DECALS_SCHEMAS.items()}
    complete = [name for name, cols in missing.items() if not cols]
    if len(complete) == 1:
        return DECALS_SCHEMAS[complete[0]]
    if not complete:
        details = "; ".join(f"{name} lacks {describe_ids(cols)}" for name, cols in missing.items())
        raise ConversionError(
            f"{path}: the vote columns match no GZ DECaLS tree ({details}). Expected a "
            "gz_decals_volunteers_*.csv table with '{question}_{answer}' count columns."
        )
    raise ConversionError(
        f"{path}: the columns fit several trees {complete}; choose one with --schema."
    )


def _check_tree(table: pd.DataFrame, schema: Schema, path) -> None:
    """Raise on questions or answers that the schema lacks, listed with their vote totals."""
    questions = {q.name for q in schema.questions}
    other_questions = sorted(
        c[: -len(TOTAL_SUFFIX)] for c in table.columns
        if c.endswith(TOTAL_SUFFIX) and c[: -len(TOTAL_SUFFIX)] not in questions
    )
    unknown = []
    for question in schema.questions:
        known = {*question.columns(), f"{question.name}{TOTAL_SUFFIX}"}
        unknown += [
            c for c in table.columns
            if c.startswith(f"{question.name}_") and c not in known and not c.endswith(DERIVED_SUFFIXES)
        ]
    if other_questions:
        totals = ", ".join(f"{q} ({_vote_total(table, q + TOTAL_SUFFIX)} votes)" for q in other_questions)
        raise ConversionError(
            f"{path}: questions that schema {schema.name!r} does not have: {totals}. "
            f"Choose the schema of this table with --schema ({sorted(DECALS_SCHEMAS)})."
        )
    if unknown:
        totals = ", ".join(f"{c} ({_vote_total(table, c)} votes)" for c in unknown)
        raise ConversionError(
            f"{path}: answers that schema {schema.name!r} does not have: {totals}. "
            f"Choose the schema of this table with --schema ({sorted(DECALS_SCHEMAS)})."
        )


def _vote_total(table: pd.DataFrame, column: str) -> int:
    return int(pd.to_numeric(table[column], errors="coerce").fillna(0).sum())


def _compare_totals(table, counts, schema, ids, report) -> None:
    """Note galaxies whose ``{question}_total-votes`` differs from the sum of the answer counts.

    The public DR5 table has such rows (e.g. merging_total-votes above the sum of its four
    answers); the answer columns are the votes, so they are used as they are, and the report says so.
    """
    for question in schema.questions:
        column = f"{question.name}{TOTAL_SUFFIX}"
        if column not in table.columns:
            continue
        total = pd.to_numeric(table[column], errors="coerce").to_numpy()
        summed = counts[question.columns()].sum(axis=1).to_numpy()
        wrong = total != summed
        if wrong.any():
            gap = np.nan_to_num(total - summed)[wrong]
            report.note(
                f"{column} differs from the sum of the {question.name} answer counts for galaxies "
                f"{describe_ids(ids[wrong])} (total minus sum from {gap.min():g} to "
                f"{gap.max():g}); the answer counts are used as they are"
            )


def index_images(images_dir: str | Path, wanted: set[str], suffix: str) -> dict[str, str]:
    """{stem: path relative to images_dir} for the wanted stems found anywhere below images_dir."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ConversionError(f"--images {images_dir} is not a folder")
    found: dict[str, list[str]] = {}
    for folder, _, files in os.walk(images_dir):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext == suffix and stem in wanted:
                found.setdefault(stem, []).append(os.path.relpath(os.path.join(folder, name), images_dir))
    repeated = {stem: paths for stem, paths in found.items() if len(paths) > 1}
    if repeated:
        examples = "; ".join(f"{stem}: {paths}" for stem, paths in list(repeated.items())[:5])
        raise ConversionError(
            f"--images {images_dir}: {len(repeated)} galaxies have several image files, e.g. {examples}. "
            "Point --images at one copy of the release."
        )
    return {stem: paths[0] for stem, paths in found.items()}


def convert_decals(
    table_path: str | Path,
    images_dir: str | Path | None = None,
    schema: str | Schema | None = None,
    debiased: bool = False,
    image_suffix: str = ".png",
    missing_images: str = "error",
) -> ConversionResult:
    """Convert a GZ DECaLS volunteer table into a master catalog.

    schema: "decals-dr5", "decals-dr12" (a Schema, or None to recognise it from the columns).
    images_dir: folder searched recursively for ``{iauname}{image_suffix}``; None writes a
        votes-only catalog.
    debiased: also keep the ``{question}_{answer}_debiased`` fractions.
    """
    report = ConversionReport("decals", str(table_path))
    with Timer() as timer:
        table = read_csv(table_path, "GZ DECaLS table", str_columns=(ID_COLUMN,))
        report.n_read = len(table)
        require_columns(table, [ID_COLUMN], table_path, "GZ DECaLS tables name galaxies by 'iauname'.")
        ids = check_ids(table[ID_COLUMN], table_path, ID_COLUMN)
        if schema is None:
            schema = detect_schema(table.columns, table_path)
        elif isinstance(schema, str):
            if schema not in DECALS_SCHEMAS:
                raise ConversionError(f"--schema {schema!r}: expected one of {sorted(DECALS_SCHEMAS)}")
            schema = DECALS_SCHEMAS[schema]
        require_columns(
            table, schema.answer_columns, table_path,
            f"Schema {schema.name!r} needs every '{{question}}_{{answer}}' count column; "
            f"is this the right table for it? ({sorted(DECALS_SCHEMAS)})",
        )
        _check_tree(table, schema, table_path)
        counts = counts_as_int(table, schema.answer_columns, ids, table_path)
        _compare_totals(table, counts, schema, ids, report)
        report.note(f"decision tree: {schema.name}")

        prefixes = tuple(f"{q}_" for q in schema.question_names)
        extras = table[[c for c in table.columns if not c.startswith(prefixes) and c != ID_COLUMN]]
        if debiased:
            extras = with_debiased(
                extras, table, schema.answer_columns, table_path,
                "--debiased needs the {question}_{answer}_debiased columns; drop --debiased.",
            )

        file_loc, keep = None, None
        if images_dir is None:
            report.note("no images: file_loc is empty (votes-only catalog)")
        else:
            located = index_images(images_dir, set(ids), image_suffix)
            names = pd.Series([located.get(i) for i in ids], index=ids.index, dtype=object)
            file_loc, keep = resolve_images(
                ids, names, images_dir, missing_images, report,
                f"{{iauname}}{image_suffix} searched in all sub-folders",
            )
        result = finish(ids, file_loc, counts, extras, schema, report, keep)
    report.seconds = timer.seconds
    return result
