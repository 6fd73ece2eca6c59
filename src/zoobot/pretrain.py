"""Self-supervised pretraining of a backbone on unlabelled shard images (SimCLR), and a linear probe.

    result = pretrain(shard_dir, PretrainSettings(architecture="zoobot-2019", epochs=20), out_dir)
    # out_dir/pretrained.ckpt: a zoobot checkpoint; `zoobot train --pretrained` keeps its backbone
    report = probe_checkpoint(out_dir / "pretrained.ckpt", shard_dir, fit_split="val", score_split="test")

Pretraining: every galaxy of the chosen splits (by default only ``pool``, so no label of an
active-learning comparison leaks in; votes are never read) is seen as two random views per step
(flips, rotation by any angle, a random resized crop: :class:`~zoobot.augmentation.GalaxyAugmentation`;
then brightness, contrast and noise: :class:`~zoobot.augmentation.PhotometricJitter`). The backbone's
pooled features go through a projection head (:class:`~zoobot.contrastive.ProjectionHead`) and
the NT-Xent loss (:func:`~zoobot.contrastive.nt_xent`) pulls the two views of a galaxy together
and pushes other galaxies apart. Negatives are the other galaxies of the same batch on the same
device (with DDP, each rank's own batch).

The checkpoint is written in zoobot's own format (``zoobot.checkpoints``): ``state_dict`` with
the GalaxyModel's weights under ``model.`` (the backbone pretrained, the vote head as
initialised: it was never trained) and the projection head under ``projection.``;
``hyper_parameters`` = {model_config, schema (the shards'), settings (TrainSettings of the
architecture), pretraining (:class:`PretrainSettings`, splits, galaxy count)}. So the file alone
rebuilds the backbone (architecture, channels, image size, backbone options), ``--pretrained``
reports it as a zoobot checkpoint, and a mismatch names the architecture it came from.

Linear probe: logistic regression on frozen pooled features predicting the majority answer of
the schema's first question, fitted on one labelled split and scored on another, for the
pretrained backbone, a randomly initialised backbone of the same architecture, and the constant
prediction of the fit split's class frequencies.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from zoobot.augmentation import GalaxyAugmentation, PhotometricJitter
from zoobot.checkpoints import read_checkpoint
from zoobot.contrastive import ProjectionHead, nt_xent
from zoobot.files import atomic_path, write_json_atomic
from zoobot.models import GalaxyModel, create_model, model_from_config
from zoobot.predict import BatchScorer
from zoobot.schema import Schema, get_schema, schema_to_dict
from zoobot.shard_dataset import ShardVoteDataset
from zoobot.shards import SPLITS, ShardReader
from zoobot.training_settings import TrainSettings

CHECKPOINT_NAME = "pretrained.ckpt"
RESULT_NAME = "pretrain_result.json"


@dataclass
class PretrainSettings:
    """How to pretrain; checked when made. JSON-serialisable via ``dataclasses.asdict``."""

    architecture: str = "zoobot-2019"
    splits: tuple[str, ...] = ("pool",)
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    projection_dim: int = 64
    brightness: float = 0.2
    contrast: float = 0.2
    noise: float = 4.0  # the most Gaussian noise per galaxy, 0-255 units
    max_galaxies: int | None = None  # a seeded random subset of the splits' galaxies
    greyscale: bool = False
    seed: int = 42
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    num_workers: int = 0
    progress_bar: bool = True
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        unknown = [s for s in self.splits if s not in SPLITS]
        if not self.splits or unknown:
            raise ValueError(f"PretrainSettings.splits: expected one or more of {list(SPLITS)}, got {list(self.splits)}")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"PretrainSettings.splits: each split once, got {list(self.splits)}")
        checks = {
            "epochs": (self.epochs >= 1, "an integer >= 1"),
            "batch_size": (self.batch_size >= 2, "an integer >= 2 (the other galaxies of a batch are the negatives)"),
            "learning_rate": (self.learning_rate > 0, "a number > 0"),
            "weight_decay": (self.weight_decay >= 0, "a number >= 0"),
            "temperature": (self.temperature > 0, "a number > 0"),
            "projection_dim": (self.projection_dim >= 1, "an integer >= 1"),
            "num_nodes": (self.num_nodes >= 1, "an integer >= 1"),
            "num_workers": (self.num_workers >= 0, "an integer >= 0"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"PretrainSettings.{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.max_galaxies is not None and self.max_galaxies < 2:
            raise ValueError(f"PretrainSettings.max_galaxies: expected an integer >= 2 or None (all), got {self.max_galaxies!r}")
        PhotometricJitter(self.brightness, self.contrast, self.noise)  # checks the ranges


class TwoViews:
    """DataLoader collate: a batch (uint8 images, votes) -> two random views (batch, C, H, W) each."""

    def __init__(self, size: int, brightness: float, contrast: float, noise: float):
        self.geometric = GalaxyAugmentation(size)
        self.photometric = PhotometricJitter(brightness, contrast, noise)

    def view(self, images: torch.Tensor) -> torch.Tensor:
        return self.photometric(self.geometric(images))

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, _ = batch
        return self.view(images), self.view(images)


class ContrastiveModule(L.LightningModule):
    """A GalaxyModel's backbone and a projection head, trained with NT-Xent on two views."""

    def __init__(self, model: GalaxyModel, settings: PretrainSettings):
        super().__init__()
        self.model = model
        self.model.head.requires_grad_(False)  # never used here; DDP refuses parameters without gradients
        self.projection = ProjectionHead(model.n_features, settings.projection_dim)
        self.settings = settings

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        view1, view2 = batch
        features = self.model.forward_features(torch.cat([view1, view2]))  # (2B, n_features)
        z1, z2 = self.projection(features).chunk(2)  # (B, dim) each
        loss = nt_xent(z1, z2, self.settings.temperature)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=len(view1))
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(view1))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        parameters = [*self.model.backbone.parameters(), *self.projection.parameters()]
        return torch.optim.AdamW(parameters, lr=self.settings.learning_rate, weight_decay=self.settings.weight_decay)


