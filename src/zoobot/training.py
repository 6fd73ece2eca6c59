"""Training: a LightningModule and DataModule over shards, augmentations, checkpoints.

    settings = TrainSettings(architecture="zoobot-2019", epochs=5)
    result = train_model(shard_dir, schema, train_ids, train_counts, eval_ids, eval_counts,
                         settings, save_dir, warm_start=previous.best_checkpoint)
    model = load_model(result.best_checkpoint)   # needs nothing but the checkpoint

The caller gives the vote counts (galaxy, answer) of the training and evaluation galaxies, so
the active-learning loop trains on the votes in its ledger, not the ones in the shard manifest.
Images come from the shards as uint8 and stay uint8 through the augmentations; the model
normalises them itself.

Loss: the mean over galaxies of ``zoobot.losses.vote_nll`` summed over questions, with one
dropout mask per galaxy (the head's dropout is always on). The evaluation loss averages the
same quantity over ``EVAL_SAMPLES`` dropout masks (head only, so nearly free), which makes early
stopping less noisy; its expectation equals the training loss's.

Every checkpoint holds the model config (``model.config``), the schema (name and questions) and
the :class:`TrainSettings` as Lightning hyper-parameters, so :func:`load_model` rebuilds the
model from the checkpoint alone. Checkpoints keep weights only (no optimizer state): they are a
third of the size, and warm starts need only the weights. Files are written under a temporary
name and renamed, so a killed run never leaves a checkpoint that looks complete.

Output folder (``save_dir``)::

    checkpoints/epoch=E-eval_loss=L.ckpt   top-k by evaluation loss
    logs/version_N/metrics.csv             CSVLogger (and TensorBoard files with tensorboard=True)
    train_result.json                      best checkpoint, best loss, history (written at the end)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from zoobot.ids import describe_ids
from zoobot.files import write_json_atomic
from zoobot.losses import vote_nll
from zoobot.models import GalaxyModel, create_model, model_from_config
from zoobot.predict import to_greyscale
from zoobot.schema import Question, Schema
from zoobot.shards import ShardReader

logger = logging.getLogger(__name__)

EVAL_SAMPLES = 5
CHECKPOINT_DIR = "checkpoints"
RESULT_FILE = "train_result.json"
#: RandomResizedCrop keeps this fraction of the image area, at an aspect ratio in CROP_RATIO.
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (0.9, 1.1)


@dataclass
class TrainSettings:
    """How to train. JSON-serialisable: ``TrainSettings(**dataclasses.asdict(settings))``."""

    architecture: str = "efficientnet_b0"
    dropout_rate: float = 0.2
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 5  # early stopping on validation loss
    precision: str = "32-true"  # "bf16-mixed" works on CPU
    accelerator: str = "auto"
    devices: str = "auto"  # passed through to Lightning ("auto", "2", "0,1")
    strategy: str = "auto"  # e.g. "ddp"
    num_nodes: int = 1
    num_workers: int = 0
    seed: int = 42
    augment: bool = True
    greyscale: bool = False  # train on 1-channel images (RGB shards are converted on the fly)
    save_top_k: int = 1
    tensorboard: bool = False
    progress_bar: bool = True
    backbone_kwargs: dict = field(default_factory=dict)  # extra create_model kwargs, plain values

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "patience": self.patience >= 0,
            "num_nodes": self.num_nodes >= 1,
            "num_workers": self.num_workers >= 0,
            "save_top_k": self.save_top_k >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainSettings.{name}: got {getattr(self, name)!r}, which is out of range")


@dataclass
class TrainResult:
    best_checkpoint: Path
    best_eval_loss: float
    epochs_trained: int
    seconds: float
    history: list[dict]  # per epoch (0-based, as in checkpoint names): epoch, train_loss, eval_loss


# ---------------------------------------------------------------- schema <-> checkpoint

def schema_to_dict(schema: Schema) -> dict:
    return {
        "name": schema.name,
        "questions": [
            {"name": q.name, "answers": list(q.answers), "asked_after": list(q.asked_after)}
            for q in schema.questions
        ],
    }


def schema_from_dict(record: dict) -> Schema:
    questions = tuple(
        Question(q["name"], tuple(q["answers"]), tuple(q["asked_after"])) for q in record["questions"]
    )
    return Schema(record["name"], questions)


# ---------------------------------------------------------------- augmentation

class GalaxyAugmentation:
    """A random view of each galaxy, on a uint8 batch (batch, channels, H, W) -> same shape.

    Every galaxy gets its own flips (left-right, up-down), rotation by any angle about the
    centre, and random resized crop back to ``size`` (keeping ``CROP_SCALE`` of the area at an
    aspect ratio in ``CROP_RATIO``); corners uncovered by the rotation are black, like the sky.

    ``batched=True`` (default) composes rotation and crop into one affine map per galaxy and
    resamples the whole batch in a single ``grid_sample`` call (bilinear, one interpolation).
    ``batched=False`` applies torchvision.transforms.v2 ``RandomRotation`` and
    ``RandomResizedCrop`` one galaxy at a time (v2 draws one set of parameters per call, so it
    cannot do per-galaxy views in one batched call). Both give the same distribution of views;
    the batched path was about 7x faster on CPU (docs/training.md). Flips are batched in both.
    """

    def __init__(self, size: int, rotate: bool = True, crop: bool = True, batched: bool = True):
        self.size, self.rotate, self.crop, self.batched = size, rotate, crop, batched
        steps = []
        if rotate:
            steps.append(v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR))
        if crop:
            steps.append(v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True))
        self.per_galaxy = v2.Compose(steps) if steps else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"augmentation: expected uint8 (batch, channels, H, W), got {images.dtype} {tuple(images.shape)}")
        batch = len(images)
        flip_h = torch.rand(batch) < 0.5  # (batch,)
        flip_v = torch.rand(batch) < 0.5
        images = torch.where(flip_h[:, None, None, None], images.flip(-1), images)
        images = torch.where(flip_v[:, None, None, None], images.flip(-2), images)
        if self.per_galaxy is None:
            return images
        if not self.batched:
            return torch.stack([self.per_galaxy(image) for image in images])
        return self._affine(images)

    def _affine(self, images: torch.Tensor) -> torch.Tensor:
        """Rotation then resized crop, one affine map per galaxy, one grid_sample for the batch."""
        batch = len(images)
        angle = (torch.rand(batch) * 2 - 1) * math.pi if self.rotate else torch.zeros(batch)  # (batch,)
        if self.crop:
            area = torch.empty(batch).uniform_(*CROP_SCALE)
            log_ratio = torch.empty(batch).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
            width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # crop side / image side
            height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
            shift_x = (torch.rand(batch) * 2 - 1) * (1 - width)  # crop centre, in [-1, 1] units
            shift_y = (torch.rand(batch) * 2 - 1) * (1 - height)
        else:
            width = height = torch.ones(batch)
            shift_x = shift_y = torch.zeros(batch)
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]  # (batch, 1, 1)
        width, height = width[:, None, None], height[:, None, None]
        shift_x, shift_y = shift_x[:, None, None], shift_y[:, None, None]
        # output pixel centres in [-1, 1] (align_corners=False convention)
        steps = (torch.arange(self.size, dtype=torch.float32) * 2 + 1) / self.size - 1
        out_x, out_y = steps[None, None, :], steps[None, :, None]  # (1, 1, W), (1, H, 1)
        # output -> crop box of the rotated image -> input coordinates, per galaxy
        crop_x = out_x * width + shift_x  # (batch, 1, W)
        crop_y = out_y * height + shift_y  # (batch, H, 1)
        grid = torch.stack([cos * crop_x - sin * crop_y, sin * crop_x + cos * crop_y], dim=-1)  # (batch, H, W, 2)
        warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped.add_(0.5).clamp_(0, 255).to(torch.uint8)  # round half up


# ---------------------------------------------------------------- data

class ShardVoteDataset(Dataset):
    """Galaxies at given shard positions, with caller-given vote counts.

    Supports batched fetching (``__getitems__``): a DataLoader reads a whole batch of images
    from the shards in one call and augments it as a batch. The ShardReader is opened lazily in
    each process (memory maps are not pickled into workers or spawned ranks).
    """

    def __init__(
        self,
        shard_dir: Path,
        positions: np.ndarray,
        counts: np.ndarray,
        augmentation: GalaxyAugmentation | None = None,
        greyscale: bool = False,
    ):
        self.shard_dir = Path(shard_dir)
        self.positions = np.asarray(positions)
        self.counts = torch.as_tensor(np.asarray(counts), dtype=torch.int64)  # (galaxy, answer)
        self.augmentation = augmentation
        self.greyscale = greyscale
        self._reader: ShardReader | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    @property
    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.shard_dir)
        return self._reader

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices)
        images = torch.as_tensor(np.ascontiguousarray(self.reader.images(self.positions[indices])))
        if self.greyscale and images.shape[1] == 3:
            images = to_greyscale(images)
        if self.augmentation is not None:
            images = self.augmentation(images)
        return images, self.counts[torch.from_numpy(indices)]  # (batch, C, H, W) uint8, (batch, answer)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, counts = self.__getitems__([index])
        return images[0], counts[0]


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset already returns a stacked batch; pass it through."""
    return batch


