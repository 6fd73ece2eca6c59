"""Monte Carlo dropout predictions, streamed: (galaxy, sample, output), and evaluation of a labelled split.

The default path runs the backbone **once** per galaxy and draws ``n_samples`` dropout masks on
the pooled features (``model.forward_head(features, n_samples)``): the head is the only place
with dropout, so this gives the same distribution as ``n_samples`` full forward passes at a
fraction of the cost (see docs/training.md for measured numbers).

Test-time augmentation (``tta_views=V``, V >= 2) runs the backbone on V dihedral views of each
image (identity, rotations by 90/180/270 degrees, then their mirror images) and splits the
samples across them (15 samples over 4 views: 4, 4, 4, 3), so the samples also carry the
model's sensitivity to orientation. Cost: V backbone passes per galaxy.

Memory is bounded whatever the pool size: images are read and predicted one batch at a time.
``zoobot.prediction_writer`` streams the batches into a Parquet catalog;
:func:`evaluate_split` scores a labelled split against its manifest votes.

Input handling (documented, never silent about values): images are uint8 and are normalised
inside the model. A 1-channel model given RGB images converts them to greyscale (ITU-R 601
luma, as Pillow's ``convert("L")``, the same conversion training used). Images whose size
differs from the model's ``image_size`` are resized (antialiased) and a message is logged once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from zoobot.metrics import evaluate_predictions
from zoobot.models import GalaxyModel
from zoobot.precision import INFERENCE_PRECISIONS
from zoobot.schema import Schema
from zoobot.shards import ShardReader
from zoobot.transforms import N_DIHEDRAL_VIEWS, dihedral_view, to_greyscale

logger = logging.getLogger(__name__)

MAX_TTA_VIEWS = N_DIHEDRAL_VIEWS

ImageBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), images (B, C, H, W) uint8)
PredictionBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), predictions (B, S, O))


def samples_per_view(n_samples: int, n_views: int) -> list[int]:
    """Split n_samples over n_views as evenly as possible, earlier views first."""
    base, extra = divmod(n_samples, n_views)
    return [base + (view < extra) for view in range(n_views)]


def check_predict_options(n_samples: int, batch_size: int, precision: str, tta_views: int) -> str:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision: expected one of {list(INFERENCE_PRECISIONS)}, got {precision!r}")
    if not 0 <= tta_views <= MAX_TTA_VIEWS:
        raise ValueError(f"tta_views: expected 0 (off) to {MAX_TTA_VIEWS}, got {tta_views}")
    if tta_views > n_samples:
        raise ValueError(
            f"tta_views={tta_views} needs at least one sample per view; got n_samples={n_samples}. "
            "Raise --n-samples or lower --tta-views"
        )
    return INFERENCE_PRECISIONS[precision]


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
        raise ValueError("give exactly one of ids (a list of id_str) or split ('train', 'val', 'test' or 'pool')")
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


# ---------------------------------------------------------------- labelled splits

def manifest_votes(reader: ShardReader, schema: Schema, split: str) -> tuple[np.ndarray, np.ndarray]:
    """ids (galaxy,) and the manifest's vote counts (galaxy, answer) of one split, in split order.

    Columns follow ``schema.answer_columns``: the shards' own schema or a subset of its questions.
    ValueError when the manifest has no votes for some of the schema's answers.
    """
    missing = [c for c in schema.answer_columns if c not in reader.manifest.columns]
    if missing:
        raise ValueError(
            f"{reader.shard_dir}: the manifest has no vote columns {missing[:5]} for schema "
            f"{schema.name!r}; its shards were made for {reader.schema_spec!r}. Use a schema whose "
            "questions the shards hold (their own, or a subset of its questions)"
        )
    positions = reader.split_positions(split)
    counts = reader.manifest[schema.answer_columns].to_numpy(dtype=np.int64)[positions]
    return np.asarray(reader.ids(split)).astype(str), counts


def evaluate_split(
    model: GalaxyModel,
    reader: ShardReader,
    schema: Schema,
    split: str,
    n_samples: int = 15,
    batch_size: int = 256,
    precision: str = "32",
    tta_views: int = 0,
) -> dict:
    """Predict one labelled split of the shards and compare with the manifest's votes.

    Returns the report of ``metrics.evaluate_predictions`` (strict JSON). The vote columns are
    checked (:func:`manifest_votes`) before anything is predicted.
    """
    _, counts = manifest_votes(reader, schema, split)
    _, predictions = predict_all(
        model, reader, split=split, n_samples=n_samples, batch_size=batch_size, precision=precision, tta_views=tta_views
    )
    return evaluate_predictions(predictions, counts, schema)


def predict_all(model: GalaxyModel, reader: ShardReader, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_batches` collected: ids (galaxy,) and predictions (galaxy, sample, output).

    For sets that fit in memory (a test split, the galaxies acquired in an iteration).
    """
    ids, chunks = [], []
    for batch_ids, predictions in predict_batches(model, reader, **options):
        ids.append(np.asarray(batch_ids).astype(str))
        chunks.append(predictions)
    if not chunks:
        return np.zeros(0, dtype=str), np.zeros((0, options.get("n_samples", 15), model.n_outputs), np.float32)
    return np.concatenate(ids), np.concatenate(chunks)
