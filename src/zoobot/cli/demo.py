"""`zoobot demo`: the whole pipeline on synthetic galaxies, active learning against random."""

import logging
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoobot.cli.app import app, quiet_lightning

logger = logging.getLogger(__name__)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )


@app.command("demo")
def demo_command(
    out_dir: Optional[Path] = typer.Option(None, help="Keep everything here (default: a temporary folder)."),
    n_galaxies: int = typer.Option(2000, help="Synthetic galaxies in the master catalog."),
    size: int = typer.Option(32, help="Image side in pixels."),
    initial_labelled: int = typer.Option(100, help="Galaxies labelled before the first iteration."),
    eval_size: int = typer.Option(200, help="Fixed evaluation galaxies."),
    iterations: int = typer.Option(5, help="Active-learning iterations per run."),
    subjects_per_iteration: int = typer.Option(100, help="Galaxies acquired per iteration."),
    epochs: int = typer.Option(8, help="Training epochs per iteration (each starts from the last model)."),
    question: str = typer.Option(
        "decals-dr5:smooth-or-featured", help="Schema spec to learn (the full tree: decals-dr5)."
    ),
    seed: int = typer.Option(42),
) -> None:
    """Synthesize galaxies with simulated votes, then run BALD and random acquisition and compare."""
    from zoobot.catalog import define_experiment, load_catalog, save_experiment
    from zoobot.cli.loop import build_instructions
    from zoobot.cli.report import print_curve
    from zoobot.loop.iteration import run_iteration
    from zoobot.reports import label_savings, learning_curve, plot_learning_curves
    from zoobot.schema import get_schema
    from zoobot.shards import write_shards
    from zoobot.synthetic import make_synthetic_catalog

    quiet_lightning()
    started = time.perf_counter()
    root = out_dir or Path(tempfile.mkdtemp(prefix="zoobot-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console = Console()
    schema = get_schema(question)

    with _progress() as bar:
        task = bar.add_task("synthesizing galaxies", total=n_galaxies)
        make_synthetic_catalog(
            n_galaxies, root / "synthetic", size=size, channels=3, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    catalog, _ = load_catalog(root / "synthetic" / "master_catalog.parquet", schema)
    simulation_size = n_galaxies - initial_labelled - eval_size
    experiment = define_experiment(catalog, schema, retirement=1, seed=seed, simulation_size=simulation_size)
    save_experiment(experiment, schema, root / "catalogs", {"source": "zoobot demo", "seed": seed})
    logger.info(
        "experiment: %d start labelled (%d of them for evaluation), %d hidden in the pool",
        len(experiment.simulation_labelled), eval_size, simulation_size,
    )

    with _progress() as bar:
        task = bar.add_task("writing shards", total=n_galaxies)
        write_shards(
            experiment.simulation_labelled, experiment.simulation_unlabelled, root / "shards", schema,
            eval_size=eval_size, size=size, channels=3,
            progress=lambda done, total=None: bar.update(task, completed=done),
        )

    runs = {"active": False, "baseline": True}
    for name, baseline in runs.items():
        build_instructions(
            root / "catalogs", root / "shards", root / name, baseline=baseline, warm_start=True, architecture="zoobot-2019",
            subjects_per_iteration=subjects_per_iteration, n_samples=10, epochs=epochs, batch_size=16, seed=seed,
        )
        for n in range(1, iterations + 1):
            metrics = run_iteration(root / name)
            logger.info(
                "%s iteration %d/%d: %d labelled, eval loss %.4f",
                name, n, iterations, metrics["n_labelled"], metrics["eval_loss"],
            )

    curves = {name: learning_curve(root / name) for name in runs}
    for name, curve in curves.items():
        print_curve(console, name, curve)
    savings = label_savings(curves["active"], curves["baseline"])
    if savings.active_labels is None:
        console.print(f"BALD did not reach random acquisition's final eval loss {savings.target:.4f} in this run")
    else:
        console.print(
            f"BALD reached random acquisition's final eval loss ({savings.target:.4f} at "
            f"{savings.baseline_labels} labels) with {savings.active_labels:.0f} labels: "
            f"{100 * savings.fraction_saved:.0f}% fewer"
        )
    plot = plot_learning_curves(curves, root / "learning_curves.png")
    console.print(f"done in {time.perf_counter() - started:.0f} s; everything is in {root} (plot: {plot})")
