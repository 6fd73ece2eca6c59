"""`zoobot pretrain`: self-supervised (SimCLR) pretraining on shard images; `zoobot probe`: linear probe of a checkpoint."""

import logging
from pathlib import Path
from typing import Optional

import typer

from zoobot.cli.app import (
    TRAIN_ACCELERATOR, TRAIN_DEVICES, TRAIN_NUM_NODES, TRAIN_NUM_WORKERS, TRAIN_PRECISION, app, fail, quiet_lightning,
)

logger = logging.getLogger(__name__)


@app.command("pretrain")
def pretrain_command(
    shard_dir: Path = typer.Argument(..., help="Shard folder (zoobot make-shards); only its images are read.", show_default=False),
    out: Path = typer.Option(..., "--out", help="Folder for pretrained.ckpt and pretrain_result.json.", show_default=False),
    split: list[str] = typer.Option(
        ["pool"], "--split", help="Split to learn from (repeat for several); default pool, so no labelled galaxy is seen."
    ),
    architecture: str = typer.Option("zoobot-2019", help="zoobot-2019, or any timm model name (no pretrained weights)."),
    epochs: int = typer.Option(20, help="Epochs over the chosen galaxies."),
    batch_size: int = typer.Option(128, help="Galaxies per step (per device); the others in a batch are the negatives."),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-4, help="AdamW weight decay."),
    temperature: float = typer.Option(0.1, help="NT-Xent temperature."),
    projection_dim: int = typer.Option(64, help="Width of the projection head's output (discarded after pretraining)."),
    max_galaxies: Optional[int] = typer.Option(None, help="Pretrain on a random subset of this many galaxies.", show_default=False),
    greyscale: bool = typer.Option(False, "--greyscale", help="Learn on greyscale (RGB shards converted on the fly)."),
    seed: int = typer.Option(42, help="Seed for weights, shuffling and augmentations."),
    precision: str = TRAIN_PRECISION,
    accelerator: str = TRAIN_ACCELERATOR,
    devices: str = TRAIN_DEVICES,
    strategy: str = typer.Option("auto", help="Lightning strategy, e.g. ddp (negatives stay per device)."),
    num_nodes: int = TRAIN_NUM_NODES,
    num_workers: int = TRAIN_NUM_WORKERS,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Lightning's progress bar."),
    probe: bool = typer.Option(False, "--probe", help="Then run the linear probe (zoobot probe) on val -> test."),
) -> None:
    """Learn a backbone from unlabelled images (SimCLR); OUT/pretrained.ckpt works with `train --pretrained`."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from zoobot.pretrain import PretrainSettings, pretrain
    from zoobot.shards import ShardReader

    quiet_lightning()
    try:
        settings = PretrainSettings(
            architecture=architecture, splits=tuple(split), epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, weight_decay=weight_decay, temperature=temperature,
            projection_dim=projection_dim, max_galaxies=max_galaxies, greyscale=greyscale, seed=seed,
            precision=precision, accelerator=accelerator, devices=devices, strategy=strategy,
            num_nodes=num_nodes, num_workers=num_workers, progress_bar=progress,
        )
        reader = ShardReader(shard_dir)
        logger.info("pretraining %s on splits %s of %s (%d px)", architecture, ", ".join(settings.splits), shard_dir, reader.size)
        result = pretrain(reader, settings, out)
    except (ValueError, KeyError, FileNotFoundError) as error:  # ShardError is a ValueError
        fail(str(error.args[0] if isinstance(error, KeyError) else error))
    if rank_zero_only.rank != 0:
        return
    losses = result["loss_per_epoch"]
    typer.echo(
        f"pretrained on {result['n_galaxies']} galaxies ({', '.join(result['splits'])}) for {len(losses)} epochs "
        f"in {result['seconds']:.0f} s: NT-Xent loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    typer.echo(f"checkpoint: {result['checkpoint']} (zoobot train --pretrained {result['checkpoint']})")
    if probe:
        _probe(Path(result["checkpoint"]), shard_dir, "val", "test", 0, None, out / "probe.json")


def _probe(checkpoint: Path, shard_dir: Path, fit_split: str, score_split: str, seed: int, l2: Optional[float], out: Optional[Path]) -> None:
    from zoobot.files import write_json_atomic
    from zoobot.pretrain import probe_checkpoint

    try:
        result = probe_checkpoint(checkpoint, shard_dir, fit_split, score_split, seed=seed, l2=l2)
    except (ValueError, KeyError, FileNotFoundError) as error:
        fail(str(error.args[0] if isinstance(error, KeyError) else error))
    typer.echo(
        f"linear probe on {result['question']!r}: fit on {fit_split} ({result['pretrained']['n_fit']} galaxies), "
        f"scored on {score_split} ({result['pretrained']['n_score']})"
    )
    for name in ("pretrained", "random", "constant"):
        scores = result[name]
        penalty = f"  (l2 {scores['l2']:g})" if "l2" in scores else ""
        typer.echo(f"  {name:<10}  log loss {scores['log_loss']:.4f}  accuracy {scores['accuracy']:.3f}{penalty}")
    if out is not None:
        write_json_atomic(out, result)
        typer.echo(f"written to {out}")


@app.command("probe")
def probe_command(
    checkpoint: Path = typer.Argument(..., help="A zoobot checkpoint (pretrained.ckpt, or any train checkpoint).", show_default=False),
    shard_dir: Path = typer.Argument(..., help="Shard folder with labelled splits.", show_default=False),
    fit_split: str = typer.Option("val", help="Split the logistic regression is fitted on."),
    score_split: str = typer.Option("test", help="Split it is scored on (the same as --fit-split: two random halves)."),
    seed: int = typer.Option(0, help="Seed of the random backbone (and of the halves)."),
    l2: Optional[float] = typer.Option(
        None, help="L2 penalty on the weights (features are standardised); default: chosen per backbone by 5-fold "
        "cross-validation on the fit split.", show_default=False,
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the numbers to this JSON file.", show_default=False),
) -> None:
    """Linear probe of frozen features on the first question: the checkpoint's backbone against a random one."""
    if l2 is not None and l2 < 0:
        fail(f"--l2: expected a number >= 0, got {l2}")
    _probe(checkpoint, shard_dir, fit_split, score_split, seed, l2, out)
