"""Catalogs: load and validate once at the boundary, define experiments, split off simulations.

A catalog is a table with a unique ``id_str``, an image path ``file_loc`` and one integer vote
column ``{question}_{answer}`` per answer of its schema. Catalogs written by zoobot are Parquet
files that carry their schema spec in the file metadata, so later steps need no ``--schema``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zoobot.files import atomic_path
from zoobot.ids import N_IDS_SHOWN, describe_ids
from zoobot.schema import Schema, get_schema

logger = logging.getLogger(__name__)

SCHEMA_METADATA_KEY = b"zoobot.schema"
CSV_SUFFIXES = (".csv", ".gz", ".txt")
EXPECTED_TABLE = "a CSV or Parquet table with id_str, file_loc and vote columns"


class CatalogError(ValueError):
    """A catalog broke a contract; the message names the column, the ids and the fix."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet table, keeping ``id_str`` as a string.

    Raises CatalogError with the path, what was expected and what was found for a missing
    file, an unknown suffix, content that is not CSV text or not Parquet, and a table that
    names a column twice (pandas would silently rename the copy of a CSV column ``name.1``).
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist")
    if not path.is_file():
        raise CatalogError(f"catalog {path}: expected {EXPECTED_TABLE}, got a folder")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    found = f"a {suffix!r} file" if suffix else "a name without a suffix"
    raise CatalogError(
        f"catalog {path}: expected {EXPECTED_TABLE}, named .csv (.csv.gz, .txt) or .parquet; got {found}"
    )


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        _refuse_repeated_columns(path, pq.read_schema(path).names)
        return pd.read_parquet(path)
    except pa.ArrowInvalid as error:
        raise CatalogError(
            f"catalog {path}: expected {EXPECTED_TABLE}; got a file that is not readable Parquet ({error})"
        ) from None


def _read_csv(path: Path) -> pd.DataFrame:
    """Read the header on its own first: pandas renames a repeated column and cannot be told not to."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
        _refuse_repeated_columns(path, header.iloc[0].tolist() if len(header) else [])
        return pd.read_csv(path, dtype={"id_str": str}, low_memory=False)
    except UnicodeDecodeError as error:
        raise CatalogError(
            f"catalog {path}: expected {EXPECTED_TABLE}; got a file that is not UTF-8 text "
            f"(byte 0x{error.object[error.start]:02x}: {error.reason}). Save the table as UTF-8 CSV "
            "or as Parquet."
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CatalogError(
            f"catalog {path}: expected {EXPECTED_TABLE}; got a file that is not complete gzip ({error})"
        ) from None
    except pd.errors.EmptyDataError:
        raise CatalogError(f"catalog {path}: expected {EXPECTED_TABLE}; got an empty file") from None
    except pd.errors.ParserError as error:
        raise CatalogError(
            f"catalog {path}: expected {EXPECTED_TABLE}; got a file that is not a valid CSV table ({error})"
        ) from None


def _refuse_repeated_columns(path: Path, names: list[str]) -> None:
    counts = pd.Series([n for n in names if n != ""], dtype=object).value_counts()
    repeated = counts.index[counts > 1].tolist()
    if repeated:
        raise CatalogError(
            f"catalog {path}: columns {describe_ids(repeated)} appear more than once, so which copy "
            "holds the values is ambiguous. Keep one column of each name: delete or rename the copies."
        )


def schema_spec_of(path: str | Path) -> str | None:
    """The schema spec stored in a zoobot Parquet catalog, or None."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, FileNotFoundError, IsADirectoryError) as error:
        raise CatalogError(f"catalog {path}: expected a Parquet file; cannot read it ({error})") from None
    value = metadata.get(SCHEMA_METADATA_KEY)
    return value.decode() if value else None


