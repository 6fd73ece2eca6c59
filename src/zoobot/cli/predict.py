"""`zoobot predict`: MC-dropout predictions of a checkpoint, streamed into a Parquet catalog."""

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from zoobot.catalog import CatalogError, read_table, validate_catalog
from zoobot.ids import describe_ids
from zoobot.cli.app import app, fail, old_spelling, renamed, required, torch_device
from zoobot.uncertainty import DEFAULT_VOTES, question_votes

logger = logging.getLogger(__name__)


def read_prediction_catalog(path: Path, schema) -> tuple[pd.DataFrame, bool]:
    """A catalog to predict: id_str and file_loc (relative paths are read from its folder).

    Returns the catalog and whether it carries this schema's vote columns with any votes, in
    which case it has been fully validated and can be scored.
    """
    catalog = read_table(path)
    for column in ("id_str", "file_loc"):
        if column not in catalog.columns:
            raise CatalogError(f"{path}: no {column!r} column; expected id_str and file_loc (the image path)")
    folder = Path(path).resolve().parent
    catalog["file_loc"] = [str(p) if os.path.isabs(str(p)) else str(folder / str(p)) for p in catalog["file_loc"]]
    has_votes = all(c in catalog.columns for c in schema.answer_columns)
    if has_votes:
        catalog = validate_catalog(catalog, schema, check_files=True, name=str(path))
        return catalog, bool(catalog[schema.answer_columns].to_numpy().sum() > 0)
    catalog["id_str"] = catalog["id_str"].astype(str)
    duplicated = catalog["id_str"][catalog["id_str"].duplicated()].unique()
    if len(duplicated):
        raise CatalogError(f"{path}: column 'id_str' must be unique; duplicated ids {describe_ids(duplicated)}")
    missing = [p for p in catalog["file_loc"] if not os.path.isfile(p)]
    if missing:
        raise CatalogError(
            f"{path}: column 'file_loc' points to {len(missing)} missing files, e.g. {describe_ids(missing)}. "
            "Fix the paths or drop those rows"
        )
    return catalog, False


