"""`zoobot train`: train on the train split of a shard folder, early-stop on val, report on test."""

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from zoobot.cli.app import (
    TRAIN_ACCELERATOR, TRAIN_DEVICES, TRAIN_NUM_NODES, TRAIN_NUM_WORKERS, TRAIN_PRECISION,
    app, fail, old_spelling, quiet_lightning, renamed, required, torch_device,
)
from zoobot.schema import SCHEMAS, get_schema

logger = logging.getLogger(__name__)


@app.command("train")
def train_command(
    shard_dir: Optional[Path] = typer.Argument(
        None, help="Shard folder (zoobot make-shards): trains on 'train', early-stops on 'val', reports 'test'.",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for checkpoints, logs and metrics.json.", show_default=False
    ),
    architecture: str = typer.Option("efficientnet_b0", help="zoobot-2019, or any timm model name (no pretrained weights)."),
    schema: Optional[str] = typer.Option(
        None, help=f"Decision tree ({sorted(SCHEMAS)} or NAME:q1,q2); default: the shards' own."
    ),
    epochs: int = typer.Option(20, help="Most epochs to train."),
    batch_size: int = typer.Option(64, help="Galaxies per step (per device)."),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    dropout_rate: float = typer.Option(0.2, help="Head dropout (always on, also for MC prediction)."),
    patience: int = typer.Option(10, help="Stop after this many epochs without a better val loss."),
    min_epochs: int = typer.Option(10, help="Never stop early before this many epochs (capped at --epochs)."),
    wait_for_baseline: bool = typer.Option(
        True, "--wait-for-baseline/--no-wait-for-baseline",
        help="Count patience only once val loss beats the image-blind baseline (a run on the prior's plateau goes on).",
    ),
    lr_schedule: str = typer.Option("constant", help="constant, or cosine (decay to 0 at --epochs, after any warm-up)."),
    warmup_epochs: int = typer.Option(0, help="Linear learning-rate warm-up in epochs (at most half the run)."),
    gradient_clip: float = typer.Option(0.0, help="Clip the gradient norm to this; 0 = off."),
    precision: str = TRAIN_PRECISION,
    accelerator: str = TRAIN_ACCELERATOR,
    devices: str = TRAIN_DEVICES,
    strategy: str = typer.Option("auto", help="Lightning strategy, e.g. ddp for several GPUs or nodes."),
    num_nodes: int = TRAIN_NUM_NODES,
    num_workers: int = TRAIN_NUM_WORKERS,
    seed: int = typer.Option(42, help="Seed for weights, shuffling and augmentations."),
    from_checkpoint: Optional[Path] = typer.Option(
        None, help="Start from this checkpoint's weights (same architecture, schema and channels)."
    ),
    pretrained: Optional[Path] = typer.Option(
        None, help="Start the backbone from these weights: a zoobot checkpoint of any schema, or a timm-format "
        ".safetensors/.pth file saved beforehand (matched by parameter name; the head is built anew).",
        show_default=False,
    ),
    trainable_blocks: Optional[int] = typer.Option(
        None, help="Finetune only the last N backbone blocks (0: the head only); default: all.", show_default=False
    ),
    layer_decay: float = typer.Option(1.0, help="Layer-wise learning-rate decay: block d from the top learns at lr * decay^d."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log for TensorBoard (needs the tensorboard package)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flips, rotations and crops."),
    greyscale: bool = typer.Option(False, "--greyscale", help="Train on greyscale (RGB shards converted on the fly)."),
    save_top_k: int = typer.Option(1, help="Keep this many best checkpoints."),
    eval_samples: int = typer.Option(15, help="MC dropout samples for the final evaluation."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Lightning's progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace checkpoints already in --out."),
    old_shard_dir: Optional[Path] = old_spelling("--shard-dir"),
    old_save_dir: Optional[Path] = old_spelling("--save-dir"),
    old_warm_start: Optional[Path] = old_spelling("--warm-start"),
) -> None:
    """Train a model; print the test split's metrics per question (val if there is no test) to OUT/metrics.json."""
    shard_dir = required(renamed(shard_dir, old_shard_dir, "--shard-dir", "SHARD_DIR"), "SHARD_DIR")
    save_dir = required(renamed(out, old_save_dir, "--save-dir", "--out"), "--out SAVE_DIR")
    warm_start = renamed(from_checkpoint, old_warm_start, "--warm-start", "--from-checkpoint")
    if warm_start is not None and pretrained is not None:
        fail("--from-checkpoint and --pretrained both give starting weights; pass one (--pretrained keeps only the backbone)")
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from zoobot.checkpoints import load_model
    from zoobot.files import write_json_atomic
    from zoobot.metrics import compare_with_baseline, format_metrics, image_blind_nll
    from zoobot.predict import evaluate_split, manifest_votes
    from zoobot.shards import ShardReader
    from zoobot.training import train_model
    from zoobot.training_settings import TrainSettings

    quiet_lightning()

    try:
        reader = ShardReader(shard_dir)
        chosen = get_schema(schema or reader.schema_spec)
        train_ids, train_counts = manifest_votes(reader, chosen, "train")
        val_ids, val_counts = manifest_votes(reader, chosen, "val")
    except (ValueError, KeyError) as error:  # ShardError is a ValueError
        fail(str(error.args[0] if isinstance(error, KeyError) else error))
    for name, counts in (("train", train_counts), ("val", val_counts)):
        if len(counts) == 0:
            fail(f"{shard_dir}: the {name} split is empty; make shards with labelled galaxies and --val-size > 0")
    report_split = "test" if reader.counts["test"] else "val"
    if report_split == "val":
        logger.warning(
            "%s has no test split: the metrics below are on val, which chose the checkpoint, so they are "
            "optimistic; make shards with --test-size for an honest estimate", shard_dir,
        )
    voted = train_counts.sum(axis=1) > 0
    if not voted.all():
        logger.info("leaving out %d train galaxies without votes on %s", int((~voted).sum()), chosen.name)
        train_ids, train_counts = train_ids[voted], train_counts[voted]
    try:
        settings = TrainSettings(
            architecture=architecture, dropout_rate=dropout_rate, batch_size=batch_size, epochs=epochs,
            learning_rate=learning_rate, weight_decay=weight_decay, patience=patience, min_epochs=min_epochs,
            wait_for_baseline=wait_for_baseline, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, gradient_clip=gradient_clip, precision=precision,
            accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
            num_workers=num_workers, seed=seed, augment=augment, greyscale=greyscale,
            save_top_k=save_top_k, tensorboard=tensorboard, progress_bar=progress,
            pretrained=None if pretrained is None else str(pretrained.resolve()),
            trainable_blocks=trainable_blocks, layer_decay=layer_decay,
        )
        logger.info(
            "training %s on %d galaxies (val %d, test %d), %d px, schema %s",
            architecture, len(train_ids), len(val_ids), reader.counts["test"], reader.size, chosen.name,
        )
        result = train_model(
            reader, chosen, train_ids, train_counts, val_ids, val_counts, settings, save_dir,
            warm_start=warm_start, overwrite=overwrite,
        )
    except (ValueError, FileExistsError, FileNotFoundError, ModuleNotFoundError) as error:
        fail(str(error))
    if rank_zero_only.rank != 0:  # DDP: the other ranks stop here
        return
    logger.info(
        "best val loss %.4f (image-blind baseline %.4f) after %d epochs (%.0f s): %s",
        result.best_val_loss, result.baseline_loss, result.epochs_trained, result.seconds, result.best_checkpoint,
    )
    model = load_model(result.best_checkpoint).to(torch_device(accelerator))
    predict_precision = "bf16-mixed" if precision.startswith("bf16") else "32-true"
    metrics = evaluate_split(model, reader, chosen, report_split, eval_samples, 256, predict_precision)
    _, report_counts = manifest_votes(reader, chosen, report_split)
    verdict = compare_with_baseline(metrics, image_blind_nll(train_counts, report_counts, chosen))
    typer.echo(f"{report_split} split:")
    typer.echo(format_metrics(metrics))
    typer.echo(
        f"image-blind baseline (the training votes' best single prediction for every galaxy): loss "
        f"{verdict['baseline_loss']:.3f}; model mixture loss {metrics['mixture_loss']:.3f}; spread of "
        f"predictions across galaxies {verdict['spread'] or 0.0:.3f}"
    )
    if verdict["collapsed"]:
        logger.warning(
            "collapsed: the model predicts nearly the same for every %s galaxy (spread %.4f < %.2f); it has "
            "not learnt from the images. Train longer (--epochs), or with more labels",
            report_split, verdict["spread"] or 0.0, verdict["collapse_spread"],
        )
    if not verdict["beats_baseline"]:
        logger.warning(
            "the model does not beat the image-blind baseline on %s (loss %.3f >= %.3f): it has learnt "
            "nothing a constant prediction would not give", report_split, metrics["mixture_loss"], verdict["baseline_loss"],
        )
    record = {
        "split": report_split,
        "shard_dir": str(Path(shard_dir).resolve()),
        "best_checkpoint": str(result.best_checkpoint),
        "best_val_loss": result.best_val_loss,
        "val_baseline_loss": result.baseline_loss,
        "left_prior_epoch": result.left_prior_epoch,
        "epochs_trained": result.epochs_trained,
        "train_seconds": result.seconds,
        "baseline_loss": verdict["baseline_loss"],
        "beats_baseline": verdict["beats_baseline"],
        "collapsed": verdict["collapsed"],
        "baseline": verdict,
        "history": result.history,
        "settings": asdict(settings),
        "metrics": metrics,
    }
    write_json_atomic(Path(save_dir) / "metrics.json", record)
    typer.echo(f"metrics written to {Path(save_dir) / 'metrics.json'}")
