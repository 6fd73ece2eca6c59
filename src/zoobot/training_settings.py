"""How to train (:class:`TrainSettings`) and what a training run returns (:class:`TrainResult`).

Plain dataclasses, importable without PyTorch or Lightning, so that instructions and command
lines can build and check settings cheaply. ``zoobot.training.train_model`` takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LR_SCHEDULES = ("cosine", "constant")


@dataclass
class TrainSettings:
    """How to train. JSON-serialisable: ``TrainSettings(**dataclasses.asdict(settings))``."""

    architecture: str = "efficientnet_b0"
    dropout_rate: float = 0.2
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 10  # early stopping on validation loss
    min_epochs: int = 10  # early stopping never ends a run before this (capped at epochs)
    wait_for_baseline: bool = True  # patience counts only once val loss has beaten the image-blind baseline
    lr_schedule: str = "constant"  # or "cosine": decay to 0 at `epochs` (after any warm-up)
    warmup_epochs: int = 0  # linear learning-rate warm-up (any schedule), at most half the run
    gradient_clip: float = 0.0  # clip the gradient norm to this; 0 = off
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
    pretrained: str | None = None  # backbone weights to start from (zoobot checkpoint or timm file); a warm start wins
    trainable_blocks: int | None = None  # train only the last n backbone blocks (0: head only); None: all
    layer_decay: float = 1.0  # learning rate of backbone block d from the top: learning_rate * layer_decay**d

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
        for name in ("min_epochs", "warmup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainSettings.{name}: expected an integer >= 0, got {value!r}")
        if not isinstance(self.wait_for_baseline, bool):
            raise ValueError(f"TrainSettings.wait_for_baseline: expected True or False, got {self.wait_for_baseline!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainSettings.lr_schedule: expected one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.trainable_blocks is not None and (
            isinstance(self.trainable_blocks, bool) or not isinstance(self.trainable_blocks, int) or self.trainable_blocks < 0
        ):
            raise ValueError(
                f"TrainSettings.trainable_blocks: expected a whole number >= 0 (0 trains the head only) or None for "
                f"all, got {self.trainable_blocks!r}"
            )
        decay = self.layer_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ValueError(f"TrainSettings.layer_decay: expected a number in (0, 1] (1 = off), got {decay!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ValueError(f"TrainSettings.pretrained: expected a path as a string, got {self.pretrained!r}")
        clip = self.gradient_clip
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0 or clip == float("inf"):
            raise ValueError(f"TrainSettings.gradient_clip: expected a finite number >= 0 (0 = off), got {clip!r}")


@dataclass
class TrainResult:
    """What ``train_model`` returns; rank 0 also writes it to ``save_dir/train_result.json``."""

    best_checkpoint: Path
    best_val_loss: float
    epochs_trained: int
    seconds: float
    history: list[dict]  # per epoch (0-based, as in checkpoint names): epoch, train_loss, val_loss, val_spread, lr
    baseline_loss: float | None = None  # the image-blind baseline's val loss (metrics.image_blind_nll)
    beats_baseline: bool | None = None  # best_val_loss < baseline_loss
    collapsed: bool | None = None  # the best epoch's val predictions hardly differ between galaxies
    left_prior_epoch: int | None = None  # first epoch whose val loss beat the baseline; None if none did