def validate_catalog(
    catalog: pd.DataFrame,
    schema: Schema,
    check_files: bool = True,
    name: str = "catalog",
) -> pd.DataFrame:
    """Check the catalog contract and return a copy with clean dtypes.

    Raises CatalogError naming the column, the offending ids and the fix for: a missing or
    non-unique ``id_str``, a missing ``file_loc`` column or file, missing vote columns, and
    vote counts that are NaN, fractional or negative.
    """
    if "id_str" not in catalog.columns:
        raise CatalogError(
            f"{name}: no 'id_str' column; found {list(catalog.columns)[:10]}... "
            "Add a unique string id per galaxy, or convert the table with `zoobot convert`."
        )
    catalog = catalog.copy()
    missing_id = catalog["id_str"].isna()
    if missing_id.any():
        raise CatalogError(
            f"{name}: column 'id_str' is empty in rows {describe_ids(np.flatnonzero(missing_id))}. "
            "Give every galaxy an id."
        )
    catalog["id_str"] = catalog["id_str"].astype(str)
    duplicated = catalog["id_str"][catalog["id_str"].duplicated(keep=False)].unique()
    if len(duplicated):
        raise CatalogError(
            f"{name}: column 'id_str' must be unique; duplicated ids {describe_ids(duplicated)}. "
            "Drop or merge the duplicate rows."
        )
    if "file_loc" not in catalog.columns:
        raise CatalogError(f"{name}: no 'file_loc' column (the image path of each galaxy).")
    if check_files:
        if catalog["file_loc"].isna().all():
            raise CatalogError(
                f"{name}: column 'file_loc' is empty: the catalog has no images (made with "
                "`zoobot convert --no-images`?). Pass --no-images to split it by votes alone."
            )
        exists = np.fromiter((isinstance(p, str) and os.path.isfile(p) for p in catalog["file_loc"]), bool, len(catalog))
        if not exists.all():
            bad = catalog.loc[~exists, ["id_str", "file_loc"]]
            examples = "; ".join(f"{i}: {p}" for i, p in bad.head(N_IDS_SHOWN).itertuples(index=False))
            raise CatalogError(
                f"{name}: column 'file_loc' points to {len(bad)} missing files, e.g. {examples}. "
                "Fix the paths (relative paths are read from the catalog's folder) or drop those rows."
            )

    missing_columns = [c for c in schema.answer_columns if c not in catalog.columns]
    if missing_columns:
        raise CatalogError(
            f"{name}: schema {schema.name!r} expects vote columns {describe_ids(missing_columns)} "
            "that are missing. Name vote columns '{question}_{answer}', or pick the schema that "
            "matches the catalog with --schema."
        )
    for column in schema.answer_columns:
        catalog[column] = vote_counts(
            catalog[column], catalog["id_str"], f"{name}: column {column!r}",
            "Vote columns hold integer counts >= 0 (a missing vote is 0, never NaN).",
        )
    return catalog


def vote_counts(values: pd.Series, ids: pd.Series, where: str, fix: str, error: type = CatalogError) -> np.ndarray:
    """(galaxy,) int64 vote counts; NaN, fractional or negative values raise ``error`` naming the ids."""
    values = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    problems = {
        "is empty or not a number": ~np.isfinite(values),
        "is not a whole number of votes": np.isfinite(values) & (values != np.round(values)),
        "is negative": values < 0,
    }
    for problem, mask in problems.items():
        if mask.any():
            raise error(f"{where} {problem} for ids {describe_ids(np.asarray(ids)[mask])}. {fix}")
    return values.astype(np.int64)


def load_catalog(
    path: str | Path, schema: Schema | str | None = None, check_files: bool = True
) -> tuple[pd.DataFrame, Schema]:
    """Load, resolve relative ``file_loc`` against the catalog's folder, and validate.

    The schema comes from the argument, else from the catalog's own metadata.
    """
    path = Path(path)
    catalog = read_table(path)
    if schema is None:
        spec = schema_spec_of(path)
        if spec is None:
            raise CatalogError(f"{path} records no schema; pass one (e.g. --schema gz2)")
        schema = spec
    if isinstance(schema, str):
        schema = get_schema(schema)
    if "file_loc" in catalog.columns:
        folder = path.resolve().parent
        catalog["file_loc"] = [
            None if pd.isna(p) else str(p) if os.path.isabs(str(p)) else str(folder / str(p))
            for p in catalog["file_loc"]
        ]
    return validate_catalog(catalog, schema, check_files=check_files, name=str(path)), schema


