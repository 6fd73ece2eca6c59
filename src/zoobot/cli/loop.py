"""Active-learning commands: create-instructions, run-iteration, run, simulate."""

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from zoobot.cli.app import app, fail, quiet_lightning
from zoobot.loop.layout import LEDGER, completed_iterations, is_complete, iteration_dir, next_iteration

logger = logging.getLogger(__name__)

TEST_SETTINGS = {  # --test: a quick run to check the plumbing end to end
    "architecture": "zoobot-2019",
    "epochs": 2,
    "n_samples": 2,
    "subjects_per_iteration": 10,
    "pool_size_per_iteration": 200,
    "batch_size": 32,
}


def build_instructions(
    catalog_dir: Path,
    shard_dir: Path,
    experiment_dir: Path,
    test: bool = False,
    baseline: bool = False,
    warm_start: bool = False,
    oracle: str = "simulated",
    architecture: str = "efficientnet_b0",
    subjects_per_iteration: int = 100,
    pool_size_per_iteration: Optional[int] = None,
    n_samples: int = 15,
    expected_votes: int = 40,
    epochs: int = 20,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    patience: int = 5,
    acquisition: str = "bald",
    selection: str = "top-k",
    reveal_votes: Optional[int] = None,
    delay: int = 0,
    duplicate_rate: float = 0.0,
    precision: str = "32-true",
    seed: int = 42,
) -> Path:
    """Write the instructions and a fresh ledger; returns the experiment dir."""
    from zoobot.loop.instructions import AcquisitionSpec, Instructions, ModelSpec, OracleSpec
    from zoobot.loop.iteration import create_experiment
    from zoobot.shards import ShardReader
    from zoobot.training_settings import TrainSettings

    if oracle != "simulated":
        fail(f"--oracle {oracle!r} is not available yet; only 'simulated' is implemented")
    oracle_path = catalog_dir / "simulation_context" / "oracle.parquet"
    if not oracle_path.exists():
        fail(
            f"{oracle_path} is missing: a simulated oracle needs an experiment made with "
            "`zoobot define-experiment --simulation-size M`"
        )
    if test:
        architecture = TEST_SETTINGS["architecture"]
        epochs = min(epochs, TEST_SETTINGS["epochs"])
        n_samples = TEST_SETTINGS["n_samples"]
        subjects_per_iteration = min(subjects_per_iteration, TEST_SETTINGS["subjects_per_iteration"])
        pool_size_per_iteration = min(pool_size_per_iteration or 10**9, TEST_SETTINGS["pool_size_per_iteration"])
        batch_size = TEST_SETTINGS["batch_size"]
    schema = ShardReader(shard_dir).schema_spec
    train = TrainSettings(
        architecture=architecture, batch_size=batch_size, epochs=epochs, learning_rate=learning_rate,
        patience=patience, precision=precision, seed=seed, progress_bar=False,
        devices="1",  # "auto" on a multi-GPU node would relaunch this whole command once per rank
    )
    model_spec = ModelSpec(train=train, warm_start=warm_start)
    acquisition_spec = AcquisitionSpec(
        function="random" if baseline else acquisition, selection=selection, n_samples=n_samples,
        expected_votes=expected_votes,
    )
    instructions = Instructions(
        catalog_dir=str(catalog_dir.resolve()), shard_dir=str(shard_dir.resolve()), schema=schema,
        subjects_per_iteration=subjects_per_iteration, pool_size_per_iteration=pool_size_per_iteration,
        epochs=epochs, learning_rate=learning_rate, seed=seed,
        oracle=OracleSpec(
            kind=oracle, oracle_path=str(oracle_path.resolve()), reveal_votes=reveal_votes,
            delay=delay, duplicate_rate=duplicate_rate, seed=seed,
        ),
    )
    try:
        create_experiment(experiment_dir, model_spec, acquisition_spec, instructions)
    except (FileExistsError, ValueError) as error:
        fail(str(error))
    logger.info("instructions saved in %s", experiment_dir / "instructions")
    return experiment_dir


# Options shared by create-instructions and simulate: the plan of an experiment.
TEST = typer.Option(False, help="Shrink everything for a quick plumbing check.")
BASELINE = typer.Option(False, help="Acquire at random (the baseline).")
WARM_START = typer.Option(False, help="Start each iteration from the previous iteration's model.")
ORACLE = typer.Option("simulated", help="simulated | panoptes | web")
ARCHITECTURE = typer.Option("efficientnet_b0", help="A timm name, or zoobot-2019 (small, fast on CPU).")
SUBJECTS = typer.Option(100, help="Galaxies acquired per iteration.")
POOL_SIZE = typer.Option(None, help="Score at most this many pool galaxies per iteration (default all).")
N_SAMPLES = typer.Option(15, help="MC dropout samples per galaxy.")
EXPECTED_VOTES = typer.Option(40, help="N in BALD: votes a newly labelled galaxy will get (1 for GZ1-style labels).")
EPOCHS = typer.Option(20, help="Default epochs per iteration.")
LEARNING_RATE = typer.Option(1e-3, help="Default learning rate per iteration.")
BATCH_SIZE = typer.Option(64, help="Training batch size; small labelled sets need small batches.")
PATIENCE = typer.Option(5, help="Early stopping: epochs without a better eval loss.")
ACQUISITION = typer.Option("bald", help="bald | entropy | random")
SELECTION = typer.Option("top-k", help="top-k | power (stochastic power sampling, for large batches)")
REVEAL_VOTES = typer.Option(None, help="The simulated oracle reveals only this many votes per galaxy.")
DELAY = typer.Option(0, help="Simulated votes arrive this many iterations late.")
DUPLICATE_RATE = typer.Option(0.0, help="Fraction of simulated deliveries handed over twice.")
PRECISION = typer.Option("32-true", help="Training precision, e.g. bf16-mixed.")
SEED = typer.Option(42, help="Seed of training, acquisition ties and the simulated oracle.")


