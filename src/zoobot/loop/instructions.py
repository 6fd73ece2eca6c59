"""Instructions: everything an iteration needs, saved as JSON so a fresh process can rebuild it.

Three files in ``EXPERIMENT/instructions/`` map onto the three concepts of the original design:

- ``model_spec.json`` (TrainCallableFactory): the fixed arguments that rebuild the model and its
  training function;
- ``acquisition_spec.json`` (AcquisitionCallableFactory): the fixed arguments of the acquisition
  function;
- ``instructions.json`` (Instructions): where the catalogs, shards and oracle live, how many
  galaxies to acquire and score per iteration, and the default per-iteration arguments.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from zoobot.files import write_json_atomic
from zoobot.training_settings import TrainSettings

INSTRUCTIONS_DIR = "instructions"


@dataclass
class ModelSpec:
    """How to build and train the model each iteration."""

    train: TrainSettings = field(default_factory=TrainSettings)
    warm_start: bool = False  # start each iteration from the previous iteration's best model


@dataclass
class AcquisitionSpec:
    """How to score the pool and pick galaxies."""

    function: str = "bald"  # a name in zoobot.acquisition's registry; "random" is the baseline
    selection: str = "top-k"  # or "power": stochastic power sampling, for large batches
    power_beta: float = 1.0
    n_samples: int = 15  # MC dropout samples per galaxy
    expected_votes: int = 40  # N in BALD: votes a newly labelled galaxy is expected to get
    batch_size: int = 256
    precision: str = "32"  # or "bf16" for faster CPU/GPU scoring


@dataclass
class OracleSpec:
    """Who answers the vote requests."""

    kind: str = "simulated"
    oracle_path: str = ""  # simulated: the hidden votes (simulation_context/oracle.parquet)
    reveal_votes: int | None = None
    delay: int = 0
    duplicate_rate: float = 0.0
    seed: int = 0


@dataclass
class Instructions:
    """The experiment's fixed plan."""

    catalog_dir: str
    shard_dir: str
    schema: str
    subjects_per_iteration: int = 100
    pool_size_per_iteration: int | None = None  # score at most this many pool galaxies; None: all
    epochs: int = 20  # default per-iteration arguments, overridable at each iteration
    learning_rate: float = 1e-3
    seed: int = 42
    oracle: OracleSpec = field(default_factory=OracleSpec)


def _from_dict(cls, data: dict):
    """Rebuild a (nested) dataclass; unknown keys are an error naming them."""
    names = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings {sorted(unknown)}; expected {sorted(names)}")
    nested = {"train": TrainSettings, "oracle": OracleSpec}
    return cls(**{k: _from_dict(nested[k], v) if k in nested else v for k, v in data.items()})


def save_instructions(
    experiment_dir: Path, model: ModelSpec, acquisition: AcquisitionSpec, instructions: Instructions
) -> Path:
    folder = Path(experiment_dir) / INSTRUCTIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "model_spec.json", asdict(model))
    write_json_atomic(folder / "acquisition_spec.json", asdict(acquisition))
    write_json_atomic(folder / "instructions.json", asdict(instructions))
    return folder


def load_instructions(folder: Path) -> tuple[ModelSpec, AcquisitionSpec, Instructions]:
    folder = Path(folder)
    missing = [n for n in ("model_spec.json", "acquisition_spec.json", "instructions.json") if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}; create it with `zoobot create-instructions` first"
        )
    read = lambda name: json.loads((folder / name).read_text())  # noqa: E731
    return (
        _from_dict(ModelSpec, read("model_spec.json")),
        _from_dict(AcquisitionSpec, read("acquisition_spec.json")),
        _from_dict(Instructions, read("instructions.json")),
    )
