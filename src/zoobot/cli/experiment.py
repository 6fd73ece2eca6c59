"""`zoobot define-experiment`: master catalog -> labelled / unlabelled catalogs (+ simulation)."""

import logging
from pathlib import Path
from typing import Optional

import typer

from zoobot.catalog import CatalogError, define_experiment, load_catalog, save_experiment
from zoobot.cli.app import app, fail, old_spelling, renamed, required
from zoobot.schema import SCHEMAS, Schema, get_schema

logger = logging.getLogger(__name__)


def resolve_schema(schema: Optional[str], questions: list[str]) -> Optional[Schema]:
    """--schema NAME[:q1,q2] and/or --question Q -> a Schema (None: read it from the catalog)."""
    try:
        if schema is not None:
            resolved = get_schema(schema)
            return resolved.subset(questions) if questions else resolved
        if not questions:
            return None
        if len(questions) == 1 and questions[0] in SCHEMAS:
            return SCHEMAS[questions[0]]
    except KeyError as error:
        fail(str(error.args[0]))
    fail(
        f"--question {questions} needs --schema to say which tree it comes from; "
        f"schemas: {sorted(SCHEMAS)}"
    )


@app.command("define-experiment")
def define_experiment_command(
    master_catalog: Optional[Path] = typer.Argument(
        None, help="CSV or Parquet: id_str, file_loc, vote counts.", show_default=False
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="New folder for the experiment catalogs.", show_default=False
    ),
    schema: Optional[str] = typer.Option(
        None, help=f"Decision tree: one of {sorted(SCHEMAS)}, or NAME:question[,question]."
    ),
    question: list[str] = typer.Option(
        [], help="Keep only this question (repeatable), e.g. --question smooth-or-featured."
    ),
    retirement: int = typer.Option(1, help="Minimum votes for a galaxy to count as labelled."),
    seed: int = typer.Option(42, help="Shuffle seed."),
    simulation_size: Optional[int] = typer.Option(
        None, help="Hide the votes of this many labelled galaxies for a simulated oracle."
    ),
    no_images: bool = typer.Option(
        False, "--no-images", help="The catalog has votes but no images (e.g. for oracle studies)."
    ),
    old_master_catalog: Optional[Path] = old_spelling("--master-catalog"),
    old_save_dir: Optional[Path] = old_spelling("--save-dir"),
) -> None:
    """Shuffle a master catalog and split it into labelled and unlabelled catalogs."""
    master_catalog = required(
        renamed(master_catalog, old_master_catalog, "--master-catalog", "MASTER_CATALOG"), "MASTER_CATALOG"
    )
    save_dir = required(renamed(out, old_save_dir, "--save-dir", "--out"), "--out FOLDER")
    chosen = resolve_schema(schema, question)
    try:
        catalog, chosen = load_catalog(master_catalog, chosen, check_files=not no_images)
        experiment = define_experiment(catalog, chosen, retirement, seed, simulation_size)
        settings = {
            "master_catalog": str(master_catalog.resolve()),
            "retirement": retirement,
            "seed": seed,
            "simulation_size": simulation_size,
        }
        save_experiment(experiment, chosen, save_dir, settings)
    except (CatalogError, FileExistsError) as error:
        fail(str(error))
    except KeyError as error:  # a schema name the catalog records but this version lacks
        fail(str(error.args[0]))
    logger.info(
        "schema %s: %d labelled, %d unlabelled galaxies -> %s",
        chosen.name, len(experiment.labelled), len(experiment.unlabelled), save_dir,
    )
    if experiment.oracle is not None:
        logger.info(
            "simulation: %d galaxies start labelled, %d have hidden votes (the pool)",
            len(experiment.simulation_labelled), len(experiment.oracle),
        )
