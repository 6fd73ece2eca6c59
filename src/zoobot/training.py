"""Training with Lightning: the LightningModule, the run record, atomic checkpoints, ``train_model``.

    settings = TrainSettings(architecture="zoobot-2019", epochs=5)   # zoobot.training_settings
    result = train_model(shard_dir, schema, train_ids, train_counts, val_ids, val_counts,
                         settings, save_dir, warm_start=previous.best_checkpoint)
    model = load_model(result.best_checkpoint)   # zoobot.checkpoints; needs nothing but the file

The caller gives the vote counts (galaxy, answer) of the training and validation galaxies, so
the active-learning loop trains on the votes in its ledger, not the ones in the shard manifest.
Images come from the shards as uint8 (``zoobot.shard_dataset``) and stay uint8 through the
augmentations (``zoobot.augmentation``); the model normalises them itself.

Loss: the mean over galaxies of ``zoobot.losses.vote_nll`` summed over questions, with one
dropout mask per galaxy (the head's dropout is always on). The validation loss averages the
same quantity over ``VAL_SAMPLES`` dropout masks (head only, so nearly free), which makes early
stopping less noisy; its expectation equals the training loss's.

Learning from few labels (docs/training.md): the image-blind baseline (``metrics.image_blind_nll``,
the best single prediction for every galaxy, fitted to the training votes) gives the val loss a
model reaches without looking at the images. Early stopping (:class:`BaselineAwareStopping`)
never ends a run before ``min_epochs``, and with ``wait_for_baseline`` counts its patience only
once the run has left the prior, so a run still on the prior's plateau keeps going. AdamW's
learning rate is constant unless ``lr_schedule="cosine"``, after ``warmup_epochs`` of linear
warm-up (:func:`learning_rate_factor`); ``gradient_clip`` clips the gradient norm.
The result records the baseline, whether the best checkpoint beats it, and whether its
predictions collapsed to one answer for every galaxy (``metrics.COLLAPSE_SPREAD``).

Every checkpoint holds the model config (``model.config``), the schema (name and questions) and
the :class:`TrainSettings` as Lightning hyper-parameters, so ``zoobot.checkpoints`` rebuilds the
model from the checkpoint alone. Checkpoints keep weights only (no optimizer state): they are a
third of the size, and warm starts need only the weights. Files are written under a temporary
name and renamed, so a killed run never leaves a checkpoint that looks complete.

Output folder (``save_dir``)::

    checkpoints/epoch=E-val_loss=L.ckpt    top-k by validation loss
    logs/version_N/metrics.csv             CSVLogger (and TensorBoard files with tensorboard=True)
    train_result.json                      best checkpoint, best loss, baseline, history (written at the end)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoobot.augmentation import GalaxyAugmentation
from zoobot.checkpoints import load_warm_start, read_checkpoint
from zoobot.files import atomic_path, write_json_atomic
from zoobot.finetuning import backbone_blocks, check_finetuning, frozen_modules, parameter_groups
from zoobot.ids import describe_ids
from zoobot.losses import vote_nll
from zoobot.metrics import COLLAPSE_SPREAD, image_blind_nll, prediction_spread
from zoobot.models import GalaxyModel, create_model, model_from_config
from zoobot.models.heads import SIGMOID
from zoobot.pretrained import load_pretrained
from zoobot.schema import BINOMIAL, Schema, schema_from_dict, schema_to_dict
from zoobot.shard_dataset import ShardDataModule, ShardVoteDataset
from zoobot.shards import ShardReader
from zoobot.training_settings import TrainResult, TrainSettings

logger = logging.getLogger(__name__)

VAL_SAMPLES = 5
CHECKPOINT_DIR = "checkpoints"
RESULT_FILE = "train_result.json"


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

    def _loss(self, images: torch.Tensor, counts: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean NLL, and the predictions (galaxy, sample, output) it came from."""
        predictions = self.model(images, n_samples=n_samples).float()  # (galaxy, sample, output)
        batch, samples, n_outputs = predictions.shape
        repeated = counts.repeat_interleave(samples, dim=0)  # (galaxy * sample, answer)
        nll = vote_nll(predictions.reshape(batch * samples, n_outputs), repeated, self.schema)  # (galaxy * sample, question)
        return nll.sum(dim=1).mean(), predictions

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, counts = batch
        loss, _ = self._loss(images, counts, n_samples=1)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=len(images))
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(images))
        return loss

    def on_train_epoch_start(self) -> None:
        for module in frozen_modules(self.model):
            module.eval()  # frozen blocks keep the pretrained batch-norm statistics

    def on_validation_epoch_start(self) -> None:
        self._val_fractions: list[np.ndarray] = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, counts = batch
        loss, predictions = self._loss(images, counts, n_samples=VAL_SAMPLES)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images))
        fractions = self.schema.expected_fractions(predictions.detach().cpu().numpy())  # (galaxy, sample, answer)
        self._val_fractions.append(fractions.mean(axis=1))  # (galaxy, answer)

    def on_validation_epoch_end(self) -> None:
        spread = prediction_spread(np.concatenate(self._val_fractions)) if self._val_fractions else None
        if spread is not None:  # each rank's own galaxies; the ranks' values are averaged
            self.log("val_spread", spread, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> dict:
        settings = self.hparams["settings"]
        groups = parameter_groups(
            self.model, settings["learning_rate"], settings["weight_decay"],
            settings.get("trainable_blocks"), settings.get("layer_decay", 1.0),
        )
        optimizer = torch.optim.AdamW(groups, lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs)
        schedule = learning_rate_factor(
            total_steps, round(settings["warmup_epochs"] * steps_per_epoch), settings["lr_schedule"]
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def learning_rate_factor(total_steps: int, warmup_steps: int, schedule: str):
    """step -> multiplier of the learning rate: linear warm-up over ``warmup_steps`` (at most half
    of ``total_steps``), then 1 (``"constant"``) or a cosine from 1 down to 0 at ``total_steps``
    (``"cosine"``)."""
    warmup_steps = min(max(0, int(warmup_steps)), total_steps // 2)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ---------------------------------------------------------------- checkpoints

class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary name in the target folder, then rename (``files.atomic_path``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# ---------------------------------------------------------------- stopping

class BaselineAwareStopping(Callback):
    """Early stopping on the val loss that cannot end a run still on the image-blind prior.

    Like Lightning's EarlyStopping (stop once ``patience`` validations in a row bring no lower
    val loss), except that it never stops before ``min_epochs`` epochs, and, with
    ``wait_for_baseline``, counts only once the run has left the prior (``left_prior_epoch``):
    a val loss below ``baseline_loss`` *with* predictions that differ between galaxies
    (``val_spread`` >= ``metrics.COLLAPSE_SPREAD``; a model that sits on the prior dips below
    it by noise alone). A run on the plateau of the prior goes on to its last epoch.
    """

    def __init__(self, patience: int, min_epochs: int, baseline_loss: float | None, wait_for_baseline: bool):
        self.patience = patience
        self.min_epochs = min_epochs
        self.baseline_loss = baseline_loss
        self.wait_for_baseline = wait_for_baseline and baseline_loss is not None
        self.best = math.inf
        self.wait = 0
        self.left_prior_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        loss = float(trainer.callback_metrics["val_loss"])  # the same on every rank (sync_dist)
        epoch = trainer.current_epoch
        spread = trainer.callback_metrics.get("val_spread")
        varied = spread is not None and float(spread) >= COLLAPSE_SPREAD
        if self.left_prior_epoch is None and self.baseline_loss is not None and loss < self.baseline_loss and varied:
            self.left_prior_epoch = epoch
        if loss < self.best:
            self.best, self.wait = loss, 0
        else:
            self.wait += 1
        counting = self.left_prior_epoch is not None or not self.wait_for_baseline
        stop = counting and epoch + 1 >= self.min_epochs and self.wait >= self.patience
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # collective: every rank calls it
        trainer.should_stop = trainer.should_stop or stop


# ---------------------------------------------------------------- run record

class RunRecord(Callback):
    """Keeps the per-epoch history; rank 0 writes train_result.json when fitting ends."""

    def __init__(self, save_dir: Path, baseline_loss: float | None = None, stopping: BaselineAwareStopping | None = None):
        self.save_dir = Path(save_dir)
        self.baseline_loss = baseline_loss
        self.stopping = stopping
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics

        def value(name: str) -> float | None:
            return float(metrics[name]) if name in metrics else None

        self.history.append(
            {
                "epoch": trainer.current_epoch,
                "train_loss": value("train_loss"),
                "val_loss": value("val_loss"),
                "val_spread": value("val_spread"),
                "lr": float(trainer.optimizers[0].param_groups[-1]["lr"]) if trainer.optimizers else None,  # the head's
            }
        )

    def result(self, trainer: L.Trainer) -> dict:
        checkpoint = trainer.checkpoint_callback
        score = checkpoint.best_model_score
        best_val_loss = float(score) if score is not None else None
        scored = [h for h in self.history if h["val_loss"] is not None]
        best = min(scored, key=lambda h: h["val_loss"]) if scored else None
        spread = best["val_spread"] if best else None
        return {
            "best_checkpoint": checkpoint.best_model_path,
            "best_val_loss": best_val_loss,
            "epochs_trained": len(self.history),
            "baseline_loss": self.baseline_loss,
            "beats_baseline": None if None in (best_val_loss, self.baseline_loss) else best_val_loss < self.baseline_loss,
            "collapsed": None if spread is None else spread < COLLAPSE_SPREAD,
            "left_prior_epoch": self.stopping.left_prior_epoch if self.stopping else None,
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
    shards: str | Path | ShardReader,
    schema: Schema,
    train_ids: Sequence[str],
    train_counts: np.ndarray,
    val_ids: Sequence[str],
    val_counts: np.ndarray,
    settings: TrainSettings,
    save_dir: Path,
    warm_start: Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train a GalaxyModel on the given galaxies and votes; return the best checkpoint by validation loss.

    train_counts / val_counts: (galaxy, answer) integer vote counts in ``schema.answer_columns``
    order, one row per id. ``shards``: a shard folder or an open ShardReader of it. The image
    size comes from the shards. ``warm_start`` loads the weights
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
    val_counts = _check_votes(val_ids, val_counts, schema, "val")
    reader = shards if isinstance(shards, ShardReader) else ShardReader(shards)
    train_positions = _positions(reader, train_ids, "train")
    val_positions = _positions(reader, val_ids, "val")

    baseline = image_blind_nll(train_counts, val_counts, schema)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    channels = 1 if settings.greyscale else reader.channels
    link = {}
    if warm_start is not None:
        previous_link = read_checkpoint(Path(warm_start)).model_config.get("head_link", SIGMOID)
        if previous_link != settings.backbone_kwargs.get("head_link", previous_link):
            raise ValueError(
                f"warm start: checkpoint {warm_start} has head link {previous_link!r}, but backbone_kwargs "
                f"asks for {settings.backbone_kwargs['head_link']!r}; drop it, or train from scratch"
            )
        link = {"head_link": previous_link}
        if previous_link == SIGMOID and schema.likelihood != BINOMIAL:
            logger.warning(
                "warm start from %s, saved with the first Dirichlet link (alpha = 1 + 99 sigmoid), which "
                "can die at alpha = 1; this run keeps it. Train from scratch for the softplus link", warm_start,
            )
    model = create_model(
        settings.architecture,
        schema=schema,
        channels=channels,
        dropout_rate=settings.dropout_rate,
        image_size=reader.size,
        **{**settings.backbone_kwargs, **link},
    )
    if warm_start is not None:
        load_warm_start(model, Path(warm_start))
        logger.info("warm start from %s", warm_start)
    elif settings.pretrained is not None:
        loaded = load_pretrained(model, settings.pretrained)
        logger.info("backbone from %s: %s, %d tensors", settings.pretrained, loaded["source"], loaded["loaded"])
    check_finetuning(settings.trainable_blocks, settings.layer_decay, len(backbone_blocks(model.backbone)))
    module = GalaxyLightningModule(model.config, schema_to_dict(schema), asdict(settings), model=model)

    augmentation = GalaxyAugmentation(reader.size) if settings.augment else None
    data = ShardDataModule(
        ShardVoteDataset(reader, train_positions, train_counts, augmentation, settings.greyscale),
        ShardVoteDataset(reader, val_positions, val_counts, None, settings.greyscale),
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
    )
    stopping = BaselineAwareStopping(
        settings.patience, min(settings.min_epochs, settings.epochs), baseline["loss"], settings.wait_for_baseline
    )
    record = RunRecord(save_dir, baseline["loss"], stopping)
    checkpointing = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="epoch={epoch}-val_loss={val_loss:.4f}",
        auto_insert_metric_name=False,
        monitor="val_loss",
        mode="min",
        save_top_k=settings.save_top_k,
        save_weights_only=True,
    )
    n_batches = max(1, len(train_ids) // settings.batch_size)
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        precision=settings.precision,
        gradient_clip_val=settings.gradient_clip or None,
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
            f"training in {save_dir} ended without a checkpoint (did validation run? val set of "
            f"{len(val_ids)} galaxies)"
        )
    return TrainResult(
        best_checkpoint=Path(result["best_checkpoint"]),
        best_val_loss=result["best_val_loss"],
        epochs_trained=result["epochs_trained"],
        seconds=time.perf_counter() - started,
        history=result["history"],
        baseline_loss=result.get("baseline_loss"),
        beats_baseline=result.get("beats_baseline"),
        collapsed=result.get("collapsed"),
        left_prior_epoch=result.get("left_prior_epoch"),
    )
