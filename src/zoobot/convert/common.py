"""What every converter shares: the report, input checks, image lookup and the final assembly.

A converter reads one public table (or a Panoptes export), checks it, and returns a
:class:`ConversionResult`: a master catalog (``id_str``, ``file_loc``, one int64 vote column per
schema answer, then extras), the schema it follows, and a :class:`ConversionReport` that says how
many input rows were read, kept and dropped, and why. Nothing is dropped without a reason in the
report, and anything that looks like a mistake raises :class:`ConversionError` instead.
"""

from __future__ import annotations

import logging
import os
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.catalog import CatalogError, validate_catalog, vote_counts, write_catalog
from zoobot.ids import describe_ids
from zoobot.schema import Schema

logger = logging.getLogger(__name__)

N_EXAMPLES = 5
MISSING_IMAGE_POLICIES = ("error", "drop")


class ConversionError(CatalogError):
    """The input table cannot be converted as it is; the message says what, where and the fix."""


@dataclass
class DroppedRows:
    """Input rows left out for one reason."""

    reason: str
    count: int
    examples: list[str]


@dataclass
class ConversionReport:
    """What a conversion read, kept and dropped.

    ``n_read`` counts input rows (galaxies for tables, classifications for Panoptes exports);
    ``n_kept = n_read - n_dropped``; ``n_galaxies`` counts rows in the output catalog.
    """

    source: str
    input_path: str
    unit: str = "rows"
    n_read: int = 0
    n_galaxies: int = 0
    dropped: list[DroppedRows] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def drop(self, reason: str, ids, count: int | None = None) -> None:
        """Record that rows were left out; ``ids`` are examples when ``count`` is given."""
        ids = [str(i) for i in ids]
        count = len(ids) if count is None else count
        if count:
            self.dropped.append(DroppedRows(reason, count, ids[:N_EXAMPLES]))
            logger.debug("%s: dropped %d %s: %s", self.source, count, self.unit, reason)

    def note(self, message: str) -> None:
        self.notes.append(message)
        logger.debug("%s: %s", self.source, message)

    @property
    def n_dropped(self) -> int:
        return sum(d.count for d in self.dropped)

    @property
    def n_kept(self) -> int:
        return self.n_read - self.n_dropped

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "input_path": self.input_path,
            "unit": self.unit,
            "n_read": self.n_read,
            "n_kept": self.n_kept,
            "n_dropped": self.n_dropped,
            "n_galaxies": self.n_galaxies,
            "dropped": [vars(d) for d in self.dropped],
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ConversionResult:
    catalog: pd.DataFrame
    schema: Schema
    report: ConversionReport


