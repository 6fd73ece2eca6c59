"""Prediction catalogs: MC predictions streamed into Parquet, with optional raw samples.

    summary = predict_to_parquet(model, reader, "pool", "pool.parquet", n_samples=15, save_samples=True)
    summary = write_predictions(prediction_batches, "out.parquet", schema, n_galaxies=n,
                                question_votes=votes, default_votes=40)
    catalog, samples, schema = read_predictions("pool.parquet")

Columns (``prediction_columns``): ``id_str``; per answer ``{answer}_fraction`` (mean over
samples of the expected vote fraction), ``_fraction_ci05`` / ``_fraction_ci95`` (the 90%
credible interval of the expected fraction: percentiles across samples) and ``_fraction_pi05``
/ ``_fraction_pi95`` (the 90% posterior predictive interval of the observed vote fraction when
N volunteers answer the question, ``uncertainty.predictive_intervals``); per question
``{question}_prob_asked`` and ``{question}_pi_votes`` (the N of that interval: the galaxy's own
votes on the question when known and >= 1, else ``default_votes``). Memory is bounded whatever
the pool size: Parquet row groups of ``ROWS_PER_GROUP`` galaxies and the optional samples file
(``np.lib.format.open_memmap``) are written chunk by chunk, and both files appear only when
complete.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zoobot.catalog import SCHEMA_METADATA_KEY
from zoobot.files import atomic_path
from zoobot.models import GalaxyModel
from zoobot.predict import BatchScorer, PredictionBatches, check_predict_options, compile_pays, predict_image_batches
from zoobot.schema import Schema, get_schema, schema_from_dict, schema_to_dict
from zoobot.shards import ShardReader
from zoobot.uncertainty import (
    DEFAULT_VOTES,
    INTERVAL_DEFINITION,
    credible_interval,
    predictive_intervals,
    question_votes,
)

INTERVAL_LEVEL = 0.9  # both intervals: 5th to 95th percentile
ROWS_PER_GROUP = 16384  # Parquet row group size
SCHEMA_DEFINITION_KEY = b"zoobot.schema_definition"  # the schema as JSON, custom schemas too


def prediction_columns(schema: Schema) -> list[str]:
    """Columns of the prediction catalog after ``id_str``, in order."""
    columns = []
    for answer in schema.answer_columns:
        columns += [f"{answer}_fraction"]
        columns += [f"{answer}_fraction_{kind}{p}" for kind in ("ci", "pi") for p in ("05", "95")]
    columns += [f"{question}_prob_asked" for question in schema.question_names]
    columns += [f"{question}_pi_votes" for question in schema.question_names]
    return columns


def interval_votes(question_votes: np.ndarray | None, n_galaxies: int, schema: Schema, default_votes: int) -> np.ndarray:
    """(galaxy, question) N of the predictive intervals: the galaxy's own votes on a question where
    known and >= 1 (``question_votes``, or None), else ``default_votes``."""
    if int(default_votes) != default_votes or default_votes < 1:
        raise ValueError(f"default_votes: expected a whole number of volunteers >= 1, got {default_votes!r}")
    if question_votes is None:
        return np.full((n_galaxies, schema.n_questions), int(default_votes), dtype=np.int64)
    question_votes = np.asarray(question_votes, dtype=np.int64)
    if question_votes.shape != (n_galaxies, schema.n_questions):
        raise ValueError(
            f"question_votes: expected shape ({n_galaxies}, {schema.n_questions}) (galaxy, question of "
            f"schema {schema.name!r}), got {question_votes.shape}"
        )
    return np.where(question_votes >= 1, question_votes, int(default_votes))


def summarise_predictions(
    ids: np.ndarray,
    predictions: np.ndarray,
    schema: Schema,
    question_votes: np.ndarray | None = None,
    default_votes: int = DEFAULT_VOTES,
) -> pd.DataFrame:
    """(galaxy, sample, output) -> one row per galaxy (columns: ``prediction_columns``).

    Per answer: the mean expected vote fraction, its 90% credible interval (5th/95th
    percentiles of the sampled expected fractions) and the 90% posterior predictive interval of
    the observed fraction at N votes (``interval_votes``: own votes where known, else
    ``default_votes``); per question: P(asked) of the mean fractions and that N.
    """
    fractions = schema.expected_fractions(predictions)  # (galaxy, sample, answer)
    mean = fractions.mean(axis=1)  # (galaxy, answer)
    ci_low, ci_high = credible_interval(predictions, schema, INTERVAL_LEVEL)  # each (galaxy, answer)
    votes = interval_votes(question_votes, len(predictions), schema, default_votes)  # (galaxy, question)
    pi_low, pi_high = predictive_intervals(predictions, schema, votes, (INTERVAL_LEVEL,))  # each (1, galaxy, answer)
    answer_votes = votes[:, schema.question_index_of_answer]  # (galaxy, answer)
    asked = schema.prob_asked(mean)  # (galaxy, question)
    data = {"id_str": np.asarray(ids).astype(str)}
    for a, answer in enumerate(schema.answer_columns):
        data[f"{answer}_fraction"] = mean[:, a].astype(np.float32)
        data[f"{answer}_fraction_ci05"] = ci_low[:, a].astype(np.float32)
        data[f"{answer}_fraction_ci95"] = ci_high[:, a].astype(np.float32)
        data[f"{answer}_fraction_pi05"] = (pi_low[0, :, a] / answer_votes[:, a]).astype(np.float32)
        data[f"{answer}_fraction_pi95"] = (pi_high[0, :, a] / answer_votes[:, a]).astype(np.float32)
    for q, question in enumerate(schema.question_names):
        data[f"{question}_prob_asked"] = asked[:, q].astype(np.float32)
    for q, question in enumerate(schema.question_names):
        data[f"{question}_pi_votes"] = votes[:, q].astype(np.int32)
    return pd.DataFrame(data)


@dataclass
class PredictionSummary:
    catalog: Path
    samples: Path | None
    n_galaxies: int
    n_samples: int
    seconds: float
    compile_seconds: float | None = None  # the first, compiling batch (None: not compiled)
    precision: str | None = None  # what ran: "32" or "bf16"

    @property
    def galaxies_per_second(self) -> float:
        return self.n_galaxies / self.seconds if self.seconds > 0 else float("nan")


def default_samples_path(out_path: Path) -> Path:
    """out.parquet -> out_samples.npy"""
    return out_path.with_name(f"{out_path.stem}_samples.npy")


def write_predictions(
    batches: PredictionBatches,
    out_path: Path,
    schema: Schema,
    n_galaxies: int | None = None,
    save_samples: bool = False,
    *,
    question_votes: np.ndarray | None = None,
    default_votes: int = DEFAULT_VOTES,
    samples_path: Path | None = None,
    metadata: dict[str, str] | None = None,
    on_batch=None,
) -> PredictionSummary:
    """Stream prediction batches into a Parquet catalog (and, optionally, the raw samples as .npy).

    The samples file has shape (galaxy, sample, output), float32, rows in catalog order; it needs
    ``n_galaxies`` up front. ``question_votes`` (galaxy, question), rows in the order the batches
    arrive, are the galaxies' own votes per question for the predictive intervals (None: unknown;
    ``default_votes`` where unknown or 0). Both files appear only when complete
    (``files.atomic_path``: a temporary name, then a rename; the samples first, the catalog
    last). ``on_batch(ids, predictions)`` sees every batch.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path = Path(samples_path) if samples_path else default_samples_path(out_path)
    if save_samples and n_galaxies is None:
        raise ValueError("save_samples needs n_galaxies, the length of the samples array")
    if question_votes is not None:
        n_galaxies = len(question_votes) if n_galaxies is None else n_galaxies
        question_votes = interval_votes(question_votes, n_galaxies, schema, default_votes)
    else:
        interval_votes(None, 0, schema, default_votes)  # checks default_votes before any work
    pi_votes = (
        f"the galaxy's own votes on the question, {default_votes} where it has none"
        if question_votes is not None else f"{default_votes} for every question"
    )
    record = {
        "interval_level": INTERVAL_LEVEL,
        "default_votes": default_votes,
        "pi_votes": pi_votes,
        "ci": "credible interval of the expected fraction: percentiles of the sampled expected fractions",
        "pi": f"posterior predictive interval of the observed fraction k/N, N = {pi_votes}; {INTERVAL_DEFINITION}",
    }
    file_metadata = {
        SCHEMA_METADATA_KEY: schema.name.encode(),
        SCHEMA_DEFINITION_KEY: json.dumps(schema_to_dict(schema)).encode(),
    }
    file_metadata.update({f"zoobot.{k}".encode(): str(v).encode() for k, v in {**record, **(metadata or {})}.items()})
    writer: pq.ParquetWriter | None = None
    samples: np.memmap | None = None
    pending: list[pd.DataFrame] = []
    n_pending = n_written = 0
    n_samples = 0

    def flush() -> None:
        nonlocal writer, pending, n_pending
        if not pending:
            return
        table = pa.Table.from_pandas(pd.concat(pending, ignore_index=True), preserve_index=False)
        if writer is None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **file_metadata})
            writer = pq.ParquetWriter(tmp_catalog, table.schema)
        writer.write_table(table.cast(writer.schema))
        pending, n_pending = [], 0

    # renamed in reverse order on success: the samples first, the catalog last
    with contextlib.ExitStack() as renames:
        tmp_catalog = renames.enter_context(atomic_path(out_path))
        tmp_samples = renames.enter_context(atomic_path(samples_path)) if save_samples else None
        try:
            for ids, predictions in batches:
                if on_batch is not None:
                    on_batch(ids, predictions)
                n_samples = predictions.shape[1]
                if save_samples:
                    if samples is None:
                        samples = np.lib.format.open_memmap(
                            tmp_samples, mode="w+", dtype=np.float32, shape=(n_galaxies, *predictions.shape[1:])
                        )
                    if n_written + len(ids) > n_galaxies:
                        raise ValueError(f"more than n_galaxies={n_galaxies} predictions arrived")
                    samples[n_written : n_written + len(ids)] = predictions
                if question_votes is not None and n_written + len(ids) > len(question_votes):
                    raise ValueError(f"more predictions than the {len(question_votes)} rows of question_votes arrived")
                votes = None if question_votes is None else question_votes[n_written : n_written + len(ids)]
                pending.append(summarise_predictions(ids, predictions, schema, votes, default_votes))
                n_pending += len(ids)
                n_written += len(ids)
                if n_pending >= ROWS_PER_GROUP:
                    flush()
            flush()
            if writer is None:  # no galaxies: still write a valid, empty catalog
                empty = summarise_predictions(np.array([], dtype=str), np.ones((0, 1, schema.n_answers)), schema)
                table = pa.Table.from_pandas(empty, preserve_index=False)
                writer = pq.ParquetWriter(tmp_catalog, table.schema.with_metadata(file_metadata))
            if question_votes is not None and n_written != len(question_votes):
                raise ValueError(f"expected {len(question_votes)} galaxies (rows of question_votes), got predictions for {n_written}")
            if save_samples:
                if n_written != n_galaxies:
                    raise ValueError(f"expected {n_galaxies} galaxies, got predictions for {n_written}")
                if samples is None:
                    samples = np.lib.format.open_memmap(tmp_samples, mode="w+", dtype=np.float32, shape=(0, 0, 0))
                samples.flush()
        finally:
            if writer is not None:
                writer.close()
            del samples
    return PredictionSummary(
        out_path, samples_path if save_samples else None, n_written, n_samples, time.perf_counter() - started
    )


