"""`zoobot synthesize`: synthetic galaxies with known morphology and simulated volunteer votes."""

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from zoobot.cli.app import app, fail, old_spelling, renamed, required
from zoobot.files import atomic_path
from zoobot.schema import SCHEMAS, get_schema
from zoobot.synthetic import (
    galaxy_streams,
    make_synthetic_catalog,
    render,
    sample_morphology,
    summarize,
    tile_images,
)

logger = logging.getLogger(__name__)


def save_preview(path: Path, n_galaxies: int, size: int, channels: int, seed: int) -> None:
    """A grid PNG of the first galaxies of this seed, as the catalog has them."""
    from PIL import Image

    images = []
    for index in range(n_galaxies):
        morph_rng, image_rng, _ = galaxy_streams(seed, index)
        images.append(render(sample_morphology(morph_rng), size, channels, image_rng))
    grid = tile_images(images, n_columns=min(8, n_galaxies))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid[..., 0] if channels == 1 else grid).save(tmp, format="PNG")


@app.command("synthesize")
def synthesize_command(
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for images/ and master_catalog.parquet.", show_default=False
    ),
    n_galaxies: int = typer.Option(2000, min=1, help="Number of galaxies."),
    size: int = typer.Option(64, min=16, help="Image size in pixels."),
    channels: int = typer.Option(3, help="3 (colour, z/r/g as RGB) or 1 (greyscale)."),
    seed: int = typer.Option(0, help="Galaxy i is the same for a seed, whatever --n-galaxies."),
    schema: str = typer.Option(
        "decals-dr5", help=f"Decision tree for the votes: one of {sorted(SCHEMAS)}."
    ),
    volunteers: float = typer.Option(40.0, min=1.0, help="Mean volunteers per galaxy (Poisson)."),
    preview: Optional[Path] = typer.Option(
        None, help="Also save a grid PNG of the first 32 galaxies."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing master_catalog.parquet."),
    old_out_dir: Optional[Path] = old_spelling("--out-dir"),
) -> None:
    """Render synthetic galaxies and simulate volunteer votes into a master catalog."""
    out_dir = required(renamed(out, old_out_dir, "--out-dir", "--out"), "--out FOLDER")
    if channels not in (1, 3):
        fail(f"--channels: expected 1 or 3, got {channels}")
    try:
        chosen = get_schema(schema)
    except KeyError as error:
        fail(str(error.args[0]))
    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("rendering galaxies", total=n_galaxies)
            catalog = make_synthetic_catalog(
                n_galaxies, out_dir, size=size, channels=channels, seed=seed, schema=chosen,
                progress=lambda done, total: bar.update(task, completed=done),
                n_volunteers=volunteers, overwrite=overwrite,
            )
    except (FileExistsError, ValueError) as error:
        fail(str(error))
    summary = summarize(catalog, chosen)
    logger.info("wrote %d galaxies (%d px, %d channels) -> %s", len(catalog), size, channels,
                out_dir / "master_catalog.parquet")
    logger.info(
        "true kinds: %.1f%% smooth, %.1f%% featured, %.1f%% artifact; "
        "%.1f volunteers per galaxy on average",
        100 * summary["fraction_smooth"], 100 * summary["fraction_featured"],
        100 * summary["fraction_artifact"], summary["mean_volunteers"],
    )
    if preview is not None:
        save_preview(preview, min(32, n_galaxies), size, channels, seed)
        logger.info("preview grid -> %s", preview)
