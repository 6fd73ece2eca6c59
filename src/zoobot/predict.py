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
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from zoobot.allocator import tune_glibc_malloc
from zoobot.metrics import evaluate_predictions
from zoobot.models import GalaxyModel
from zoobot.precision import AUTO, INFERENCE_PRECISIONS
from zoobot.schema import Schema
from zoobot.shards import ShardReader
from zoobot.transforms import N_DIHEDRAL_VIEWS, dihedral_view, to_greyscale

logger = logging.getLogger(__name__)

MAX_TTA_VIEWS = N_DIHEDRAL_VIEWS
AUTO_COMPILE_MIN_GALAXIES = 100_000  # compile=None (auto) compiles from this many galaxies

ImageBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), images (B, C, H, W) uint8)
PredictionBatches = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids (B,), predictions (B, S, O))


def samples_per_view(n_samples: int, n_views: int) -> list[int]:
    """Split n_samples over n_views as evenly as possible, earlier views first."""
    base, extra = divmod(n_samples, n_views)
    return [base + (view < extra) for view in range(n_views)]


def check_predict_options(n_samples: int, batch_size: int, precision: str, tta_views: int) -> str:
    """Check the options; returns the short precision ("32", "bf16" or "auto", see :func:`resolve_precision`)."""
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


def bf16_supported(device: torch.device | str) -> bool:
    """True on a GPU with bf16 and on a CPU with bf16 units (AVX512-BF16 or AMX, as oneDNN reports)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A precision name -> "32" or "bf16". "auto" is bf16 where :func:`bf16_supported`, else fp32."""
    short = INFERENCE_PRECISIONS.get(precision)
    if short is None:
        raise ValueError(f"precision: expected one of {list(INFERENCE_PRECISIONS)}, got {precision!r}")
    if short == AUTO:
        return "bf16" if bf16_supported(device) else "32"
    return short


def compile_pays(device: torch.device | str, image_size: int, n_galaxies: int) -> bool:
    """Whether ``compile=None`` (auto) compiles: from ``AUTO_COMPILE_MIN_GALAXIES`` galaxies, on any device.

    Measured on the 2-core development CPU (docs/scale.md, ``benchmarks/scoring.py``, one
    thread): efficientnet_b0 at 64 px in bf16 scored at 782 galaxies/s compiled (inductor,
    freezing) against 540 eager, 0.57 ms saved per galaxy. A compile took 9-10 s with inductor's
    on-disk cache warm, 26-30 s cold, up to 200 s cold on a loaded machine; so it pays from
    17,000 to 350,000 galaxies, and auto waits for 100,000. ``device`` and ``image_size`` are for
    rules measured elsewhere (a GPU gains more).
    """
    return n_galaxies >= AUTO_COMPILE_MIN_GALAXIES