def predict_to_parquet(
    model: GalaxyModel,
    reader: ShardReader,
    ids_or_split: Sequence[str] | str,
    out_path: Path,
    n_samples: int = 15,
    save_samples: bool = False,
    schema: Schema | None = None,
    batch_size: int = 256,
    precision: str = "32",
    tta_views: int = 0,
    *,
    compile: bool | None = False,
    own_votes: bool = False,
    default_votes: int = DEFAULT_VOTES,
    samples_path: Path | None = None,
    metadata: dict[str, str] | None = None,
    on_batch=None,
) -> PredictionSummary:
    """Predict shard galaxies (a split name or a list of ids) straight into a Parquet catalog.

    Columns: ``prediction_columns`` (module docstring). ``own_votes``: the predictive intervals
    use each galaxy's votes per question from the manifest (ValueError if it has no vote columns
    for the schema), ``default_votes`` where a galaxy has none on a question; else
    ``default_votes`` everywhere. ``save_samples`` also writes the raw (galaxy, sample, output)
    array to ``samples_path`` (default ``<out stem>_samples.npy``). ``compile``: True, False or
    None (``predict.compile_pays``); the summary holds the compile time and the precision run.
    """
    schema = schema or model.schema
    if isinstance(ids_or_split, str):
        positions = reader.split_positions(ids_or_split)
    else:
        positions = reader.positions(ids_or_split)
    check_predict_options(n_samples, batch_size, precision, tta_views)
    votes = None
    if own_votes:
        missing = [c for c in schema.answer_columns if c not in reader.manifest.columns]
        if missing:
            raise ValueError(
                f"{reader.shard_dir}: own_votes needs the manifest's vote columns, but it has none of "
                f"{missing[:5]} (schema {schema.name!r}); predict with own_votes=False"
            )
        counts = reader.manifest[schema.answer_columns].to_numpy(dtype=np.int64)[positions]  # (galaxy, answer)
        votes = question_votes(counts, schema)  # (galaxy, question)
    if compile is None:
        compile = compile_pays(next(model.parameters()).device, reader.size, len(positions))
    scorer = BatchScorer(model, n_samples, precision, tta_views, compile=compile, batch_size=batch_size)
    batches = predict_image_batches(
        model, reader.iter_batches(positions, batch_size, reuse_buffer=True), scorer=scorer
    )
    record = {"n_samples": n_samples, "tta_views": tta_views, "precision": scorer.precision, "likelihood": model.likelihood}
    summary = write_predictions(
        batches,
        out_path,
        schema,
        n_galaxies=len(positions),
        save_samples=save_samples,
        question_votes=votes,
        default_votes=default_votes,
        samples_path=samples_path,
        metadata={**record, **(metadata or {})},
        on_batch=on_batch,
    )
    summary.compile_seconds, summary.precision = scorer.compile_seconds, scorer.precision
    return summary