def write_catalog(catalog: pd.DataFrame, path: str | Path, schema: Schema) -> None:
    """Write Parquet atomically, recording the schema spec in the file metadata."""
    path = Path(path)
    table = pa.Table.from_pandas(catalog, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[SCHEMA_METADATA_KEY] = schema.name.encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def total_votes(catalog: pd.DataFrame, schema: Schema) -> np.ndarray:
    """(galaxy,) votes on the most-answered question: the number of volunteers who saw it."""
    counts = catalog[schema.answer_columns].to_numpy()
    per_question = np.stack([counts[:, a:b].sum(axis=1) for a, b in schema.answer_groups], axis=1)
    return per_question.max(axis=1)


@dataclass
class Experiment:
    """The catalogs an experiment starts from."""

    labelled: pd.DataFrame
    unlabelled: pd.DataFrame
    oracle: pd.DataFrame | None = None  # hidden votes of a simulation: id_str + vote columns
    simulation_labelled: pd.DataFrame | None = None
    simulation_unlabelled: pd.DataFrame | None = None


def define_experiment(
    catalog: pd.DataFrame,
    schema: Schema,
    retirement: int = 1,
    seed: int = 42,
    simulation_size: int | None = None,
) -> Experiment:
    """Shuffle, split at the retirement threshold, and optionally hide votes for a simulation.

    A galaxy is labelled when ``total_votes >= retirement``. In a simulation,
    ``simulation_size`` labelled galaxies lose their votes and form the simulation's pool; the
    oracle keeps the hidden votes. The simulation's pool holds only those galaxies, because only
    they can be answered.
    """
    if retirement < 1:
        raise CatalogError(f"retirement must be at least 1 vote, got {retirement}")
    shuffled = catalog.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    is_labelled = total_votes(shuffled, schema) >= retirement
    labelled = shuffled[is_labelled].reset_index(drop=True)
    unlabelled = shuffled[~is_labelled].reset_index(drop=True)
    experiment = Experiment(labelled, unlabelled)
    if simulation_size is None:
        return experiment
    if not 0 < simulation_size < len(labelled):
        raise CatalogError(
            f"--simulation-size must be between 1 and {len(labelled) - 1} (the labelled galaxies "
            f"minus at least one to start training from), got {simulation_size}"
        )
    hidden = labelled.iloc[:simulation_size]
    experiment.oracle = hidden[["id_str", *schema.answer_columns]].reset_index(drop=True)
    pool = hidden.copy()
    pool[schema.answer_columns] = 0
    experiment.simulation_unlabelled = pool.reset_index(drop=True)
    experiment.simulation_labelled = labelled.iloc[simulation_size:].reset_index(drop=True)
    return experiment


def save_experiment(
    experiment: Experiment, schema: Schema, save_dir: str | Path, settings: dict
) -> Path:
    """Write the experiment folder atomically: build it under a temporary name, then rename.

    Layout: ``labelled_catalog.parquet``, ``unlabelled_catalog.parquet``, ``experiment.json``,
    and for a simulation ``simulation_context/{labelled_catalog,unlabelled_catalog,oracle}.parquet``.
    """
    save_dir = Path(save_dir)
    if save_dir.exists() and any(save_dir.iterdir()):
        raise FileExistsError(f"{save_dir} already exists and is not empty; choose a new --save-dir")
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(save_dir) as tmp:  # renaming onto an empty save_dir replaces it
        tmp.mkdir()
        write_catalog(experiment.labelled, tmp / "labelled_catalog.parquet", schema)
        write_catalog(experiment.unlabelled, tmp / "unlabelled_catalog.parquet", schema)
        counts = {"labelled": len(experiment.labelled), "unlabelled": len(experiment.unlabelled)}
        if experiment.oracle is not None:
            context = tmp / "simulation_context"
            context.mkdir()
            write_catalog(experiment.simulation_labelled, context / "labelled_catalog.parquet", schema)
            write_catalog(experiment.simulation_unlabelled, context / "unlabelled_catalog.parquet", schema)
            write_catalog(experiment.oracle, context / "oracle.parquet", schema)
            counts["simulation_labelled"] = len(experiment.simulation_labelled)
            counts["simulation_hidden"] = len(experiment.oracle)
        record = {"schema": schema.name, "counts": counts, **settings}
        (tmp / "experiment.json").write_text(json.dumps(record, indent=2, default=str))
    return save_dir
