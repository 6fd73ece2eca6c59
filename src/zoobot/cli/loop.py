"""Active-learning commands: create-instructions, run-iteration, run, simulate, status."""

import json
import logging
import re
import warnings
from datetime import timedelta
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from zoobot.acquisition import STRATEGIES, list_acquisitions
from zoobot.checks import SettingsError
from zoobot.cli.app import app, fail, old_spelling, quiet_lightning, renamed, required
from zoobot.loop.experiment import create_experiment, override_plan, plan_differences, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec, Plan, load_instructions
from zoobot.loop.layout import (
    INSTRUCTIONS_DIR,
    LEDGER,
    completed_iterations,
    is_complete,
    iteration_dir,
    next_iteration,
)
from zoobot.oracles import list_oracles, oracle_class
from zoobot.training_settings import TrainSettings

logger = logging.getLogger(__name__)


def plan_from_options(
    catalog_dir: Path, shard_dir: Path, *, quick_test: bool, baseline: bool, warm_start: bool, oracle: str,
    architecture: str, subjects_per_iteration: int, pool_size_per_iteration: Optional[int], n_samples: int,
    expected_votes: Optional[int], epochs: int, learning_rate: float, batch_size: int, patience: int, acquisition: str,
    selection: str, reveal_votes: Optional[int], delay: Optional[int], duplicate_rate: Optional[float],
    precision: str, seed: int, pretrained: Optional[Path] = None, trainable_blocks: Optional[int] = None,
    layer_decay: float = 1.0, oracle_config: Optional[Path] = None, votes_needed: Optional[int] = None,
    accelerator: str = "auto", devices: str = "1", strategy: str = "auto", num_nodes: int = 1,
    random_fraction: float = 0.0,
) -> Plan:
    """The command line's plan options -> a checked Plan (nothing written); bad values exit 1."""
    if pretrained is not None and not Path(pretrained).is_file():
        fail(f"--pretrained: {pretrained} does not exist; give a zoobot checkpoint or a .safetensors/.pth weights file")
    given = {"reveal_votes": reveal_votes, "delay": delay, "duplicate_rate": duplicate_rate,
             "votes_needed": votes_needed}
    oracle_options = {name: value for name, value in given.items() if value is not None}
    try:
        accepted = {f.name for f in fields(oracle_class(oracle).Settings)}
        for name in oracle_options:
            if name not in accepted:
                fail(f"--{name.replace('_', '-')} does not apply to --oracle {oracle}")
        if oracle_config is not None:
            oracle_options.update(read_oracle_config(oracle_config, oracle, accepted))
        train = TrainSettings(
            architecture=architecture, batch_size=batch_size, epochs=epochs, learning_rate=learning_rate,
            patience=patience, precision=precision, seed=seed, progress_bar=False,
            pretrained=None if pretrained is None else str(Path(pretrained).resolve()),
            trainable_blocks=trainable_blocks, layer_decay=layer_decay,
            accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        )  # more than one device or node: the train step runs as its own process group (loop/train_process.py)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = plan_experiment(
                catalog_dir, shard_dir,
                model=ModelSpec(train=train, warm_start=warm_start),
                acquisition=AcquisitionSpec(
                    function="random" if baseline else acquisition, selection=selection, n_samples=n_samples,
                    expected_votes=expected_votes, random_fraction=random_fraction,
                ),
                oracle=oracle, oracle_options=oracle_options, subjects_per_iteration=subjects_per_iteration,
                pool_size_per_iteration=pool_size_per_iteration, seed=seed, quick_test=quick_test,
            )
    except (ValueError, FileNotFoundError) as error:  # SettingsError and ShardError are ValueErrors
        fail(str(error))
    for warning in caught:
        logger.warning("%s", warning.message)
    return plan