class ShardDataModule(L.LightningDataModule):
    """Training (augmented, shuffled) and evaluation (plain) loaders over one shard folder."""

    def __init__(
        self,
        train: ShardVoteDataset,
        eval: ShardVoteDataset,
        batch_size: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train_set = train
        self.eval_set = eval
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, dataset: ShardVoteDataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = math.ceil(len(self.train_set) / world_size)
        # A last batch of one galaxy breaks batch norm on a 1x1 feature map; drop ragged
        # batches when every rank still gets at least one full batch.
        return self._loader(self.train_set, shuffle=True, drop_last=per_rank >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set, shuffle=False, drop_last=False)


# ---------------------------------------------------------------- model

class GalaxyLightningModule(L.LightningModule):
    """Wraps a GalaxyModel; the hyper-parameters saved in checkpoints rebuild it."""

    def __init__(self, model_config: dict, schema: dict, settings: dict, model: GalaxyModel | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.schema = schema_from_dict(schema)
        self.model = model if model is not None else model_from_config(model_config, schema=self.schema)

    def forward(self, images: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        return self.model(images, n_samples=n_samples)

    def _loss(self, images: torch.Tensor, counts: torch.Tensor, n_samples: int) -> torch.Tensor:
        predictions = self.model(images, n_samples=n_samples).float()  # (galaxy, sample, output)
        batch, samples, n_outputs = predictions.shape
        repeated = counts.repeat_interleave(samples, dim=0)  # (galaxy * sample, answer)
        nll = vote_nll(predictions.reshape(batch * samples, n_outputs), repeated, self.schema)  # (galaxy * sample, question)
        return nll.sum(dim=1).mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, counts = batch
        loss = self._loss(images, counts, n_samples=1)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=len(images))
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, counts = batch
        loss = self._loss(images, counts, n_samples=EVAL_SAMPLES)
        self.log("eval_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        settings = self.hparams["settings"]
        return torch.optim.AdamW(
            self.model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
        )


# ---------------------------------------------------------------- checkpoints

class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary name in the target folder, then os.replace."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _read_checkpoint(checkpoint: Path) -> dict:
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    record = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = record.get("hyper_parameters", {})
    if "model_config" not in hparams or "schema" not in hparams:
        raise ValueError(
            f"checkpoint {checkpoint} holds no zoobot model config (hyper_parameters has "
            f"{sorted(hparams)}); expected a checkpoint written by zoobot train"
        )
    return record


def _model_state(record: dict) -> dict[str, torch.Tensor]:
    prefix = "model."
    return {k[len(prefix):]: v for k, v in record["state_dict"].items() if k.startswith(prefix)}


@dataclass
class LoadedCheckpoint:
    model: GalaxyModel
    schema: Schema
    settings: TrainSettings
    model_config: dict


def read_checkpoint(checkpoint: Path) -> LoadedCheckpoint:
    """The model (eval mode, on CPU), its schema and the settings it was trained with."""
    record = _read_checkpoint(checkpoint)
    hparams = record["hyper_parameters"]
    schema = schema_from_dict(hparams["schema"])
    model = model_from_config(hparams["model_config"], schema=schema)
    model.load_state_dict(_model_state(record))
    model.eval()
    known = TrainSettings.__dataclass_fields__
    settings = TrainSettings(**{k: v for k, v in hparams["settings"].items() if k in known})
    return LoadedCheckpoint(model, schema, settings, dict(hparams["model_config"]))


def load_model(checkpoint: Path) -> GalaxyModel:
    """Rebuild the GalaxyModel from the config stored in the checkpoint; eval mode, on CPU."""
    return read_checkpoint(checkpoint).model


def load_warm_start(model: GalaxyModel, checkpoint: Path) -> None:
    """Copy a checkpoint's weights into ``model``; the architecture and outputs must match."""
    record = _read_checkpoint(checkpoint)
    config = record["hyper_parameters"]["model_config"]
    try:
        model.load_state_dict(_model_state(record))
    except RuntimeError as error:
        raise ValueError(
            f"warm start: checkpoint {checkpoint} holds a model built as {config}, which does not "
            f"fit this run's model {model.config} ({str(error).splitlines()[0]}). Warm start from a "
            "checkpoint of the same architecture, schema and channels, or train from scratch"
        ) from None


# ---------------------------------------------------------------- run record

class RunRecord(Callback):
    """Keeps the per-epoch history; rank 0 writes train_result.json when fitting ends."""

    def __init__(self, save_dir: Path):
        self.save_dir = Path(save_dir)
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.history.append(
            {
                "epoch": trainer.current_epoch,
                "train_loss": float(metrics["train_loss"]) if "train_loss" in metrics else None,
                "eval_loss": float(metrics["eval_loss"]) if "eval_loss" in metrics else None,
            }
        )

    def result(self, trainer: L.Trainer) -> dict:
        checkpoint = trainer.checkpoint_callback
        score = checkpoint.best_model_score
        return {
            "best_checkpoint": checkpoint.best_model_path,
            "best_eval_loss": float(score) if score is not None else None,
            "epochs_trained": len(self.history),
            "history": self.history,
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            write_json_atomic(self.save_dir / RESULT_FILE, self.result(trainer))


# ---------------------------------------------------------------- entry point

def _check_votes(ids: Sequence[str], counts: np.ndarray, schema: Schema, name: str) -> np.ndarray:
    ids = [str(i) for i in ids]
    counts = np.asarray(counts)
    if len(ids) == 0:
        raise ValueError(f"{name}: no galaxies given; training needs at least one {name} galaxy")
    if counts.shape != (len(ids), schema.n_answers):
        raise ValueError(
            f"{name}_counts: expected shape ({len(ids)}, {schema.n_answers}) (one row per id, one "
            f"column per answer of schema {schema.name!r}), got {counts.shape}"
        )
    duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicated:
        raise ValueError(f"{name}_ids: ids must be unique; duplicated {describe_ids(duplicated)}")
    values = counts.astype(np.float64)
    bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1) | (values != np.round(values)).any(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}_counts: vote counts must be whole numbers >= 0 (never NaN); bad rows for ids "
            f"{describe_ids([ids[i] for i in np.flatnonzero(bad)])}"
        )
    no_votes = values.sum(axis=1) == 0
    if no_votes.all():
        raise ValueError(f"{name}: none of the {len(ids)} galaxies has a vote; nothing to learn from")
    return values.astype(np.int64)


def _positions(reader: ShardReader, ids: Sequence[str], name: str) -> np.ndarray:
    try:
        return reader.positions([str(i) for i in ids])
    except KeyError as error:
        raise ValueError(
            f"{name}_ids: {error.args[0]}. Make shards that hold every galaxy you train on "
            "(zoobot make-shards)"
        ) from None


def _loggers(save_dir: Path, tensorboard: bool) -> list:
    loggers = [CSVLogger(save_dir, name="logs")]
    if tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir, name="tensorboard"))
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"tensorboard logging needs the tensorboard package ({error}); pip install tensorboard, "
                "or train without --tensorboard (CSV logs are always written)"
            ) from None
    return loggers