@dataclass
class PredictionCatalog:
    """A prediction catalog read back: its table, the raw samples (memory-mapped) and schema."""

    catalog: pd.DataFrame
    samples: np.ndarray  # (galaxy, sample, output), rows in catalog order
    schema: Schema
    metadata: dict[str, str]


def read_predictions(path: str | Path, samples_path: str | Path | None = None) -> PredictionCatalog:
    """Read a prediction catalog and its raw samples (``<stem>_samples.npy``, memory-mapped).

    ValueError, saying what was expected and found, for: a missing file, a table that is not a
    zoobot prediction catalog (no ``id_str`` or no schema in its metadata), a missing samples
    file (predict with --save-samples), samples whose shape does not fit the catalog or the
    schema, and samples whose mean fractions disagree with the catalog's.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prediction catalog {path} does not exist; expected a `zoobot predict --out` Parquet file")
    try:
        metadata = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
        catalog = pd.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"prediction catalog {path}: expected a Parquet file written by zoobot predict ({error})") from None
    if "id_str" not in catalog.columns or SCHEMA_METADATA_KEY.decode() not in metadata:
        raise ValueError(
            f"prediction catalog {path}: expected an id_str column and the schema in the file metadata "
            "(a `zoobot predict` output), got neither or one of them"
        )
    if SCHEMA_DEFINITION_KEY.decode() in metadata:
        schema = schema_from_dict(json.loads(metadata[SCHEMA_DEFINITION_KEY.decode()]))
    else:
        schema = get_schema(metadata[SCHEMA_METADATA_KEY.decode()])
    samples_path = Path(samples_path) if samples_path else default_samples_path(path)
    if not samples_path.is_file():
        raise ValueError(
            f"prediction catalog {path}: its raw samples {samples_path} are missing; "
            "predict again with --save-samples (intervals and coverage need the samples)"
        )
    samples = np.load(samples_path, mmap_mode="r")
    if samples.ndim != 3 or len(samples) != len(catalog):
        raise ValueError(
            f"samples {samples_path}: expected shape ({len(catalog)}, sample, output) for the "
            f"{len(catalog)} galaxies of {path}, got {samples.shape}"
        )
    schema.likelihood_of(samples.shape[-1])  # raises when the outputs do not fit the schema
    first = np.asarray(samples[:256])
    fraction_columns = [f"{answer}_fraction" for answer in schema.answer_columns]
    if len(first) and all(c in catalog.columns for c in fraction_columns):
        expected = schema.expected_fractions(first).mean(axis=1)  # (galaxy, answer)
        recorded = catalog[fraction_columns].to_numpy()[: len(first)]
        if not np.allclose(expected, recorded, atol=1e-4):
            raise ValueError(
                f"samples {samples_path} do not belong to {path}: their mean fractions differ from the "
                "catalog's (first rows); keep each catalog with the samples file written beside it"
            )
    return PredictionCatalog(catalog, samples, schema, metadata)