def pretrain_checkpoint(module: ContrastiveModule, schema: Schema, record: dict) -> dict:
    """The checkpoint dict: zoobot's format (``zoobot.checkpoints``) plus the projection head."""
    settings = module.settings
    state = {f"model.{k}": v.detach().cpu() for k, v in module.model.state_dict().items()}
    state |= {f"projection.{k}": v.detach().cpu() for k, v in module.projection.state_dict().items()}
    train_settings = TrainSettings(
        architecture=settings.architecture, batch_size=settings.batch_size, epochs=settings.epochs,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay, seed=settings.seed,
        greyscale=settings.greyscale, augment=True, backbone_kwargs=dict(settings.backbone_kwargs),
    )
    return {
        "state_dict": state,
        "hyper_parameters": {
            "model_config": module.model.config,
            "schema": schema_to_dict(schema),
            "settings": asdict(train_settings),
            "pretraining": record,
        },
    }


class PretrainRecord(Callback):
    """Loss per epoch; rank 0 writes the checkpoint and the result json when fitting ends."""

    def __init__(self, out: Path, schema: Schema, record: dict, started: float):
        self.out, self.schema, self.record, self.started = Path(out), schema, record, started
        self.losses: list[float] = []
        self.result: dict | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train_loss"]))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        checkpoint = self.out / CHECKPOINT_NAME
        result = {**self.record, "checkpoint": str(checkpoint), "loss_per_epoch": self.losses,
                  "epochs_trained": len(self.losses), "seconds": time.perf_counter() - self.started}
        with atomic_path(checkpoint) as tmp:
            torch.save(pretrain_checkpoint(pl_module, self.schema, result), tmp)
        write_json_atomic(self.out / RESULT_NAME, result)
        self.result = result


def pretraining_positions(reader: ShardReader, settings: PretrainSettings) -> np.ndarray:
    """Manifest positions of the galaxies to pretrain on; ValueError for too few."""
    positions = np.concatenate([reader.split_positions(s) for s in settings.splits])
    counts = {s: int(reader.counts[s]) for s in settings.splits}
    if len(positions) < 2:
        raise ValueError(
            f"{reader.shard_dir}: splits {counts} hold {len(positions)} galaxies; pretraining needs at least 2. "
            f"Choose other splits (--split, any of {list(SPLITS)})"
        )
    if settings.max_galaxies is not None and settings.max_galaxies < len(positions):
        rng = np.random.default_rng(settings.seed)
        positions = np.sort(rng.choice(positions, settings.max_galaxies, replace=False))
    if len(positions) < settings.batch_size:
        raise ValueError(
            f"{reader.shard_dir}: splits {counts} give {len(positions)} galaxies, fewer than the batch size "
            f"{settings.batch_size}; lower --batch-size (at least 2)"
        )
    return positions


