"""Monte Carlo dropout predictions, streamed: (galaxy, sample, output), and a Parquet catalog writer.

The default path runs the backbone **once** per galaxy and draws ``n_samples`` dropout masks on
the pooled features (``model.forward_head(features, n_samples)``): the head is the only place
with dropout, so this gives the same distribution as ``n_samples`` full forward passes at a
fraction of the cost (see docs/training.md for measured numbers).

Test-time augmentation (``tta_views=V``, V >= 2) runs the backbone on V dihedral views of each
image (identity, rotations by 90/180/270 degrees, then their mirror images) and splits the
samples across them (15 samples over 4 views: 4, 4, 4, 3), so the samples also carry the
model's sensitivity to orientation. Cost: V backbone passes per galaxy.

Memory is bounded whatever the pool size: images are read and predicted one batch at a time,
and :func:`write_predictions` writes Parquet row groups and the optional raw samples
(``np.lib.format.open_memmap``) chunk by chunk. Outputs are written under temporary names and
renamed when complete.

Input handling (documented, never silent about values): images are uint8 and are normalised
inside the model. A 1-channel model given RGB images converts them to greyscale (ITU-R 601
luma, as Pillow's ``convert("L")``, the same conversion training used). Images whose size
differs from the model's ``image_size`` are resized (antialiased) and a message is logged once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchvision.transforms.v2 import functional as TF

from zoobot.catalog import SCHEMA_METADATA_KEY
from zoobot.images import load_image
from zoobot.models import GalaxyModel
from zoobot.schema import Schema
from zoobot.shards import ShardReader

logger = logging.getLogger(__name__)

MAX_TTA_VIEWS = 8
INTERVAL = (5.0, 95.0)  # percentiles of the per-sample expected fraction
ROWS_PER_GROUP = 16384  # Parquet row group size
PRECISIONS = {"32": "32", "32-true": "32", "fp32": "32", "bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16"}

ImageBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), images (B, C, H, W) uint8)
PredictionBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), predictions (B, S, O))


def to_greyscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 (batch, 3, H, W) -> (batch, 1, H, W) by ITU-R 601 luma."""
    return TF.rgb_to_grayscale(images, num_output_channels=1)


def dihedral_view(images: torch.Tensor, view: int) -> torch.Tensor:
    """View 0-3: rotation by view * 90 degrees; 4-7: the same after a left-right flip."""
    if not 0 <= view < MAX_TTA_VIEWS:
        raise ValueError(f"view: expected 0..{MAX_TTA_VIEWS - 1}, got {view}")
    flipped = images.flip(-1) if view >= 4 else images
    return torch.rot90(flipped, k=view % 4, dims=(-2, -1))


def samples_per_view(n_samples: int, n_views: int) -> list[int]:
    """Split n_samples over n_views as evenly as possible, earlier views first."""
    base, extra = divmod(n_samples, n_views)
    return [base + (view < extra) for view in range(n_views)]


def check_predict_options(n_samples: int, batch_size: int, precision: str, tta_views: int) -> str:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {sorted(PRECISIONS)}, got {precision!r}")
    if not 0 <= tta_views <= MAX_TTA_VIEWS:
        raise ValueError(f"tta_views: expected 0 (off) to {MAX_TTA_VIEWS}, got {tta_views}")
    if tta_views > n_samples:
        raise ValueError(
            f"tta_views={tta_views} needs at least one sample per view; got n_samples={n_samples}. "
            "Raise --n-samples or lower --tta-views"
        )
    return PRECISIONS[precision]


