"""`zoobot demo`: the whole pipeline on synthetic galaxies, active learning against random."""

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from zoobot.catalog import define_experiment, load_catalog, save_experiment
from zoobot.cli.app import app, fail, old_spelling, renamed
from zoobot.cli.compare import prepare_runs
from zoobot.cli.report import report_runs
from zoobot.cli.side_by_side import progress_bar, run_side_by_side
from zoobot.loop.experiment import plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
from zoobot.schema import get_schema
from zoobot.shards import write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

logger = logging.getLogger(__name__)


@app.command("demo")
def demo_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Keep everything in this new folder (default: a temporary one)."),
    n_galaxies: int = typer.Option(2000, help="Synthetic galaxies in the master catalog."),
    size: int = typer.Option(32, help="Image side in pixels."),
    initial_labelled: int = typer.Option(100, help="Galaxies labelled before the first iteration."),
    val_size: int = typer.Option(100, help="Validation galaxies (early stopping, checkpoint choice)."),
    test_size: int = typer.Option(200, help="Held-out test galaxies: every reported number comes from them."),
    iterations: int = typer.Option(5, help="Active-learning iterations per run."),
    subjects_per_iteration: int = typer.Option(100, help="Galaxies acquired per iteration."),
    epochs: int = typer.Option(8, help="Training epochs per iteration (each starts from the last model)."),
    schema: str = typer.Option(
        "decals-dr5:smooth-or-featured", help="Decision tree to learn, NAME or NAME:q1,q2 (the full tree: decals-dr5)."
    ),
    seed: int = typer.Option(42, help="Seed of the galaxies and the split; the runs use seed, seed + 1, ..."),
    seeds: int = typer.Option(3, help="Paired repeats of BALD and random acquisition (3 gives a savings interval)."),
    old_out_dir: Optional[Path] = old_spelling("--out-dir"),
    old_question: Optional[str] = old_spelling("--question"),
    old_eval_size: Optional[int] = old_spelling("--eval-size"),
) -> None:
    """Synthesize galaxies with simulated votes, then run BALD and random acquisition with paired
    seeds, side by side, and report the label savings on the held-out test split."""
    out_dir = renamed(out, old_out_dir, "--out-dir", "--out")
    question = renamed(None, old_question, "--question", "--schema") or schema

    val_size = renamed(None, old_eval_size, "--eval-size", "--val-size") or val_size
    held_out = val_size + test_size
    if n_galaxies <= initial_labelled + held_out:
        fail(
            f"--n-galaxies ({n_galaxies}) must exceed --initial-labelled + --val-size + --test-size "
            f"({initial_labelled} + {val_size} + {test_size}), so that some galaxies are left for the pool"
        )
    if out_dir is not None and out_dir.exists() and any(out_dir.iterdir()):
        fail(f"{out_dir} is not empty; choose a new --out folder")
    started = time.perf_counter()
    root = out_dir or Path(tempfile.mkdtemp(prefix="zoobot-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console = Console(soft_wrap=True)  # long lines stay whole in files, pipes and CI logs
    try:
        schema = get_schema(question)
    except KeyError as error:
        fail(str(error.args[0]))

    with progress_bar() as bar:
        task = bar.add_task("synthesizing galaxies", total=n_galaxies)
        make_synthetic_catalog(
            n_galaxies, root / "synthetic", size=size, channels=3, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    catalog, _ = load_catalog(root / "synthetic" / "master_catalog.parquet", schema)
    simulation_size = n_galaxies - initial_labelled - held_out
    experiment = define_experiment(catalog, schema, retirement=1, seed=seed, simulation_size=simulation_size)
    save_experiment(experiment, schema, root / "catalogs", {"source": "zoobot demo", "seed": seed})
    logger.info(
        "experiment: %d start labelled, %d validation and %d test galaxies, %d hidden in the pool",
        initial_labelled, val_size, test_size, simulation_size,
    )

    with progress_bar() as bar:
        task = bar.add_task("writing shards", total=n_galaxies)
        write_shards(
            experiment.simulation_labelled, experiment.simulation_unlabelled, root / "shards", schema,
            val_size=val_size, test_size=test_size, size=size, channels=3,
            progress=lambda done, total=None: bar.update(task, completed=done),
        )

    train = TrainSettings(architecture="zoobot-2019", epochs=epochs, batch_size=16, progress_bar=False, devices="1")

    def make_plan(acquisition: str, run_seed: int):
        return plan_experiment(
            root / "catalogs", root / "shards", model=ModelSpec(replace(train, seed=run_seed), warm_start=True),
            acquisition=AcquisitionSpec(function=acquisition, n_samples=10),
            subjects_per_iteration=subjects_per_iteration, seed=run_seed,
        )

    runs = root / "runs"
    experiments = prepare_runs(runs, ["bald", "random"], range(seed, seed + seeds), make_plan, False, iterations)
    run_side_by_side(experiments, iterations)
    report_runs(console, [runs], [], "test_loss", root / "learning_curves.png", page=root / "report.html")
    console.print(f"done in {time.perf_counter() - started:.0f} s; everything is in {root}")
