"""Prediction catalogs: MC predictions streamed into Parquet, with optional raw samples.

    summary = predict_to_parquet(model, reader, "pool", "pool.parquet", n_samples=15, save_samples=True)
    summary = write_predictions(prediction_batches, "out.parquet", schema, n_galaxies=n)

Columns: ``id_str``; per answer ``{answer}_fraction`` (mean over samples of the expected vote
fraction) with ``_fraction_q05`` / ``_fraction_q95`` (the ``INTERVAL`` percentiles across
samples); per question ``{question}_prob_asked``. Memory is bounded whatever the pool size:
Parquet row groups of ``ROWS_PER_GROUP`` galaxies and the optional samples file
(``np.lib.format.open_memmap``) are written chunk by chunk, and both files appear only when
complete.
"""

from __future__ import annotations

import contextlib
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
from zoobot.predict import PredictionBatches, check_predict_options, predict_image_batches
from zoobot.schema import Schema
from zoobot.shards import ShardReader

INTERVAL = (5.0, 95.0)  # percentiles of the per-sample expected fraction
ROWS_PER_GROUP = 16384  # Parquet row group size


def prediction_columns(schema: Schema) -> list[str]:
    """Columns of the prediction catalog after ``id_str``, in order."""
    columns = []
    for answer in schema.answer_columns:
        columns += [f"{answer}_fraction", f"{answer}_fraction_q05", f"{answer}_fraction_q95"]
    columns += [f"{question}_prob_asked" for question in schema.question_names]
    return columns


def summarise_predictions(
    ids: np.ndarray, predictions: np.ndarray, schema: Schema
) -> pd.DataFrame:
    """(galaxy, sample, output) -> one row per galaxy: id_str, per answer the mean expected vote
    fraction and its 5th/95th percentile across samples, per question P(asked) of the mean fractions."""
    fractions = schema.expected_fractions(predictions)  # (galaxy, sample, answer)
    mean = fractions.mean(axis=1)  # (galaxy, answer)
    low, high = np.percentile(fractions, INTERVAL, axis=1)  # each (galaxy, answer)
    asked = schema.prob_asked(mean)  # (galaxy, question)
    data = {"id_str": np.asarray(ids).astype(str)}
    for a, answer in enumerate(schema.answer_columns):
        data[f"{answer}_fraction"] = mean[:, a].astype(np.float32)
        data[f"{answer}_fraction_q05"] = low[:, a].astype(np.float32)
        data[f"{answer}_fraction_q95"] = high[:, a].astype(np.float32)
    for q, question in enumerate(schema.question_names):
        data[f"{question}_prob_asked"] = asked[:, q].astype(np.float32)
    return pd.DataFrame(data)


@dataclass
class PredictionSummary:
    catalog: Path
    samples: Path | None
    n_galaxies: int
    n_samples: int
    seconds: float

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
    samples_path: Path | None = None,
    metadata: dict[str, str] | None = None,
    on_batch=None,
) -> PredictionSummary:
    """Stream prediction batches into a Parquet catalog (and, optionally, the raw samples as .npy).

    The samples file has shape (galaxy, sample, output), float32, rows in catalog order; it needs
    ``n_galaxies`` up front. Both files appear only when complete (``files.atomic_path``: a
    temporary name, then a rename; the samples first, the catalog last).
    ``on_batch(ids, predictions)`` sees every batch.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path = Path(samples_path) if samples_path else default_samples_path(out_path)
    if save_samples and n_galaxies is None:
        raise ValueError("save_samples needs n_galaxies, the length of the samples array")
    file_metadata = {SCHEMA_METADATA_KEY: schema.name.encode()}
    file_metadata.update({f"zoobot.{k}".encode(): str(v).encode() for k, v in (metadata or {}).items()})
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
                pending.append(summarise_predictions(ids, predictions, schema))
                n_pending += len(ids)
                n_written += len(ids)
                if n_pending >= ROWS_PER_GROUP:
                    flush()
            flush()
            if writer is None:  # no galaxies: still write a valid, empty catalog
                empty = summarise_predictions(
                    np.array([], dtype=str), np.ones((0, 1, schema.n_answers)), schema, "dirichlet_multinomial"
                )
                table = pa.Table.from_pandas(empty, preserve_index=False)
                writer = pq.ParquetWriter(tmp_catalog, table.schema.with_metadata(file_metadata))
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
    samples_path: Path | None = None,
    metadata: dict[str, str] | None = None,
    on_batch=None,
) -> PredictionSummary:
    """Predict shard galaxies (a split name or a list of ids) straight into a Parquet catalog.

    Columns: id_str; per answer ``{answer}_fraction`` (mean over samples of the expected vote
    fraction), ``_fraction_q05`` and ``_fraction_q95`` (5th and 95th percentiles across samples);
    per question ``{question}_prob_asked`` (schema.prob_asked of the mean fractions).
    ``save_samples`` also writes the raw (galaxy, sample, output) array to ``samples_path``
    (default ``<out stem>_samples.npy``).
    """
    schema = schema or model.schema
    if isinstance(ids_or_split, str):
        positions = reader.split_positions(ids_or_split)
    else:
        positions = reader.positions(ids_or_split)
    check_predict_options(n_samples, batch_size, precision, tta_views)
    batches = predict_image_batches(
        model, reader.iter_batches(positions, batch_size), n_samples, precision, tta_views
    )
    record = {"n_samples": n_samples, "tta_views": tta_views, "precision": precision, "likelihood": model.likelihood}
    return write_predictions(
        batches,
        out_path,
        schema,
        n_galaxies=len(positions),
        save_samples=save_samples,
        samples_path=samples_path,
        metadata={**record, **(metadata or {})},
        on_batch=on_batch,
    )
