"""`zoobot compare`: K paired seeds of several acquisition functions on the same splits, side by side."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import typer

from zoobot.acquisition import list_acquisitions
from zoobot.cli.app import app, fail
from zoobot.cli.loop import (
    ARCHITECTURE,
    BATCH_SIZE,
    DELAY,
    DUPLICATE_RATE,
    EPOCHS,
    EXPECTED_VOTES,
    LAYER_DECAY,
    LEARNING_RATE,
    N_SAMPLES,
    PATIENCE,
    POOL_SIZE,
    PRECISION,
    PRETRAINED,
    QUICK_TEST,
    RANDOM_FRACTION,
    REVEAL_VOTES,
    SELECTION,
    SUBJECTS,
    TRAINABLE_BLOCKS,
    WARM_START,
    create,
    plan_from_options,
    resume_with,
)
from zoobot.cli.side_by_side import run_side_by_side
from zoobot.files import write_json_atomic
from zoobot.loop.instructions import Plan
from zoobot.loop.layout import COMPARISON_FILE, LEDGER

logger = logging.getLogger(__name__)


def run_name(acquisition: str, seed: int) -> str:
    return f"{acquisition}_seed{seed}"


@app.command("compare")
def compare_command(
    catalog_dir: Path = typer.Argument(..., help="Folder made by define-experiment --simulation-size."),
    shard_dir: Path = typer.Argument(..., help="Shards of the simulation's catalogs (with val and test splits)."),
    out: Path = typer.Argument(..., help="Folder for the runs (created, or resumed if it exists)."),
    acquisitions: str = typer.Option(
        "bald,random", help=f"Comma-separated acquisition functions to compare: {', '.join(list_acquisitions())}."
    ),
    seeds: int = typer.Option(3, help="Paired repeats: every acquisition runs with each seed."),
    seed: int = typer.Option(42, help="The first seed; the repeats use seed, seed + 1, ..."),
    total_iterations: int = typer.Option(5, help="Iterations each run should have when the command ends."),
    parallel: Optional[int] = typer.Option(None, help="Runs at once (default: one per CPU core)."),
    quick_test: bool = QUICK_TEST,
    warm_start: bool = WARM_START,
    architecture: str = ARCHITECTURE,
    subjects_per_iteration: int = SUBJECTS,
    pool_size_per_iteration: Optional[int] = POOL_SIZE,
    n_samples: int = N_SAMPLES,
    expected_votes: int = EXPECTED_VOTES,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    patience: int = PATIENCE,
    pretrained: Optional[Path] = PRETRAINED,
    trainable_blocks: Optional[int] = TRAINABLE_BLOCKS,
    layer_decay: float = LAYER_DECAY,
    selection: str = SELECTION,
    random_fraction: float = RANDOM_FRACTION,
    reveal_votes: Optional[int] = REVEAL_VOTES,
    delay: Optional[int] = DELAY,
    duplicate_rate: Optional[float] = DUPLICATE_RATE,
    precision: str = PRECISION,
    override: bool = typer.Option(
        False, "--override", help="On a rerun, apply plan options that differ from the saved plans."
    ),
) -> None:
    """Run every acquisition with each of K seeds (the same seeds for each, so runs pair up).

    All runs share the catalogs, shards (train / val / test) and oracle settings; seed s sets
    the weights, shuffling and the oracle's draws of every run with that seed. Rerun the same
    command to resume. Then `zoobot report OUT` compares them.
    """
    names = [name.strip() for name in acquisitions.split(",") if name.strip()]
    unknown = [name for name in names if name not in list_acquisitions()]
    if unknown or len(set(names)) != len(names) or len(names) < 1:
        fail(f"--acquisitions: expected distinct names from {list(list_acquisitions())}, got {acquisitions!r}")
    if seeds < 1:
        fail(f"--seeds: expected at least 1, got {seeds}")
    if total_iterations < 1:
        fail(f"--total-iterations: expected at least 1, got {total_iterations}")
    options = dict(locals())
    for name in ("catalog_dir", "shard_dir", "out", "acquisitions", "seeds", "seed", "total_iterations",
                 "parallel", "override", "names", "unknown"):
        del options[name]

    def make_plan(acquisition: str, run_seed: int) -> Plan:
        return plan_from_options(
            catalog_dir, shard_dir, **options, baseline=False, acquisition=acquisition, oracle="simulated",
            seed=run_seed,
        )

    experiments = prepare_runs(out, names, range(seed, seed + seeds), make_plan, override, total_iterations)
    run_side_by_side(experiments, total_iterations, parallel)
    logger.info("%d runs complete in %s; compare them with `zoobot report %s`", len(experiments), out, out)


def prepare_runs(
    out: Path, acquisitions: list[str], seeds, make_plan: Callable[[str, int], Plan], override: bool,
    total_iterations: int,
) -> list[Path]:
    """Create (or check, to resume) one experiment per acquisition and seed in ``out``; list them
    in ``out/comparison.json``. Returns the experiment folders."""
    runs = []
    for run_seed in seeds:
        for acquisition in acquisitions:
            plan = make_plan(acquisition, run_seed)
            experiment = out / run_name(acquisition, run_seed)
            if (experiment / LEDGER).exists():
                resume_with(experiment, plan, override)
            else:
                out.mkdir(parents=True, exist_ok=True)
                create(experiment, plan)
            runs.append({"acquisition": acquisition, "seed": run_seed, "folder": experiment.name})
    write_json_atomic(out / COMPARISON_FILE, {"runs": runs, "total_iterations": total_iterations})
    return [out / run["folder"] for run in runs]