def read_oracle_config(path: Path, oracle: str, accepted: set[str]) -> dict:
    """The oracle settings in a YAML or JSON file (--oracle-config); a bad file exits 1."""
    import yaml

    if not path.is_file():
        fail(f"--oracle-config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except yaml.YAMLError as error:
        fail(f"--oracle-config {path} is not valid YAML or JSON: {error}")
    if not isinstance(raw, dict):
        fail(f"--oracle-config {path}: expected a mapping of --oracle {oracle} settings, got {type(raw).__name__}")
    unknown = sorted(set(raw) - accepted)
    if unknown:
        fail(f"--oracle-config {path}: unknown settings {unknown} for --oracle {oracle}; expected some of {sorted(accepted)}")
    return raw


def create(experiment_dir: Path, plan: Plan) -> None:
    try:
        create_experiment(experiment_dir, plan)
    except (FileExistsError, ValueError) as error:
        fail(str(error))
    logger.info("instructions saved in %s", experiment_dir / "instructions")


# Options shared by create-instructions and simulate: the plan of an experiment.
QUICK_TEST = typer.Option(False, "--quick-test", help="Shrink everything for a quick plumbing check.")
BASELINE = typer.Option(False, "--baseline", help="Acquire at random (the baseline).")
WARM_START = typer.Option(
    True, "--warm-start/--cold-start",
    help="Start each iteration from the previous iteration's model (cold: from scratch each time).",
)
ORACLE = typer.Option("simulated", help=f"Who answers the vote requests: {' | '.join(list_oracles())}.")
ORACLE_CONFIG = typer.Option(
    None, help="YAML or JSON file of the oracle's settings (e.g. --oracle panoptes: project, workflow, task map; "
    "see docs/live.md).", show_default=False,
)
ARCHITECTURE = typer.Option(
    "zoobot-2019", help="zoobot-2019 (small, fast on CPU), or any timm model name (no pretrained weights)."
)
SUBJECTS = typer.Option(100, help="Galaxies acquired per iteration.")
POOL_SIZE = typer.Option(None, help="Score at most this many pool galaxies per iteration (default all).")
N_SAMPLES = typer.Option(15, help="MC dropout samples per galaxy.")
EXPECTED_VOTES = typer.Option(
    None, help="N in BALD: votes a newly labelled galaxy will get. Default: what the oracle delivers "
    "(--reveal-votes), else the median votes of the starting labelled galaxies.", show_default=False,
)
EPOCHS = typer.Option(20, help="Default epochs per iteration.")
LEARNING_RATE = typer.Option(1e-3, help="Default learning rate per iteration.")
BATCH_SIZE = typer.Option(64, help="Training batch size; small labelled sets need small batches.")
PATIENCE = typer.Option(10, help="Early stopping: epochs without a better val loss (counted once val loss beats the image-blind baseline).")
RANDOM_FRACTION = typer.Option(
    0.0, help="Exploration: this share of each acquired batch is drawn uniformly from the scored pool "
    "(flagged random_pick in acquired.csv), the rest by the acquisition function.",
)
ACCELERATOR = typer.Option("auto", help="Lightning accelerator of the train step: auto, cpu, gpu.")
DEVICES = typer.Option(
    "1", help="Lightning devices of the train step (e.g. 4, or 0,1); more than one trains each iteration in its own "
    "process group under Lightning's launcher. Scoring uses one device.",
)
STRATEGY = typer.Option("auto", help="Lightning strategy of the train step, e.g. ddp.")
NUM_NODES = typer.Option(1, help="Machines for the train step (multi-node DDP, e.g. under SLURM).")
PRETRAINED = typer.Option(
    None, help="Iteration 1 starts its backbone from these weights: a zoobot checkpoint of any schema, or a "
    "timm-format .safetensors/.pth file (the head is built anew).", show_default=False,
)
TRAINABLE_BLOCKS = typer.Option(
    None, help="Finetune only the last N backbone blocks (0: the head only); default: all.", show_default=False
)
LAYER_DECAY = typer.Option(1.0, help="Layer-wise learning-rate decay: block d from the top learns at lr * decay^d.")
ACQUISITION = typer.Option("bald", help=f"Acquisition function: {' | '.join(list_acquisitions())}.")
SELECTION = typer.Option(
    "top-k", help=f"Selection: {' | '.join(STRATEGIES)} (power and softmax sample stochastically, for large batches)."
)
REVEAL_VOTES = typer.Option(None, help="Simulated oracle: reveal only this many votes per galaxy.")
DELAY = typer.Option(None, help="Simulated oracle: votes arrive this many iterations late (default 0).")
DUPLICATE_RATE = typer.Option(None, help="Simulated oracle: fraction of deliveries handed over twice (default 0).")
VOTES_NEEDED = typer.Option(None, help="Web oracle: people who must classify a galaxy before it counts (default 3).")
PRECISION = typer.Option("32-true", help="Training precision, e.g. bf16-mixed.")
SEED = typer.Option(42, help="Seed of training, acquisition ties and the simulated oracle.")


CATALOG_DIR = typer.Argument(None, help="Folder made by define-experiment --simulation-size.", show_default=False)
SHARD_DIR = typer.Argument(None, help="Shards made from the simulation's catalogs.", show_default=False)


@app.command("create-instructions")
def create_instructions_command(
    catalog_dir: Optional[Path] = CATALOG_DIR,
    shard_dir: Optional[Path] = SHARD_DIR,
    experiment_dir: Optional[Path] = typer.Argument(
        None, help="New folder for instructions, ledger and iterations.", show_default=False
    ),
    quick_test: bool = QUICK_TEST,
    baseline: bool = BASELINE,
    warm_start: bool = WARM_START,
    oracle: str = ORACLE,
    oracle_config: Optional[Path] = ORACLE_CONFIG,
    architecture: str = ARCHITECTURE,
    subjects_per_iteration: int = SUBJECTS,
    pool_size_per_iteration: Optional[int] = POOL_SIZE,
    n_samples: int = N_SAMPLES,
    expected_votes: Optional[int] = EXPECTED_VOTES,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    patience: int = PATIENCE,
    pretrained: Optional[Path] = PRETRAINED,
    trainable_blocks: Optional[int] = TRAINABLE_BLOCKS,
    layer_decay: float = LAYER_DECAY,
    accelerator: str = ACCELERATOR,
    devices: str = DEVICES,
    strategy: str = STRATEGY,
    num_nodes: int = NUM_NODES,
    acquisition: str = ACQUISITION,
    selection: str = SELECTION,
    random_fraction: float = RANDOM_FRACTION,
    reveal_votes: Optional[int] = REVEAL_VOTES,
    delay: Optional[int] = DELAY,
    duplicate_rate: Optional[float] = DUPLICATE_RATE,
    votes_needed: Optional[int] = VOTES_NEEDED,
    precision: str = PRECISION,
    seed: int = SEED,
    old_catalog_dir: Optional[Path] = old_spelling("--catalog-dir"),
    old_shard_dir: Optional[Path] = old_spelling("--shard-dir"),
    old_experiment_dir: Optional[Path] = old_spelling("--experiment-dir"),
    old_test: Optional[bool] = typer.Option(None, "--test", hidden=True),
) -> None:
    """Save the model, acquisition and oracle specs, and start the ledger."""
    options = dict(locals())
    for name in [n for n in options if n.startswith("old_")] + ["catalog_dir", "shard_dir", "experiment_dir"]:
        del options[name]
    options["quick_test"] = renamed(quick_test or None, old_test, "--test", "--quick-test") or False
    catalog_dir = required(renamed(catalog_dir, old_catalog_dir, "--catalog-dir", "CATALOG_DIR"), "CATALOG_DIR")
    shard_dir = required(renamed(shard_dir, old_shard_dir, "--shard-dir", "SHARD_DIR"), "SHARD_DIR")
    experiment_dir = required(
        renamed(experiment_dir, old_experiment_dir, "--experiment-dir", "EXPERIMENT_DIR"), "EXPERIMENT_DIR"
    )
    create(experiment_dir, plan_from_options(catalog_dir, shard_dir, **options))


def _run_one(
    experiment_dir: Path, epochs: Optional[int], learning_rate: Optional[float], deadline: Optional[timedelta] = None
) -> Optional[dict]:
    """The iteration's metrics; None when a live experiment waits for votes (said in the log)."""
    from zoobot.loop.iteration import Waiting, run_iteration

    quiet_lightning()
    try:
        metrics = run_iteration(experiment_dir, epochs=epochs, learning_rate=learning_rate, deadline=deadline)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        fail(str(error))
    except KeyError as error:
        fail(str(error.args[0]))
    if isinstance(metrics, Waiting):
        logger.info("%s", metrics.describe())
        return None
    summary = {k: metrics.get(k) for k in ("iteration", "n_labelled", "votes_used", "test_loss", "test_mae", "n_acquired")}
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


DURATION = re.compile(r"(?:\d+[smhd])+")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """'24h', '90m', '2d', '1d12h' -> timedelta (whole numbers of s, m, h, d, largest first or not)."""
    if not DURATION.fullmatch(text.strip()):
        raise ValueError(f"expected a duration such as 24h, 90m, 2d or 1d12h (units s, m, h, d), got {text!r}")
    parts = re.findall(r"(\d+)([smhd])", text)
    return sum((timedelta(**{DURATION_UNITS[unit]: int(n)}) for n, unit in parts), timedelta())


@app.command("run")
def run_command(
    experiment_dir: Path = typer.Argument(..., help="An experiment made by create-instructions or simulate."),
    iterations: int = typer.Option(1, help="How many iterations to run."),
    epochs: Optional[int] = typer.Option(None, help="Override the plan's epochs for these iterations."),
    learning_rate: Optional[float] = typer.Option(None, help="Override the plan's learning rate for these iterations."),
    deadline: Optional[str] = typer.Option(
        None, help="Live oracles: train once this long has passed since the previous request even if its "
        "galaxies are incomplete: 24h, 90m, 2d, 1d12h. Default: wait until they are complete.",
        show_default=False,
    ),
) -> None:
    """Run the next iteration(s), finishing an interrupted one first.

    With a live oracle (web, Panoptes) each call collects the votes that arrived; it trains and
    acquires only when the previous iteration's galaxies are complete or --deadline has passed,
    and otherwise exits 0 saying what it waits for. Call it hourly from cron.
    """
    try:
        waited = None if deadline is None else parse_duration(deadline)
    except ValueError as error:
        fail(f"--deadline: {error}")
    for _ in range(iterations):
        if _run_one(experiment_dir, epochs, learning_rate, waited) is None:
            break


@app.command("simulate")
def simulate_command(
    catalog_dir: Path = typer.Argument(..., help="Folder made by define-experiment --simulation-size."),
    shard_dir: Path = typer.Argument(..., help="Shards of the simulation's catalogs."),
    experiment_dir: Path = typer.Argument(..., help="Experiment folder (created, or resumed if it exists)."),
    total_iterations: Optional[int] = typer.Option(
        None, help="Iterations the experiment should have when the command ends (default 5)."
    ),
    quick_test: bool = QUICK_TEST,
    baseline: bool = BASELINE,
    warm_start: bool = WARM_START,
    architecture: str = ARCHITECTURE,
    subjects_per_iteration: int = SUBJECTS,
    pool_size_per_iteration: Optional[int] = POOL_SIZE,
    n_samples: int = N_SAMPLES,
    expected_votes: Optional[int] = EXPECTED_VOTES,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    patience: int = PATIENCE,
    pretrained: Optional[Path] = PRETRAINED,
    trainable_blocks: Optional[int] = TRAINABLE_BLOCKS,
    layer_decay: float = LAYER_DECAY,
    accelerator: str = ACCELERATOR,
    devices: str = DEVICES,
    strategy: str = STRATEGY,
    num_nodes: int = NUM_NODES,
    acquisition: str = ACQUISITION,
    selection: str = SELECTION,
    random_fraction: float = RANDOM_FRACTION,
    reveal_votes: Optional[int] = REVEAL_VOTES,
    delay: Optional[int] = DELAY,
    duplicate_rate: Optional[float] = DUPLICATE_RATE,
    precision: str = PRECISION,
    seed: int = SEED,
    override: bool = typer.Option(
        False, "--override", help="On a rerun, apply plan options that differ from the saved plan."
    ),
    old_iterations: Optional[int] = old_spelling("--iterations", "Deprecated: the total, now --total-iterations."),
    old_test: Optional[bool] = typer.Option(None, "--test", hidden=True),
) -> None:
    """Create an experiment with a simulated oracle (unless it exists) and run it to N iterations.

    A rerun resumes the experiment. Plan options that differ from the saved plan are refused,
    listing the differences, unless --override applies them to the iterations still to run.
    """
    options = dict(locals())
    for name in ("total_iterations", "experiment_dir", "override", "old_iterations", "old_test"):
        del options[name]
    options["quick_test"] = renamed(quick_test or None, old_test, "--test", "--quick-test") or False
    total = renamed(total_iterations, old_iterations, "--iterations", "--total-iterations") or 5
    plan = plan_from_options(**options, oracle="simulated")
    if not (experiment_dir / LEDGER).exists():
        create(experiment_dir, plan)
    else:
        resume_with(experiment_dir, plan, override)
    while len(completed_iterations(experiment_dir)) < total:
        _run_one(experiment_dir, None, None)
    logger.info("%d iterations complete; metrics in %s", total, experiment_dir / "metrics.csv")


def resume_with(experiment_dir: Path, plan: Plan, override: bool) -> None:
    """Refuse a rerun whose plan differs from the saved one, or apply it with --override."""
    differences = plan_differences(load_instructions(experiment_dir / INSTRUCTIONS_DIR), plan)
    if not differences:
        return
    if not override:
        fail(
            f"{experiment_dir} was planned with other settings: " + "; ".join(differences)
            + ". Rerun with the same options, pass --override to apply the new ones to the "
            "iterations still to run, or continue as planned with `zoobot run`"
        )
    try:
        override_plan(experiment_dir, plan)
    except SettingsError as error:
        fail(str(error))
    for difference in differences:
        logger.info("override: %s", difference)
