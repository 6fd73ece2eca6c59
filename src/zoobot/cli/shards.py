"""`zoobot make-shards` and `zoobot check-shards`: experiment catalogs -> uint8 image shards."""

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from zoobot.catalog import CatalogError, load_catalog, schema_spec_of
from zoobot.cli.app import app, fail, old_spelling, renamed, required
from zoobot.schema import SCHEMAS, get_schema
from zoobot.images import check_crop_fraction
from zoobot.shards import BAD_IMAGES_NAME, ShardError, ShardReader, read_config, write_shards
from zoobot.shards.format import crop_fraction_of

logger = logging.getLogger(__name__)


class _RateColumn(ProgressColumn):
    """Images per second, from rich's moving average."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- images/s" if speed is None else f"{speed:,.0f} images/s", style="progress.data.speed")


@app.command("make-shards")
def make_shards_command(
    labelled_catalog: Optional[Path] = typer.Argument(
        None, help="Labelled catalog (from define-experiment).", show_default=False
    ),
    unlabelled_catalog: Optional[Path] = typer.Argument(
        None, help="Unlabelled catalog; its votes may all be 0.", show_default=False
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="New folder for the shards.", show_default=False),
    val_size: Optional[int] = typer.Option(
        None, help="The first this-many labelled galaxies form the val split (early stopping, checkpoint choice).",
        show_default=False,
    ),
    test_size: int = typer.Option(
        0, help="The next this-many form the test split: held out, reported, never used for any choice.",
    ),
    max_labelled: Optional[int] = typer.Option(None, help="At most this many train galaxies."),
    max_unlabelled: Optional[int] = typer.Option(None, help="At most this many pool galaxies."),
    size: int = typer.Option(128, help="Image side in pixels after resizing."),
    channels: int = typer.Option(3, help="3 for RGB, 1 for greyscale."),
    crop_fraction: float = typer.Option(
        1.0, help="Keep the central F x F of each image before resizing (0 < F <= 1; 1 keeps it all)."
    ),
    num_workers: int = typer.Option(1, help="Decoding processes."),
    shard_size: int = typer.Option(4096, help="Images per shard file."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help=f"Leave out images that cannot be read and list them in {BAD_IMAGES_NAME}."
    ),
    schema: Optional[str] = typer.Option(
        None, help=f"Decision tree ({sorted(SCHEMAS)}, or NAME:q1,q2); default: the one the catalog records."
    ),
    old_labelled_catalog: Optional[Path] = old_spelling("--labelled-catalog"),
    old_unlabelled_catalog: Optional[Path] = old_spelling("--unlabelled-catalog"),
    old_shard_dir: Optional[Path] = old_spelling("--shard-dir"),
    old_workers: Optional[int] = old_spelling("--workers"),
    old_eval_size: Optional[int] = old_spelling("--eval-size"),
) -> None:
    """Decode and resize every image once into uint8 shards (train / val / test / pool) plus a manifest."""
    labelled_catalog = required(
        renamed(labelled_catalog, old_labelled_catalog, "--labelled-catalog", "LABELLED_CATALOG"), "LABELLED_CATALOG"
    )
    unlabelled_catalog = required(
        renamed(unlabelled_catalog, old_unlabelled_catalog, "--unlabelled-catalog", "UNLABELLED_CATALOG"),
        "UNLABELLED_CATALOG",
    )
    shard_dir = required(renamed(out, old_shard_dir, "--shard-dir", "--out"), "--out SHARD_DIR")
    workers = renamed(None, old_workers, "--workers", "--num-workers") or num_workers
    val_size = required(renamed(val_size, old_eval_size, "--eval-size", "--val-size"), "--val-size N")
    try:
        check_crop_fraction(crop_fraction)
    except ValueError as error:
        fail(f"--crop-fraction: {error}")
    try:
        chosen = get_schema(schema) if schema is not None else None
    except KeyError as error:
        fail(str(error.args[0]))
    try:
        labelled, chosen = load_catalog(labelled_catalog, chosen, check_files=False)
        recorded = schema_spec_of(unlabelled_catalog)
        if schema is None and recorded is not None and recorded != chosen.name:
            fail(
                f"{labelled_catalog} records schema {chosen.name!r} but {unlabelled_catalog} records "
                f"{recorded!r}; use catalogs from one define-experiment run, or pass --schema"
            )
        unlabelled, _ = load_catalog(unlabelled_catalog, chosen, check_files=False)
    except CatalogError as error:
        fail(str(error))

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("decoding", total=None)

            def on_progress(n_done: int, n_total: int) -> None:
                bar.update(task, completed=n_done, total=n_total)

            summary = write_shards(
                labelled,
                unlabelled,
                shard_dir,
                chosen,
                val_size,
                test_size,
                size=size,
                channels=channels,
                crop_fraction=crop_fraction,
                shard_size=shard_size,
                max_labelled=max_labelled,
                max_unlabelled=max_unlabelled,
                workers=workers,
                skip_bad=skip_bad,
                progress=on_progress,
                sources={
                    "labelled_catalog": str(labelled_catalog.resolve()),
                    "unlabelled_catalog": str(unlabelled_catalog.resolve()),
                },
            )
    except (ShardError, CatalogError, FileExistsError, ValueError) as error:
        fail(str(error))

    counts = ", ".join(f"{n} {split}" for split, n in summary.counts.items())
    logger.info(
        "wrote %s: %s galaxies in %d shard files at %d px x %d channels, crop %g; %.0f images/s (%.1f s, workers=%d)",
        shard_dir, counts, summary.n_shards, size, channels, crop_fraction, summary.images_per_second,
        summary.seconds, workers,
    )
    if summary.n_bad:
        logger.warning(
            "skipped %d images that could not be read; they are listed in %s",
            summary.n_bad, shard_dir / BAD_IMAGES_NAME,
        )


@app.command("check-shards")
def check_shards_command(
    shard_dir: Optional[Path] = typer.Argument(None, help="Shard folder written by make-shards.", show_default=False),
    old_shard_dir: Optional[Path] = old_spelling("--shard-dir"),
) -> None:
    """Check that a shard folder is complete and its files match their recorded checksums."""
    shard_dir = required(renamed(shard_dir, old_shard_dir, "--shard-dir", "SHARD_DIR"), "SHARD_DIR")
    try:
        reader = ShardReader(shard_dir)
        reader.verify()
    except ShardError as error:
        fail(str(error))
    logger.info("%s is complete and intact: %s", shard_dir, reader.counts)


def warn_if_crop_differs(checkpoint: Path, crop_fraction: float) -> None:
    """Warn when a `zoobot train` checkpoint's shards were made with another --crop-fraction.

    `zoobot train --out RUN` writes RUN/metrics.json (with ``shard_dir``) beside
    RUN/checkpoints/*.ckpt; the crop is read from that folder's shard_config.json. Checkpoints
    from elsewhere (the loop, a moved run) are not checked. Raises ValueError for a crop
    fraction outside (0, 1].
    """
    check_crop_fraction(crop_fraction)  # a bad value is an error, not a difference
    metrics = Path(checkpoint).resolve().parent.parent / "metrics.json"
    try:
        trained = crop_fraction_of(read_config(json.loads(metrics.read_text())["shard_dir"]))
    except (OSError, ValueError, KeyError, TypeError):  # no record, or shards gone: nothing to compare
        return
    if trained != crop_fraction:
        logger.warning(
            "this model was trained on shards made with --crop-fraction %g (%s), but the catalog is "
            "decoded with --crop-fraction %g; pass --crop-fraction %g to show it the images it learned from",
            trained, metrics, crop_fraction, trained,
        )