class BatchScorer:
    """MC predictions of one uint8 batch at a time: images (B, C, H, W) -> (B, n_samples, n_outputs).

    Moves each batch to the model's device and layout (greyscale and resize as documented in
    the module docstring), runs the backbone once per view under the precision's autocast, and
    draws the samples in the head (eager always, so the dropout masks follow ``torch``'s seed
    whatever ``compile`` is). ``compile=True`` compiles the backbone pass with inductor
    (freezing: the weights become constants) for batches of ``batch_size``; a shorter last batch
    is padded to that size so that nothing recompiles. ``compile_seconds`` holds the time of the
    first (compiling) call. Grad mode and the train/eval flag change only while a batch runs.
    """

    def __init__(
        self,
        model: GalaxyModel,
        n_samples: int = 15,
        precision: str = "32",
        tta_views: int = 0,
        *,
        channels_last: bool = False,
        compile: bool = False,
        batch_size: int | None = None,
    ):
        check_predict_options(n_samples, batch_size or 1, precision, tta_views)
        if compile and batch_size is None:
            raise ValueError("compile=True needs batch_size, the size every compiled batch is padded to")
        self.model = model
        self.device = next(model.parameters()).device
        self.n_samples = n_samples
        self.precision = resolve_precision(precision, self.device)
        self.tta_views = tta_views
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.compile_seconds: float | None = None
        self.warned_resize = False
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self._features = _features_function(model, self.precision)
        if compile:
            self._features = _compiled_features(model, self.precision, channels_last)
        self.compiled = compile
        tune_glibc_malloc()

    def adapt(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the model's device, channels and size (and layout)."""
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
                logger.info("resizing %dx%d images to the model's %d px", images.shape[-2], images.shape[-1], size)
                self.warned_resize = True
            images = TF.resize(images, [size, size], antialias=True)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Adapted uint8 images (B, ...) -> features (B, n_features), compiled when asked."""
        n = len(images)
        if self.compiled and n < self.batch_size:
            padded = images.new_zeros((self.batch_size, *images.shape[1:]))
            padded[:n] = images
            images = padded
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.contiguous(memory_format=memory_format)
        if self.compiled and self.compile_seconds is None:
            started = time.perf_counter()
            features = self._features(images)
            self.compile_seconds = time.perf_counter() - started
        else:
            features = self._features(images)
        return features[:n]

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 images (B, C, H, W) -> (B, n_samples, n_outputs) float32 numpy."""
        images = self.adapt(images)
        with _eval_mode(self.model), torch.inference_mode():
            if self.tta_views <= 1:
                predictions = self.model.forward_head(self.features(images).float(), self.n_samples)  # (batch, sample, output)
            else:
                parts = [
                    self.model.forward_head(self.features(dihedral_view(images, view)).float(), samples)
                    for view, samples in enumerate(samples_per_view(self.n_samples, self.tta_views))
                ]  # each (batch, samples of this view, output)
                predictions = torch.cat(parts, dim=1)  # (batch, sample, output)
        return predictions.float().cpu().numpy()


def _features_function(model: GalaxyModel, precision: str):
    """images -> features (batch, feature) under the precision's autocast."""

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.forward_features(images)  # (batch, feature)

    return features


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(precision, layout): function}


def _compiled_features(model: GalaxyModel, precision: str, channels_last: bool):
    """The compiled backbone pass, one per (model, precision, layout), so that every scorer of a
    model (an iteration's evaluation, scoring, acquired set) shares one compilation."""
    per_model = _COMPILED.setdefault(model, {})
    key = (precision, channels_last)
    if key not in per_model:
        per_model[key] = torch.compile(_features_function(model, precision), dynamic=False, options={"freezing": True})
    return per_model[key]


@contextlib.contextmanager
def _eval_mode(model: GalaxyModel):
    """eval() (freezes batch norm; the head's dropout stays on), restored afterwards.

    Only a model in training mode is switched (walking every module each batch costs 2% of a
    64 px efficientnet_b0 batch)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def predict_image_batches(
    model: GalaxyModel,
    batches: ImageBatches,
    n_samples: int = 15,
    precision: str = "32",
    tta_views: int = 0,
    *,
    channels_last: bool = False,
    compile: bool = False,
    batch_size: int | None = None,
    scorer: BatchScorer | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """MC predictions for a stream of (ids, uint8 images): yields (ids (B,), (B, S, O) float32).

    Options as :class:`BatchScorer` (or pass one as ``scorer``, to read its ``compile_seconds``
    afterwards). ``channels_last`` converts the model's memory layout in place (values are
    unchanged). Off by default: it gave no gain for efficientnet_b0 at 128 px on the 2-core
    development CPU (docs/training.md); try it on other hardware.
    """
    if scorer is None:
        scorer = BatchScorer(
            model, n_samples, precision, tta_views, channels_last=channels_last, compile=compile, batch_size=batch_size
        )
    for ids, images in batches:
        yield np.asarray(ids), scorer(images)


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
    compile: bool | None = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream MC predictions over shard galaxies, in the order given (ids) or written (split).

    Yields (ids (B,), predictions (B, n_samples, n_outputs) float32): rho for a binomial model,
    Dirichlet concentrations for a tree. precision "32", "bf16" (autocast; the head's output
    stays float32) or "auto" (:func:`resolve_precision`). tta_views 0 or 1: no test-time
    augmentation. ``compile``: True, False, or None for :func:`compile_pays`. Images are read
    into one reused buffer (no allocation per batch).
    """
    check_predict_options(n_samples, batch_size, precision, tta_views)
    positions = _positions_for(reader, ids, split)
    if compile is None:
        compile = compile_pays(next(model.parameters()).device, reader.size, len(positions))
    images = reader.iter_batches(positions, batch_size, reuse_buffer=True)
    yield from predict_image_batches(
        model, images, n_samples, precision, tta_views, channels_last=channels_last, compile=compile, batch_size=batch_size
    )


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