class _InputAdapter:
    """Moves a uint8 batch to the model's device and layout; greyscale and resize as documented."""

    def __init__(self, model: GalaxyModel, channels_last: bool):
        self.model = model
        self.device = next(model.parameters()).device
        self.channels_last = channels_last
        self.warned_resize = False

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images: expected uint8 (batch, channels, H, W), got {images.dtype} {tuple(images.shape)}")
        images = images.to(self.device, non_blocking=True)
        if self.model.channels == 1 and images.shape[1] == 3:
            images = to_greyscale(images)
        elif images.shape[1] != self.model.channels:
            raise ValueError(
                f"the model takes {self.model.channels}-channel images, got {images.shape[1]} channels; "
                "make shards with --channels matching the model (an RGB model cannot use greyscale shards)"
            )
        size = self.model.image_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            if not self.warned_resize:
                logger.info(
                    "resizing %dx%d images to the model's %d px", images.shape[-2], images.shape[-1], size
                )
                self.warned_resize = True
            images = TF.resize(images, [size, size], antialias=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def _mc_predict(model: GalaxyModel, images: torch.Tensor, n_samples: int, precision: str, tta_views: int) -> torch.Tensor:
    """uint8 images on the model's device -> (batch, n_samples, n_outputs) float32 on CPU."""
    device_type = images.device.type
    with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if tta_views <= 1:
            features = model.forward_features(images)  # (batch, feature)
            predictions = model.forward_head(features, n_samples)  # (batch, sample, output)
        else:
            parts = [
                model.forward_head(model.forward_features(dihedral_view(images, view)), samples)
                for view, samples in enumerate(samples_per_view(n_samples, tta_views))
            ]  # each (batch, samples of this view, output)
            predictions = torch.cat(parts, dim=1)  # (batch, sample, output)
    return predictions.float().cpu()


@contextlib.contextmanager
def _eval_mode(model: GalaxyModel):
    """eval() (freezes batch norm; the head's dropout stays on), restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict_image_batches(
    model: GalaxyModel,
    batches: ImageBatches,
    n_samples: int = 15,
    precision: str = "32",
    tta_views: int = 0,
    *,
    channels_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """MC predictions for a stream of (ids, uint8 images): yields (ids (B,), (B, S, O) float32).

    Grad mode and the model's train/eval flag are only changed while a batch is computed, so the
    caller's code between batches runs as usual. ``channels_last`` converts the model's memory
    layout in place (values are unchanged). Off by default: it gave no gain for efficientnet_b0
    at 128 px on the 2-core development CPU (docs/training.md); try it on other hardware.
    """
    precision = check_predict_options(n_samples, 1, precision, tta_views)
    adapter = _InputAdapter(model, channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for ids, images in batches:
        with _eval_mode(model):
            predictions = _mc_predict(model, adapter(images), n_samples, precision, tta_views)
        yield np.asarray(ids), predictions.numpy()


def _positions_for(reader: ShardReader, ids: Sequence[str] | None, split: str | None) -> np.ndarray:
    if (ids is None) == (split is None):
        raise ValueError("give exactly one of ids (a list of id_str) or split ('train', 'eval' or 'pool')")
    if split is not None:
        return reader.split_positions(split)
    if isinstance(ids, str):
        raise TypeError(f"ids: expected a list of id_str, got the single string {ids!r}; use [{ids!r}]")
    return reader.positions(ids)


def predict_batches(
    model: GalaxyModel,
    reader: ShardReader,
    ids: Sequence[str] | None = None,
    split: str | None = None,
    n_samples: int = 15,
    batch_size: int = 256,
    precision: str = "32",
    tta_views: int = 0,
    *,
    channels_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream MC predictions over shard galaxies, in the order given (ids) or written (split).

    Yields (ids (B,), predictions (B, n_samples, n_outputs) float32): rho for a binomial model,
    Dirichlet concentrations for a tree. precision "32" or "bf16" (autocast; the head's output
    stays float32). tta_views 0 or 1: no test-time augmentation.
    """
    check_predict_options(n_samples, batch_size, precision, tta_views)
    positions = _positions_for(reader, ids, split)
    images = reader.iter_batches(positions, batch_size)
    yield from predict_image_batches(model, images, n_samples, precision, tta_views, channels_last=channels_last)


# ---------------------------------------------------------------- catalogs without shards

def iter_catalog_batches(
    catalog: pd.DataFrame, size: int, channels: int, batch_size: int = 256, num_workers: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode ``catalog``'s images (``id_str``, ``file_loc``) batch by batch: (ids, (B, C, size, size) uint8).

    ``num_workers > 0`` decodes in DataLoader worker processes. An unreadable image raises
    zoobot.images.ImageError naming the file.
    """
    ids = catalog["id_str"].astype(str).to_numpy()
    paths = catalog["file_loc"].astype(str).to_numpy()
    if num_workers == 0:
        for start in range(0, len(ids), batch_size):
            chunk = slice(start, start + batch_size)
            yield ids[chunk], np.stack([load_image(p, size, channels) for p in paths[chunk]])
        return
    loader = torch.utils.data.DataLoader(
        _CatalogImages(paths, size, channels),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=np.stack,
    )
    for start, images in zip(range(0, len(ids), batch_size), loader):
        yield ids[start : start + batch_size], images


class _CatalogImages(torch.utils.data.Dataset):
    def __init__(self, paths: np.ndarray, size: int, channels: int):
        self.paths, self.size, self.channels = paths, size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_image(self.paths[index], self.size, self.channels)


# ---------------------------------------------------------------- catalog output

def prediction_columns(schema: Schema) -> list[str]:
    """Columns of the prediction catalog after ``id_str``, in order."""
    columns = []
    for answer in schema.answer_columns:
        columns += [f"{answer}_fraction", f"{answer}_fraction_q05", f"{answer}_fraction_q95"]
    columns += [f"{question}_prob_asked" for question in schema.question_names]
    return columns


def summarise_predictions(
    ids: np.ndarray, predictions: np.ndarray, schema: Schema, likelihood: str | None = None
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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_predictions(
    batches: PredictionBatches,
    out_path: Path,
    schema: Schema,
    n_galaxies: int | None = None,
    save_samples: bool = False,
    *,
    likelihood: str | None = None,
    samples_path: Path | None = None,
    metadata: dict[str, str] | None = None,
    on_batch=None,
) -> PredictionSummary:
    """Stream prediction batches into a Parquet catalog (and, optionally, the raw samples as .npy).

    The samples file has shape (galaxy, sample, output), float32, rows in catalog order; it needs
    ``n_galaxies`` up front. Both files appear only when complete (temporary name, then rename;
    the samples first, the catalog last). ``on_batch(ids, predictions)`` sees every batch.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    samples_path = Path(samples_path) if samples_path else default_samples_path(out_path)
    if save_samples and n_galaxies is None:
        raise ValueError("save_samples needs n_galaxies, the length of the samples array")
    tmp_catalog, tmp_samples = _tmp_name(out_path), _tmp_name(samples_path)
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
            pending.append(summarise_predictions(ids, predictions, schema, likelihood))
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
        writer.close()
        writer = None
        if save_samples:
            if n_written != n_galaxies:
                raise ValueError(f"expected {n_galaxies} galaxies, got predictions for {n_written}")
            if samples is None:
                samples = np.lib.format.open_memmap(tmp_samples, mode="w+", dtype=np.float32, shape=(0, 0, 0))
            samples.flush()
            del samples
            samples = None
            os.replace(tmp_samples, samples_path)
        os.replace(tmp_catalog, out_path)
    finally:
        if writer is not None:
            writer.close()
        tmp_catalog.unlink(missing_ok=True)
        tmp_samples.unlink(missing_ok=True)
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
        likelihood=model.likelihood,
        samples_path=samples_path,
        metadata={**record, **(metadata or {})},
        on_batch=on_batch,
    )