def write_conversion(result: ConversionResult, out: str | Path) -> Path:
    """Write the master catalog atomically as Parquet, with its schema in the file metadata."""
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ConversionError(f"--out {out}: expected a .parquet path, got {out.suffix or 'no suffix'!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_catalog(result.catalog, out, result.schema)
    return out


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def read_csv(path: str | Path, what: str, str_columns=()) -> pd.DataFrame:
    """Read a CSV table, keeping ``str_columns`` (ids) as text so long integers survive."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{what} {path} does not exist or is not a file")
    try:
        return pd.read_csv(path, dtype={c: str for c in str_columns}, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ConversionError(f"{what} {path} is not a readable CSV table: {error}") from error


def require_columns(table: pd.DataFrame, columns, path, hint: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        found = list(table.columns)
        raise ConversionError(
            f"{path}: expected columns {describe_ids(missing)} that are missing; found "
            f"{describe_ids(found, n_shown=12)}. {hint}"
        )


def with_debiased(
    extras: pd.DataFrame, table: pd.DataFrame, answer_columns: list[str], path, hint: str
) -> pd.DataFrame:
    """``extras`` plus the table's ``{answer}_debiased`` columns as numbers, or a ConversionError."""
    columns = [f"{c}_debiased" for c in answer_columns]
    require_columns(table, columns, path, hint)
    return pd.concat([extras, table[columns].apply(pd.to_numeric, errors="coerce")], axis=1)


def check_ids(ids: pd.Series, path, column: str) -> pd.Series:
    """Ids as stripped strings; raise on empty or repeated ids."""
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise ConversionError(
            f"{path}: id column {column!r} is empty in rows {describe_ids(np.flatnonzero(empty.to_numpy()))} "
            "(0-based data rows). Every galaxy needs an id."
        )
    ids = ids.astype(str).str.strip()
    repeated = ids[ids.duplicated(keep=False)].unique()
    if len(repeated):
        raise ConversionError(
            f"{path}: id column {column!r} must be unique; repeated ids {describe_ids(repeated)}. "
            "Remove the duplicate rows (or choose another id column) before converting."
        )
    return ids


def counts_as_int(table: pd.DataFrame, columns: list[str], ids: pd.Series, path) -> pd.DataFrame:
    """Vote-count columns as int64; raise naming the column and ids for NaN, fractions or negatives."""
    fix = (
        "Count columns must hold whole numbers of votes >= 0; check that this is the right table "
        "and that it was not edited."
    )
    out = {
        column: vote_counts(table[column], ids, f"{path}: vote-count column {column!r}", fix, ConversionError)
        for column in columns
    }
    return pd.DataFrame(out, index=table.index)


def format_names(table: pd.DataFrame, pattern: str, path) -> pd.Series:
    """Apply a ``str.format`` pattern such as ``{asset_id}.jpg`` to every row of ``table``."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise ConversionError(f"image pattern {pattern!r} is not a valid format string: {error}") from error
    if not fields:
        raise ConversionError(
            f"image pattern {pattern!r} names no column; expected e.g. '{{id_str}}.jpg'"
        )
    missing = [f for f in fields if f not in table.columns]
    if missing:
        raise ConversionError(
            f"image pattern {pattern!r} uses columns {missing} that {path} does not have; "
            f"available: {describe_ids(list(table.columns), n_shown=12)}"
        )
    columns = {f: table[f].astype(str).tolist() for f in dict.fromkeys(fields)}
    names = [pattern.format(**dict(zip(columns, values))) for values in zip(*columns.values())]
    return pd.Series(names, index=table.index, dtype=object)


def resolve_images(
    ids: pd.Series,
    names: pd.Series,
    images_dir: str | Path,
    missing_images: str,
    report: ConversionReport,
    how: str,
    keep: np.ndarray | None = None,
) -> tuple[pd.Series, np.ndarray]:
    """Absolute image paths under ``images_dir`` and a mask of the galaxies whose image exists.

    ``names`` are file names relative to ``images_dir`` (None: no name at all, so missing).
    ``how`` says in words how names were made, for the messages. Rows where ``keep`` is False
    were already dropped (and reported) and are not looked up. Missing images raise, or with
    ``missing_images="drop"`` are dropped and reported.
    """
    if missing_images not in MISSING_IMAGE_POLICIES:
        raise ValueError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, got {missing_images!r}")
    images_dir = Path(images_dir).resolve()
    if not images_dir.is_dir():
        raise ConversionError(f"--images {images_dir} is not a folder")
    keep = np.ones(len(ids), bool) if keep is None else np.asarray(keep, bool)
    paths = [
        str(images_dir / str(name)) if wanted and name is not None and not pd.isna(name) else None
        for name, wanted in zip(names, keep)
    ]
    exists = np.fromiter((p is not None and os.path.isfile(p) for p in paths), bool, len(paths))
    file_loc = pd.Series(paths, index=ids.index, dtype=object)
    missing = keep & ~exists
    report.note(f"images: {how} under {images_dir}")
    if missing.any():
        examples = "; ".join(
            f"{i}: {p if p is not None else '(no file name)'}"
            for i, p in list(zip(ids[missing], file_loc[missing]))[:N_EXAMPLES]
        )
        if missing_images == "error":
            raise ConversionError(
                f"{missing.sum()} of {keep.sum()} galaxies have no image ({how} under {images_dir}), "
                f"e.g. {examples}. Check --images and how images are named; or pass "
                "--drop-missing-images to leave those galaxies out (the report lists them), "
                "or --no-images for a votes-only catalog."
            )
        report.drop(f"image not found ({how})", ids[missing])
    return file_loc, exists


def finish(
    ids: pd.Series,
    file_loc: pd.Series | None,
    counts: pd.DataFrame,
    extras: pd.DataFrame | None,
    schema: Schema,
    report: ConversionReport,
    keep: np.ndarray | None = None,
) -> ConversionResult:
    """Assemble ``id_str, file_loc, votes..., extras...``, validate it, and fill in the report."""
    n = len(ids)
    keep = np.ones(n, bool) if keep is None else keep
    if not keep.any():
        reasons = "; ".join(f"{d.count} {d.reason}" for d in report.dropped) or "the input is empty"
        raise ConversionError(
            f"{report.input_path}: no galaxies left to write ({reasons}). Nothing was written."
        )
    catalog = pd.DataFrame({
        "id_str": pd.Series(ids.to_numpy(dtype=object), dtype="str"),
        # a votes-only catalog keeps a file_loc column of nulls, typed as text
        "file_loc": pd.Series(file_loc.to_numpy(dtype=object) if file_loc is not None else [None] * n, dtype="str"),
    })
    catalog = pd.concat([catalog, counts[schema.answer_columns].reset_index(drop=True)], axis=1)
    if extras is not None and len(extras.columns):
        reserved = {"id_str", "file_loc", *schema.answer_columns}
        clashing = {c: f"source_{c}" for c in extras.columns if c in reserved}
        if clashing:
            report.note(f"source columns {sorted(clashing)} clash with catalog columns; kept as {sorted(clashing.values())}")
        extras = extras.rename(columns=clashing).reset_index(drop=True)
        catalog = pd.concat([catalog, extras], axis=1)
    catalog = catalog[keep].reset_index(drop=True)
    catalog = validate_catalog(
        catalog, schema, check_files=file_loc is not None, name=f"converted {report.source} catalog"
    )
    report.n_galaxies = len(catalog)
    return ConversionResult(catalog, schema, report)