def train_model(
    shard_dir: Path,
    schema: Schema,
    train_ids: Sequence[str],
    train_counts: np.ndarray,
    eval_ids: Sequence[str],
    eval_counts: np.ndarray,
    settings: TrainSettings,
    save_dir: Path,
    warm_start: Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train a GalaxyModel on the given galaxies and votes; return the best checkpoint by eval loss.

    train_counts / eval_counts: (galaxy, answer) integer vote counts in ``schema.answer_columns``
    order, one row per id. The image size comes from the shards. ``warm_start`` loads the weights
    of an earlier checkpoint (same architecture, schema, channels) before training.
    ``callbacks`` are added to Lightning's. With ``overwrite=False``, a ``save_dir`` that already
    holds checkpoints is an error (stale checkpoints would mix with this run's top-k).

    With strategy "ddp", Lightning re-runs the calling script once per extra rank; every rank
    returns a TrainResult, and rank 0 writes ``save_dir/train_result.json``.
    """
    started = time.perf_counter()
    save_dir = Path(save_dir)
    checkpoint_dir = save_dir / CHECKPOINT_DIR
    if not overwrite and checkpoint_dir.is_dir() and any(checkpoint_dir.glob("*.ckpt")):
        raise FileExistsError(
            f"{checkpoint_dir} already holds checkpoints; choose a new save folder, or pass "
            "overwrite=True (--overwrite) to replace them"
        )
    if overwrite and checkpoint_dir.is_dir():
        for old in checkpoint_dir.glob("*.ckpt"):
            old.unlink()
    train_counts = _check_votes(train_ids, train_counts, schema, "train")
    eval_counts = _check_votes(eval_ids, eval_counts, schema, "eval")
    reader = ShardReader(shard_dir)
    train_positions = _positions(reader, train_ids, "train")
    eval_positions = _positions(reader, eval_ids, "eval")

    L.seed_everything(settings.seed, workers=True, verbose=False)
    channels = 1 if settings.greyscale else reader.channels
    model = create_model(
        settings.architecture,
        schema=schema,
        channels=channels,
        dropout_rate=settings.dropout_rate,
        image_size=reader.size,
        **settings.backbone_kwargs,
    )
    if warm_start is not None:
        load_warm_start(model, Path(warm_start))
        logger.info("warm start from %s", warm_start)
    module = GalaxyLightningModule(model.config, schema_to_dict(schema), asdict(settings), model=model)

    augmentation = GalaxyAugmentation(reader.size) if settings.augment else None
    data = ShardDataModule(
        ShardVoteDataset(shard_dir, train_positions, train_counts, augmentation, settings.greyscale),
        ShardVoteDataset(shard_dir, eval_positions, eval_counts, None, settings.greyscale),
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
    )
    record = RunRecord(save_dir)
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="epoch={epoch}-eval_loss={eval_loss:.4f}",
        auto_insert_metric_name=False,
        monitor="eval_loss",
        mode="min",
        save_top_k=settings.save_top_k,
        save_weights_only=True,
    )
    stopping = EarlyStopping(monitor="eval_loss", mode="min", patience=settings.patience)
    n_batches = max(1, len(train_ids) // settings.batch_size)
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        precision=settings.precision,
        callbacks=[record, stopping, checkpointing, *callbacks],
        logger=_loggers(save_dir, settings.tensorboard),
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=min(50, n_batches),
        default_root_dir=save_dir,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, datamodule=data)

    if record.history:  # this process ran the fit (single process, or any rank of "ddp")
        result = record.result(trainer)
    else:  # "ddp_spawn": the ranks ran in child processes; rank 0 wrote the record
        result = json.loads((save_dir / RESULT_FILE).read_text())
    if not result["best_checkpoint"]:
        raise RuntimeError(
            f"training in {save_dir} ended without a checkpoint (did validation run? eval set of "
            f"{len(eval_ids)} galaxies)"
        )
    return TrainResult(
        best_checkpoint=Path(result["best_checkpoint"]),
        best_eval_loss=result["best_eval_loss"],
        epochs_trained=result["epochs_trained"],
        seconds=time.perf_counter() - started,
        history=result["history"],
    )
