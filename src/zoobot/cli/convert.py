"""`zoobot convert FORMAT INPUT --out master_catalog.parquet`: public tables -> master catalog."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from zoobot.catalog import CatalogError
from zoobot.cli.app import app, fail
from zoobot.convert import (
    ConversionResult,
    convert_decals,
    convert_gz1,
    convert_gz2,
    convert_kaggle,
    convert_panoptes,
    write_conversion,
)

logger = logging.getLogger(__name__)

convert_app = typer.Typer(
    help="Convert Galaxy Zoo vote tables and Panoptes exports into a zoobot master catalog.",
    no_args_is_help=True,
)
app.add_typer(convert_app, name="convert")

OUT = typer.Option(..., "--out", help="Master catalog to write (.parquet).")
IMAGES = typer.Option(None, "--images", help="Folder holding the images.")
NO_IMAGES = typer.Option(False, "--no-images", help="Write a votes-only catalog (file_loc empty).")
DROP_MISSING = typer.Option(
    False, "--drop-missing-images", help="Leave out galaxies without an image (reported) instead of failing."
)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace --out if it exists.")


def print_report(result: ConversionResult, out: Path) -> None:
    report = result.report
    console = Console(soft_wrap=True)  # long lines stay whole in files, pipes and CI logs
    console.print(f"zoobot convert {report.source} {report.input_path}", highlight=False)
    table = Table()
    table.add_column(report.unit)
    table.add_column("count", justify="right")
    table.add_column("examples")
    table.add_row("read", str(report.n_read), "")
    table.add_row("kept", str(report.n_kept), "")
    for dropped in report.dropped:
        more = ", ..." if dropped.count > len(dropped.examples) else ""
        table.add_row(f"dropped: {dropped.reason}", str(dropped.count), ", ".join(dropped.examples) + more)
    if not report.dropped:
        table.add_row("dropped", "0", "")
    console.print(table)
    for note in report.notes:
        console.print(f"  note: {note}", highlight=False)
    console.print(
        f"wrote {report.n_galaxies} galaxies (schema {result.schema.name}) to {out} "
        f"in {report.seconds:.2f} s",
        highlight=False,
    )


def run_conversion(convert: Callable[..., ConversionResult], out: Path, overwrite: bool, **kwargs) -> None:
    """Check --out, convert, write atomically and print the report; user errors exit 1."""
    if out.suffix.lower() != ".parquet":
        fail(f"--out {out}: expected a .parquet path")
    if out.exists() and not overwrite:
        fail(f"--out {out} already exists; pass --overwrite to replace it, or choose another path")
    try:
        result = convert(**kwargs)
        write_conversion(result, out)
    except CatalogError as error:  # ConversionError is a CatalogError
        fail(str(error))
    print_report(result, out)


def images_or_none(images: Optional[Path], no_images: bool) -> Optional[Path]:
    if images is None and not no_images:
        fail("say where the images are with --images DIR, or pass --no-images for a votes-only catalog")
    if images is not None and no_images:
        fail("--images and --no-images contradict each other; pass one")
    return images


def missing_policy(drop: bool) -> str:
    return "drop" if drop else "error"


@convert_app.command("gz1")
def gz1_command(
    labels: Path = typer.Argument(..., help="GZ1 class table: image_file, OBJID, CLASS[, class_name]."),
    out: Path = OUT,
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder that image_file paths are relative to (default: the table's folder)."
    ),
    no_images: bool = NO_IMAGES,
    smooth_classes: str = typer.Option(
        "0", help="GZ1 class codes that vote smooth, comma-separated (0 elliptical)."
    ),
    featured_classes: str = typer.Option(
        "1,2,3", help="GZ1 class codes that vote featured (1 clockwise, 2 anticlockwise spiral, 3 edge-on)."
    ),
    drop_missing_images: bool = DROP_MISSING,
    overwrite: bool = OVERWRITE,
) -> None:
    """Galaxy Zoo 1 classes -> smooth-or-featured master catalog, one vote per galaxy; other classes dropped."""
    from zoobot.convert.gz1 import parse_classes

    try:
        smooth = parse_classes(smooth_classes, "--smooth-classes")
        featured = parse_classes(featured_classes, "--featured-classes")
    except CatalogError as error:
        fail(str(error))
    run_conversion(
        convert_gz1, out, overwrite,
        labels_path=labels, images_dir=images, no_images=no_images, smooth_classes=smooth,
        featured_classes=featured, missing_images=missing_policy(drop_missing_images),
    )


@convert_app.command("gz2")
def gz2_command(
    table: Path = typer.Argument(..., help="GZ2 table (Hart 2016 / Willett 2013 layout), CSV."),
    out: Path = OUT,
    images: Optional[Path] = IMAGES,
    no_images: bool = NO_IMAGES,
    mapping: Optional[Path] = typer.Option(
        None, help="Hart's gz2_filename_mapping.csv (objid, sample, asset_id): images are {asset_id}.jpg."
    ),
    image_pattern: Optional[str] = typer.Option(
        None,
        help="Image file under --images, as a pattern over the table's columns, e.g. '{dr7objid}.jpg'. "
        "Default: '{asset_id}.jpg' with --mapping, else '{image_file}' if that column exists, else '{id_str}.jpg'.",
    ),
    id_column: Optional[str] = typer.Option(None, help="Id column (default: dr7objid, else objid)."),
    debiased: bool = typer.Option(False, "--debiased", help="Keep the debiased fractions as extra columns."),
    drop_missing_images: bool = DROP_MISSING,
    overwrite: bool = OVERWRITE,
) -> None:
    """Galaxy Zoo 2 vote counts (tNN_<question>_aMM_<answer>_count) -> gz2 master catalog."""
    run_conversion(
        convert_gz2, out, overwrite,
        table_path=table, images_dir=images_or_none(images, no_images), mapping_path=mapping,
        image_pattern=image_pattern, id_column=id_column, debiased=debiased,
        missing_images=missing_policy(drop_missing_images),
    )


@convert_app.command("decals")
def decals_command(
    table: Path = typer.Argument(..., help="gz_decals_volunteers_5.csv or gz_decals_volunteers_1_and_2.csv."),
    out: Path = OUT,
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder searched recursively for {iauname}.png (the unpacked PNG release)."
    ),
    no_images: bool = NO_IMAGES,
    schema: Optional[str] = typer.Option(
        None, help="decals-dr5 or decals-dr12 (default: recognised from the columns)."
    ),
    image_suffix: str = typer.Option(".png", help="Image file suffix."),
    debiased: bool = typer.Option(False, "--debiased", help="Keep the debiased fractions as extra columns."),
    drop_missing_images: bool = DROP_MISSING,
    overwrite: bool = OVERWRITE,
) -> None:
    """GZ DECaLS volunteer votes ({question}_{answer}) -> decals-dr5 / decals-dr12 master catalog."""
    run_conversion(
        convert_decals, out, overwrite,
        table_path=table, images_dir=images_or_none(images, no_images), schema=schema,
        debiased=debiased, image_suffix=image_suffix, missing_images=missing_policy(drop_missing_images),
    )


@convert_app.command("kaggle")
def kaggle_command(
    table: Path = typer.Argument(..., help="Kaggle Galaxy Challenge training_solutions_rev1.csv."),
    out: Path = OUT,
    assumed_votes: int = typer.Option(
        ..., help="Volunteers assumed per galaxy for the pseudo-counts (GZ2 had about 40-50)."
    ),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of {GalaxyID}.jpg images."),
    no_images: bool = NO_IMAGES,
    image_pattern: str = typer.Option("{GalaxyID}.jpg", help="Image file under --images."),
    tree_tolerance: float = typer.Option(
        0.01, help="Allowed gap between a question's sum and the share of volunteers who reached it."
    ),
    drop_missing_images: bool = DROP_MISSING,
    overwrite: bool = OVERWRITE,
) -> None:
    """Kaggle ClassX.Y fractions -> gz2 per-question fractions and pseudo-counts (an approximation)."""
    run_conversion(
        convert_kaggle, out, overwrite,
        table_path=table, assumed_votes=assumed_votes, images_dir=images_or_none(images, no_images),
        image_pattern=image_pattern, tree_tolerance=tree_tolerance,
        missing_images=missing_policy(drop_missing_images),
    )


@convert_app.command("panoptes")
def panoptes_command(
    export: Path = typer.Argument(..., help="Panoptes classification export CSV."),
    task_map: Path = typer.Option(..., help="Task/answer map (.json/.yaml): see docs/converters.md."),
    out: Path = OUT,
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder of the images named by the task map's image_field."
    ),
    no_images: bool = NO_IMAGES,
    workflow_id: Optional[str] = typer.Option(None, help="Workflow to keep (default: the task map's)."),
    workflow_version: Optional[str] = typer.Option(
        None, help="Oldest workflow version to keep, e.g. 12.3 (compared as major, minor)."
    ),
    since: Optional[str] = typer.Option(None, help="Keep classifications created at or after this UTC date."),
    until: Optional[str] = typer.Option(None, help="Keep classifications created before this UTC date."),
    dedupe_users: bool = typer.Option(
        True, "--dedupe-users/--keep-repeat-classifications",
        help="Keep only each volunteer's first classification of a galaxy.",
    ),
    drop_missing_images: bool = DROP_MISSING,
    overwrite: bool = OVERWRITE,
) -> None:
    """Panoptes classifications -> vote counts per galaxy, de-duplicated and filtered."""
    run_conversion(
        convert_panoptes, out, overwrite,
        export_path=export, task_map=task_map, images_dir=images_or_none(images, no_images),
        workflow_id=workflow_id, min_workflow_version=workflow_version, since=since, until=until,
        dedupe_users=dedupe_users, missing_images=missing_policy(drop_missing_images),
    )