@app.command("create-instructions")
def create_instructions_command(
    catalog_dir: Path = typer.Option(..., help="Folder made by define-experiment (with simulation_context/)."),
    shard_dir: Path = typer.Option(..., help="Shards made from the simulation's catalogs."),
    experiment_dir: Path = typer.Option(..., help="New folder for instructions, ledger and iterations."),
    test: bool = TEST,
    baseline: bool = BASELINE,
    warm_start: bool = WARM_START,
    oracle: str = ORACLE,
    architecture: str = ARCHITECTURE,
    subjects_per_iteration: int = SUBJECTS,
    pool_size_per_iteration: Optional[int] = POOL_SIZE,
    n_samples: int = N_SAMPLES,
    expected_votes: int = EXPECTED_VOTES,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    patience: int = PATIENCE,
    acquisition: str = ACQUISITION,
    selection: str = SELECTION,
    reveal_votes: Optional[int] = REVEAL_VOTES,
    delay: int = DELAY,
    duplicate_rate: float = DUPLICATE_RATE,
    precision: str = PRECISION,
    seed: int = SEED,
) -> None:
    """Save the model, acquisition and oracle specs, and start the ledger."""
    build_instructions(**locals())


def _run_one(experiment_dir: Path, epochs: Optional[int], learning_rate: Optional[float]) -> dict:
    from zoobot.loop.iteration import run_iteration

    quiet_lightning()
    try:
        metrics = run_iteration(experiment_dir, epochs=epochs, learning_rate=learning_rate)
    except (FileNotFoundError, ValueError, NotImplementedError, RuntimeError) as error:
        fail(str(error))
    except KeyError as error:
        fail(str(error.args[0]))
    summary = {k: metrics.get(k) for k in ("iteration", "n_labelled", "votes_used", "eval_loss", "eval_mae", "n_acquired")}
    logger.info("%s", json.dumps(summary))
    return metrics


@app.command("run-iteration")
def run_iteration_command(
    instructions_dir: Path = typer.Option(..., help="EXPERIMENT/instructions"),
    this_iteration_dir: Path = typer.Option(..., help="EXPERIMENT/iterations/iteration_NNN to create"),
    previous_iteration_dir: Optional[Path] = typer.Option(None, help="The complete iteration before it."),
    epochs: Optional[int] = typer.Option(None, help="Override the epochs for this iteration."),
    learning_rate: Optional[float] = typer.Option(None, help="Override the learning rate for this iteration."),
) -> None:
    """Run one iteration, named by its folder, as in the original design."""
    experiment_dir = instructions_dir.parent
    expected = next_iteration(experiment_dir)
    if this_iteration_dir.resolve() != iteration_dir(experiment_dir, expected).resolve():
        fail(f"the next iteration of {experiment_dir} is {iteration_dir(experiment_dir, expected)}, not {this_iteration_dir}")
    if expected > 1 and (previous_iteration_dir is None or not is_complete(previous_iteration_dir)):
        fail(f"--previous-iteration-dir must be the complete {iteration_dir(experiment_dir, expected - 1)}")
    _run_one(experiment_dir, epochs, learning_rate)


@app.command("run")
def run_command(
    experiment_dir: Path = typer.Argument(..., help="An experiment made by create-instructions or simulate."),
    iterations: int = typer.Option(1, help="How many iterations to run."),
    epochs: Optional[int] = typer.Option(None),
    learning_rate: Optional[float] = typer.Option(None),
) -> None:
    """Run the next iteration(s), finishing an interrupted one first."""
    for _ in range(iterations):
        _run_one(experiment_dir, epochs, learning_rate)


@app.command("simulate")
def simulate_command(
    catalog_dir: Path = typer.Argument(..., help="Folder made by define-experiment --simulation-size."),
    shard_dir: Path = typer.Argument(..., help="Shards of the simulation's catalogs."),
    experiment_dir: Path = typer.Argument(..., help="Experiment folder (created, or resumed if it exists)."),
    iterations: int = typer.Option(5, help="Total iterations the experiment should reach."),
    test: bool = TEST,
    baseline: bool = BASELINE,
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
    acquisition: str = ACQUISITION,
    selection: str = SELECTION,
    reveal_votes: Optional[int] = REVEAL_VOTES,
    delay: int = DELAY,
    duplicate_rate: float = DUPLICATE_RATE,
    precision: str = PRECISION,
    seed: int = SEED,
) -> None:
    """Create instructions (unless the experiment exists) and run it to N iterations.

    The plan options apply only when the experiment is created; a rerun resumes it as planned.
    """
    plan = dict(locals())
    del plan["iterations"]
    if not (experiment_dir / LEDGER).exists():
        build_instructions(**plan)
    while len(completed_iterations(experiment_dir)) < iterations:
        _run_one(experiment_dir, None, None)
    logger.info("%d iterations complete; metrics in %s", iterations, experiment_dir / "metrics.csv")