def pretrain(shards: str | Path | ShardReader, settings: PretrainSettings, out: str | Path) -> dict:
    """Pretrain a backbone on the shards' images; write ``out/pretrained.ckpt`` and ``out/pretrain_result.json``.

    Returns the result record (rank 0; other DDP ranks get the same without the loss history).
    """
    started = time.perf_counter()
    out = Path(out)
    reader = shards if isinstance(shards, ShardReader) else ShardReader(shards)
    schema = get_schema(reader.schema_spec)
    positions = pretraining_positions(reader, settings)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    channels = 1 if settings.greyscale else reader.channels
    model = create_model(settings.architecture, schema=schema, channels=channels, image_size=reader.size,
                         **settings.backbone_kwargs)
    module = ContrastiveModule(model, settings)
    dataset = ShardVoteDataset(reader, positions, np.zeros((len(positions), 0), dtype=np.int64), None, settings.greyscale)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True, num_workers=settings.num_workers,
        persistent_workers=settings.num_workers > 0,
        collate_fn=TwoViews(reader.size, settings.brightness, settings.contrast, settings.noise),
    )
    record = {
        "shard_dir": str(Path(reader.shard_dir).resolve()),
        "splits": list(settings.splits),
        "n_galaxies": int(len(positions)),
        "image_size": reader.size,
        "channels": channels,
        "settings": asdict(settings),
    }
    keeper = PretrainRecord(out, schema, record, started)
    trainer = L.Trainer(
        max_epochs=settings.epochs, accelerator=settings.accelerator, devices=settings.devices,
        strategy=settings.strategy, num_nodes=settings.num_nodes, precision=settings.precision,
        callbacks=[keeper], logger=False, enable_checkpointing=False, enable_progress_bar=settings.progress_bar,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, len(loader))), default_root_dir=out,
    )
    trainer.fit(module, train_dataloaders=loader)
    if keeper.result is not None:  # this process is rank 0
        return keeper.result
    if trainer.is_global_zero and (out / RESULT_NAME).is_file():  # "ddp_spawn": rank 0 ran in a child process
        return json.loads((out / RESULT_NAME).read_text())
    return record


# ---------------------------------------------------------------- linear probe

