"""Instructions: everything an iteration needs, saved as JSON so a fresh process can rebuild it.

Three files in ``EXPERIMENT/instructions/`` map onto the three concepts of the original design:

- ``model_spec.json`` (TrainCallableFactory): the fixed arguments that rebuild the model and its
  training function;
- ``acquisition_spec.json`` (AcquisitionCallableFactory): the fixed arguments of the acquisition
  function;
- ``instructions.json`` (Instructions): where the catalogs, shards and oracle live, how many
  galaxies to acquire and score per iteration, and the default per-iteration arguments.

Every spec checks its values when it is made, so a bad plan is refused before anything runs.
Light on imports on purpose: the CLI builds and checks specs without loading PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from zoobot.acquisition import STRATEGIES, list_acquisitions
from zoobot.checks import SettingsError, check_choice, check_int, check_number
from zoobot.files import write_json_atomic
from zoobot.loop.layout import INSTRUCTIONS_DIR
from zoobot.oracles import list_oracles, oracle_settings
from zoobot.precision import INFERENCE_PRECISIONS
from zoobot.schema import get_schema
from zoobot.training_settings import TrainSettings

SPEC_FILES = ("model_spec.json", "acquisition_spec.json", "instructions.json")


@dataclass
class ModelSpec:
    """How to build and train the model each iteration."""

    train: TrainSettings = field(default_factory=TrainSettings)
    warm_start: bool = False  # start each iteration from the previous iteration's best model

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainSettings):
            raise SettingsError(f"ModelSpec.train: expected TrainSettings, got {type(self.train).__name__}")
        if not isinstance(self.warm_start, bool):
            raise SettingsError(f"ModelSpec.warm_start: expected true or false, got {self.warm_start!r}")


@dataclass
class AcquisitionSpec:
    """How to score the pool and pick galaxies."""

    function: str = "bald"  # a name in zoobot.acquisition's registry; "random" is the baseline
    selection: str = "top-k"  # a selection strategy: top-k, or stochastic power / softmax sampling
    power_beta: float = 1.0
    n_samples: int = 15  # MC dropout samples per galaxy
    expected_votes: int | None = None  # N in BALD: votes a newly labelled galaxy will get; None: what
    # the oracle delivers, filled in by loop.experiment.plan_experiment
    batch_size: int = 256
    precision: str = "32-true"  # or "bf16-mixed" for faster CPU/GPU scoring
    random_fraction: float = 0.0  # share of each acquired batch drawn uniformly from the pool (exploration)

    def __post_init__(self) -> None:
        owner = "AcquisitionSpec"
        check_choice(owner, "function", self.function, list_acquisitions())
        check_choice(owner, "selection", self.selection, STRATEGIES)
        check_number(owner, "power_beta", self.power_beta, 0.0, None, low_inclusive=False)
        check_int(owner, "n_samples", self.n_samples, minimum=1)
        check_int(owner, "expected_votes", self.expected_votes, minimum=1, optional=True)
        check_int(owner, "batch_size", self.batch_size, minimum=1)
        check_choice(owner, "precision", self.precision, list(INFERENCE_PRECISIONS))
        check_number(owner, "random_fraction", self.random_fraction, 0.0, 1.0)


@dataclass
class OracleSpec:
    """Who answers the vote requests: a registered oracle kind and its own settings."""

    kind: str = "simulated"
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("OracleSpec", "kind", self.kind, list_oracles())
        oracle_settings(self.kind, self.settings)  # validated by the kind's own settings class


@dataclass
class Instructions:
    """The experiment's fixed plan."""

    catalog_dir: str
    shard_dir: str
    schema: str
    oracle: OracleSpec
    subjects_per_iteration: int = 100
    pool_size_per_iteration: int | None = None  # score at most this many pool galaxies; None: all
    epochs: int = 20  # default per-iteration arguments, overridable at each iteration
    learning_rate: float = 1e-3
    seed: int = 42

    def __post_init__(self) -> None:
        owner = "Instructions"
        for name in ("catalog_dir", "shard_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SettingsError(f"{owner}.{name}: expected a folder path, got {getattr(self, name)!r}")
        try:
            get_schema(self.schema)
        except KeyError as error:
            raise SettingsError(f"{owner}.schema: {error.args[0]}") from None
        if not isinstance(self.oracle, OracleSpec):
            raise SettingsError(f"{owner}.oracle: expected an OracleSpec, got {type(self.oracle).__name__}")
        check_int(owner, "subjects_per_iteration", self.subjects_per_iteration, minimum=1)
        check_int(owner, "pool_size_per_iteration", self.pool_size_per_iteration, minimum=1, optional=True)
        check_int(owner, "epochs", self.epochs, minimum=1)
        check_number(owner, "learning_rate", self.learning_rate, 0.0, None, low_inclusive=False)
        check_int(owner, "seed", self.seed, minimum=0)


@dataclass
class Plan:
    """The three specs an experiment is created with, and saved as."""

    model: ModelSpec
    acquisition: AcquisitionSpec
    instructions: Instructions

    def as_dict(self) -> dict[str, dict]:
        """{file name: content}, exactly as saved."""
        return dict(zip(SPEC_FILES, (asdict(self.model), asdict(self.acquisition), asdict(self.instructions))))


def _from_dict(cls, data: dict):
    """Rebuild a (nested) dataclass; unknown keys are an error naming them."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SettingsError(f"{cls.__name__}: unknown settings {sorted(unknown)}; expected {sorted(names)}")
    nested = {"train": TrainSettings, "oracle": OracleSpec}
    return cls(**{k: _from_dict(nested[k], v) if k in nested else v for k, v in data.items()})


def _upgrade_oracle(instructions: dict) -> dict:
    """Experiments made before oracle kinds had their own settings stored the simulated
    oracle's fields flat: {"kind", "oracle_path", "reveal_votes", ...}."""
    oracle = instructions.get("oracle", {})
    if "settings" in oracle or "oracle_path" not in oracle:
        return instructions
    flat = dict(oracle)
    kind = flat.pop("kind", "simulated")
    flat["hidden_votes_path"] = flat.pop("oracle_path")
    return {**instructions, "oracle": {"kind": kind, "settings": flat}}


def save_instructions(experiment_dir: Path, plan: Plan) -> Path:
    folder = Path(experiment_dir) / INSTRUCTIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in plan.as_dict().items():
        write_json_atomic(folder / name, content)
    return folder


def load_instructions(folder: Path) -> Plan:
    folder = Path(folder)
    missing = [n for n in SPEC_FILES if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}; create it with `zoobot create-instructions` first")
    model, acquisition, instructions = (json.loads((folder / name).read_text()) for name in SPEC_FILES)
    return Plan(
        _from_dict(ModelSpec, model),
        _from_dict(AcquisitionSpec, acquisition),
        _from_dict(Instructions, _upgrade_oracle(instructions)),
    )