@app.command("predict")
def predict_command(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="A checkpoint written by zoobot train (or the loop).", show_default=False
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output Parquet catalog.", show_default=False),
    shard_dir: Optional[Path] = typer.Option(None, help="Predict galaxies of this shard folder..."),
    split: str = typer.Option("pool", help="...from this split: train, val, test or pool."),
    catalog: Optional[Path] = typer.Option(
        None, help="...or decode the images of this catalog (id_str, file_loc) directly, without shards."
    ),
    n_samples: int = typer.Option(15, help="MC dropout samples per galaxy."),
    save_samples: bool = typer.Option(False, "--save-samples", help="Also write the raw samples (galaxy, sample, output) as .npy."),
    batch_size: int = typer.Option(256, help="Galaxies per forward pass."),
    precision: str = typer.Option(
        "auto", help="Lightning precision: 32-true, bf16-mixed (autocast), or auto: bf16-mixed on GPUs and on CPUs "
        "with bf16 units, else 32-true.",
    ),
    compile: Optional[bool] = typer.Option(
        None, "--compile/--no-compile", show_default=False,
        help="torch.compile the backbone (inductor, freezing; a compile took 10-200 s here). "
        "Default: on from 100,000 galaxies, where it was measured to pay (docs/scale.md).",
    ),
    tta_views: int = typer.Option(0, help="Test-time augmentation: 2-8 dihedral views (samples split across them)."),
    votes: int = typer.Option(
        DEFAULT_VOTES, help="Volunteers per question for the 90% predictive interval of the observed vote fraction, "
        "where a galaxy's own votes are unknown (own votes are used for labelled splits and catalogs with votes).",
    ),
    num_workers: int = typer.Option(0, help="Image-decoding processes for --catalog."),
    crop_fraction: float = typer.Option(1.0, help="--catalog: centre crop, as the training shards' make-shards --crop-fraction."),
    accelerator: str = typer.Option("auto", help="Lightning accelerator: auto (a GPU if present), cpu or gpu."),
    devices: str = typer.Option("1", help="Lightning devices: a count, a list like 0,1, or auto (--shard-dir)."),
    strategy: str = typer.Option("auto", help="Lightning strategy, e.g. ddp (one process per device; gloo on CPU)."),
    num_nodes: int = typer.Option(1, help="Lightning num_nodes (SLURM: see docs/scale.md)."),
    acquisition: Optional[str] = typer.Option(
        None, help="Also score each galaxy with this acquisition function (bald, entropy, random): <out>_scores.parquet."
    ),
    top_k: int = typer.Option(0, help="With --acquisition: write the best K galaxies to <out>_acquired.csv."),
    seed: int = typer.Option(0, help="Seed of the dropout masks (per work unit, whatever the number of processes)."),
    unit_size: int = typer.Option(
        4096, help="--shard-dir: galaxies per work unit, spread over the ranks; finished units are kept in "
        "<out>.parts/ and skipped when the same command is rerun.",
    ),
    old_checkpoint: Optional[Path] = old_spelling("--checkpoint"),
    old_save_loc: Optional[Path] = old_spelling("--save-loc"),
    old_device: Optional[str] = old_spelling("--device"),
) -> None:
    """Write per-answer vote fractions, 90% credible and predictive intervals, and P(asked) for every galaxy."""
    checkpoint = required(renamed(checkpoint, old_checkpoint, "--checkpoint", "CHECKPOINT"), "CHECKPOINT")
    save_loc = required(renamed(out, old_save_loc, "--save-loc", "--out"), "--out FILE")
    old_accelerators = {"cuda": "gpu", "cpu": "cpu", "auto": "auto"}
    if old_device is not None:
        accelerator = old_accelerators.get(renamed(None, old_device, "--device", "--accelerator"), old_device)
    short = {"32": "32-true", "bf16": "bf16-mixed"}
    if precision in short:
        precision = renamed(None, short[precision], f"--precision {precision}", f"--precision {short[precision]}")
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        fail(f"--accelerator: expected one of auto, cpu, gpu, got {accelerator!r}")
    if catalog is not None and (devices not in ("1", "auto") or strategy != "auto" or num_nodes != 1 or acquisition):
        fail("--devices, --strategy, --num-nodes and --acquisition work with --shard-dir; --catalog runs in one process")
    if votes < 1:
        fail(f"--votes: expected a whole number of volunteers >= 1, got {votes}")
    from zoobot.checkpoints import read_checkpoint
    from zoobot.cli.shards import warn_if_crop_differs
    from zoobot.images import ImageError, iter_catalog_batches
    from zoobot.metrics import evaluate_predictions, format_metrics
    from zoobot.predict import check_predict_options, manifest_votes, predict_image_batches
    from zoobot.pool_scoring import score_split_to_parquet
    from zoobot.prediction_writer import write_predictions
    from zoobot.shards import ShardError, ShardReader

    if (shard_dir is None) == (catalog is None):
        fail("give exactly one of --shard-dir (with --split) or --catalog")
    try:
        check_predict_options(n_samples, batch_size, precision, tta_views)
        loaded = read_checkpoint(checkpoint)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    model, schema = loaded.model.to(torch_device(accelerator)), loaded.schema
    metadata = {"checkpoint": str(Path(checkpoint).resolve())}

    chunks: list[np.ndarray] = []
    counts = None
    try:
        if shard_dir is not None:
            reader = ShardReader(shard_dir)
            scored = split in ("train", "val", "test") and all(c in reader.manifest.columns for c in schema.answer_columns)
            if scored:
                _, counts = manifest_votes(reader, schema, split)
            summary = score_split_to_parquet(
                model, reader, split, save_loc, str(Path(checkpoint).resolve()), save_samples=save_samples,
                keep_samples=scored, own_votes=scored, compile=compile, accelerator=accelerator,
                devices=int(devices) if devices.isdigit() else devices, strategy=strategy, num_nodes=num_nodes,
                n_samples=n_samples, batch_size=batch_size, precision=precision, tta_views=tta_views,
                default_votes=votes, seed=seed, acquisition=acquisition, top_k=top_k, unit_size=unit_size,
                metadata={**metadata, "source": f"{Path(shard_dir).resolve()}:{split}", "n_samples": n_samples,
                          "tta_views": tta_views, "likelihood": model.likelihood},
            )
            if summary is None:  # not rank 0: rank 0 merges and reports
                return
            if scored:
                chunks.append(summary.samples_array)
        else:
            table, scored = read_prediction_catalog(catalog, schema)
            if scored:
                counts = table[schema.answer_columns].to_numpy(dtype=np.int64)
            size = model.image_size or loaded.model_config.get("image_size")
            warn_if_crop_differs(checkpoint, crop_fraction)
            images = iter_catalog_batches(table, size, model.channels, batch_size, num_workers, crop_fraction)
            batches = predict_image_batches(
                model, images, n_samples, precision, tta_views, compile=bool(compile), batch_size=batch_size
            )
            summary = write_predictions(
                batches, save_loc, schema, n_galaxies=len(table), save_samples=save_samples,
                question_votes=question_votes(counts, schema) if scored else None, default_votes=votes,
                metadata={**metadata, "source": str(Path(catalog).resolve()), "n_samples": n_samples,
                          "tta_views": tta_views, "precision": precision, "likelihood": model.likelihood},
                on_batch=(lambda ids, p: chunks.append(p)) if scored else None,
            )
    except (ShardError, CatalogError, ImageError, ValueError, KeyError) as error:
        fail(str(error.args[0]) if isinstance(error, KeyError) else str(error))
    logger.info(
        "%d galaxies, %d samples each, %.0f galaxies/s -> %s%s",
        summary.n_galaxies, summary.n_samples, summary.galaxies_per_second, summary.catalog,
        f" and {summary.samples}" if summary.samples else "",
    )
    if counts is not None and chunks:
        metrics = evaluate_predictions(np.concatenate(chunks), counts, schema)
        typer.echo(format_metrics(metrics))