def first_question_labels(reader: ShardReader, schema: Schema, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Manifest positions (n,) and majority-answer indices (n,) of the schema's first question,
    for the split's galaxies with at least one vote on it (ties go to the earlier answer)."""
    columns = schema.questions[0].columns()
    missing = [c for c in columns if c not in reader.manifest.columns]
    if missing:
        raise ValueError(f"{reader.shard_dir}: the manifest has no vote columns {missing}")
    positions = reader.split_positions(split)
    counts = reader.manifest[columns].to_numpy(dtype=np.int64)[positions]  # (galaxy, answer)
    voted = counts.sum(axis=1) > 0
    return positions[voted], counts[voted].argmax(axis=1)


@torch.inference_mode()
def backbone_features(model: GalaxyModel, reader: ShardReader, positions: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pooled features (n, n_features), float64, of the galaxies at ``positions``; eval mode, no
    augmentation, images adapted to the model as prediction adapts them (``BatchScorer``)."""
    model.eval()
    scorer = BatchScorer(model, n_samples=1)
    parts = [
        scorer.features(scorer.adapt(images)).double().cpu().numpy()
        for _, images in reader.iter_batches(np.asarray(positions), batch_size, reuse_buffer=True)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.n_features))


def linear_probe(
    fit_features: np.ndarray, fit_labels: np.ndarray, score_features: np.ndarray, score_labels: np.ndarray,
    n_classes: int | None = None, l2: float = 1e-2,
) -> dict:
    """Multinomial logistic regression on standardised features, fitted by L-BFGS; scored on the other set.

    Minimises the mean cross-entropy on the fit set + ``l2`` * ||W||^2 (the bias is not penalised).
    Features are standardised with the fit set's mean and standard deviation. Returns
    ``{"log_loss", "accuracy", "fit_log_loss", "fit_accuracy", "n_fit", "n_score"}``: log loss in
    nats per galaxy, accuracy of the most probable class.
    """
    fit_features, score_features = np.asarray(fit_features, float), np.asarray(score_features, float)
    fit_labels, score_labels = np.asarray(fit_labels, int), np.asarray(score_labels, int)
    if fit_features.ndim != 2 or score_features.ndim != 2 or fit_features.shape[1] != score_features.shape[1]:
        raise ValueError(f"linear_probe: expected (n, features) arrays of equal width, got {fit_features.shape} and {score_features.shape}")
    if len(fit_labels) != len(fit_features) or len(score_labels) != len(score_features):
        raise ValueError("linear_probe: expected one label per row of features")
    if len(fit_labels) < 2 or len(score_labels) < 1:
        raise ValueError(f"linear_probe: expected at least 2 fit and 1 scored galaxies, got {len(fit_labels)} and {len(score_labels)}")
    if not (np.isfinite(fit_features).all() and np.isfinite(score_features).all()):
        raise ValueError("linear_probe: features hold NaN or infinite values")
    n_classes = n_classes or int(max(fit_labels.max(), score_labels.max())) + 1
    mean, std = fit_features.mean(axis=0), fit_features.std(axis=0) + 1e-8
    x_fit = torch.as_tensor((fit_features - mean) / std)  # (n, features) float64
    x_score = torch.as_tensor((score_features - mean) / std)
    y_fit, y_score = torch.as_tensor(fit_labels), torch.as_tensor(score_labels)
    weight = torch.zeros(x_fit.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_fit @ weight + bias, y_fit) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        scores = {}
        for name, x, y in (("fit_", x_fit, y_fit), ("", x_score, y_score)):
            logits = x @ weight + bias
            scores[f"{name}log_loss"] = float(F.cross_entropy(logits, y))
            scores[f"{name}accuracy"] = float((logits.argmax(dim=1) == y).double().mean())
    return {**scores, "n_fit": len(y_fit), "n_score": len(y_score)}


#: L2 penalties tried by :func:`choose_l2`.
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def choose_l2(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0) -> float:
    """The penalty of ``L2_GRID`` with the lowest mean held-out log loss in k-fold cross-validation
    on the fit set alone (the scored set is never looked at)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = np.array_split(order, min(folds, len(labels)))
    losses = []
    for l2 in L2_GRID:
        fold_losses = []
        for k, held in enumerate(parts):
            kept = np.concatenate([p for j, p in enumerate(parts) if j != k])
            scores = linear_probe(features[kept], labels[kept], features[held], labels[held], n_classes, l2)
            fold_losses.append(scores["log_loss"])
        losses.append(np.mean(fold_losses))
    return float(L2_GRID[int(np.argmin(losses))])


def constant_probe(fit_labels: np.ndarray, score_labels: np.ndarray, n_classes: int) -> dict:
    """The image-blind reference: the fit set's class frequencies (add-one) for every galaxy."""
    frequencies = (np.bincount(fit_labels, minlength=n_classes) + 1) / (len(fit_labels) + n_classes)
    return {
        "log_loss": float(-np.log(frequencies[score_labels]).mean()),
        "accuracy": float((score_labels == frequencies.argmax()).mean()),
        "n_fit": len(fit_labels), "n_score": len(score_labels),
    }


def probe_checkpoint(
    checkpoint: str | Path, shards: str | Path | ShardReader, fit_split: str = "val", score_split: str = "test",
    seed: int = 0, l2: float | None = None, batch_size: int = 256,
) -> dict:
    """Linear probes on the first question of the shards' schema: the checkpoint's backbone, a
    random backbone of the same architecture (built with ``seed``), and the constant prediction.

    ``l2``: the penalty for both backbones; None chooses one per backbone by cross-validation on
    the fit set (:func:`choose_l2`), recorded as ``result[name]["l2"]``.

    ``fit_split == score_split`` splits that split's galaxies in two halves at random (``seed``).
    """
    reader = shards if isinstance(shards, ShardReader) else ShardReader(shards)
    for split in (fit_split, score_split):
        if split not in SPLITS:
            raise ValueError(f"probe split: expected one of {list(SPLITS)}, got {split!r}")
    schema = get_schema(reader.schema_spec)
    fit_positions, fit_labels = first_question_labels(reader, schema, fit_split)
    score_positions, score_labels = first_question_labels(reader, schema, score_split)
    if fit_split == score_split:
        order = np.random.default_rng(seed).permutation(len(fit_positions))
        half = len(order) // 2
        score_positions, score_labels = fit_positions[order[half:]], fit_labels[order[half:]]
        fit_positions, fit_labels = fit_positions[order[:half]], fit_labels[order[:half]]
    for split, labels in ((fit_split, fit_labels), (score_split, score_labels)):
        if len(labels) < 2:
            raise ValueError(
                f"{reader.shard_dir}: split {split!r} has {len(labels)} galaxies with votes on "
                f"{schema.questions[0].name!r}; the probe needs at least 2 in each set"
            )
    n_classes = len(schema.questions[0].answers)
    loaded = read_checkpoint(Path(checkpoint))
    torch.manual_seed(seed)
    random_model = model_from_config(loaded.model_config, schema=loaded.schema)
    result = {
        "checkpoint": str(checkpoint), "shard_dir": str(Path(reader.shard_dir).resolve()),
        "question": schema.questions[0].name, "answers": [a for a in schema.questions[0].answers],
        "fit_split": fit_split, "score_split": score_split, "seed": seed,
        "score_class_fractions": (np.bincount(score_labels, minlength=n_classes) / len(score_labels)).tolist(),
        "constant": constant_probe(fit_labels, score_labels, n_classes),
    }
    for name, model in (("pretrained", loaded.model), ("random", random_model)):
        fit_x = backbone_features(model, reader, fit_positions, batch_size)
        score_x = backbone_features(model, reader, score_positions, batch_size)
        penalty = l2 if l2 is not None else choose_l2(fit_x, fit_labels, n_classes, seed=seed)
        result[name] = {**linear_probe(fit_x, fit_labels, score_x, score_labels, n_classes, penalty), "l2": penalty}
    return result
