"""Creating an experiment: build its plan from grouped settings, check it, save it, start the ledger.

The library API behind ``zoobot create-instructions`` and ``zoobot simulate``::

    plan = plan_experiment(catalog_dir, shard_dir, model=ModelSpec(...), acquisition=AcquisitionSpec(...))
    create_experiment(experiment_dir, plan)

Everything is checked before anything is written: the specs validate themselves when made, and
the shards are checked against the schema and the oracle.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from zoobot.checks import SettingsError
from zoobot.files import atomic_path
from zoobot.loop.instructions import (
    AcquisitionSpec,
    Instructions,
    ModelSpec,
    OracleSpec,
    Plan,
    load_instructions,
    save_instructions,
)
from zoobot.loop.layout import INSTRUCTIONS_DIR, LEDGER
from zoobot.loop.ledger import LABELLED, UNLABELLED, Ledger
from zoobot.oracles import Delivery, oracle_class, oracle_settings
from zoobot.schema import get_schema
from zoobot.shards import ShardReader

#: ``quick_test=True``: a run that checks the plumbing end to end in seconds.
QUICK_TEST = {
    "architecture": "zoobot-2019",
    "epochs": 2,
    "n_samples": 2,
    "subjects_per_iteration": 10,
    "pool_size_per_iteration": 200,
    "batch_size": 32,
}

#: Settings that define what an experiment is; they never change once it is created.
FIXED = ("instructions.json: catalog_dir", "instructions.json: shard_dir", "instructions.json: schema",
         "instructions.json: oracle.kind")


def plan_experiment(
    catalog_dir: str | Path,
    shard_dir: str | Path,
    model: ModelSpec | None = None,
    acquisition: AcquisitionSpec | None = None,
    oracle: str = "simulated",
    oracle_options: dict[str, Any] | None = None,
    subjects_per_iteration: int = 100,
    pool_size_per_iteration: int | None = None,
    seed: int = 42,
    quick_test: bool = False,
) -> Plan:
    """The plan of an experiment on these catalogs and shards; nothing is written.

    The schema comes from the shards; the oracle's settings are made by its kind from
    ``oracle_options`` and the catalog folder; epochs and learning rate default from
    ``model.train``; an unset ``acquisition.expected_votes`` becomes what the oracle delivers
    (:func:`default_expected_votes`), and a different one warns. ``quick_test`` shrinks
    everything (``QUICK_TEST``).
    """
    model = model or ModelSpec()
    acquisition = acquisition or AcquisitionSpec()
    if quick_test:
        model = replace(model, train=replace(
            model.train, architecture=QUICK_TEST["architecture"], batch_size=QUICK_TEST["batch_size"],
            epochs=min(model.train.epochs, QUICK_TEST["epochs"]),
        ))
        acquisition = replace(acquisition, n_samples=QUICK_TEST["n_samples"])
        subjects_per_iteration = min(subjects_per_iteration, QUICK_TEST["subjects_per_iteration"])
        pool_size_per_iteration = min(pool_size_per_iteration or QUICK_TEST["pool_size_per_iteration"],
                                      QUICK_TEST["pool_size_per_iteration"])
    settings = oracle_class(oracle).Settings.for_experiment(catalog_dir, seed, **(oracle_options or {}))
    reader = ShardReader(shard_dir)
    instructions = Instructions(
        catalog_dir=str(Path(catalog_dir).resolve()),
        shard_dir=str(Path(shard_dir).resolve()),
        schema=reader.schema_spec,
        oracle=OracleSpec(oracle, asdict(settings)),
        subjects_per_iteration=subjects_per_iteration,
        pool_size_per_iteration=pool_size_per_iteration,
        epochs=model.train.epochs,
        learning_rate=model.train.learning_rate,
        seed=seed,
    )
    delivered = default_expected_votes(settings, reader, get_schema(instructions.schema))
    if acquisition.expected_votes is None:
        acquisition = replace(acquisition, expected_votes=delivered)
    elif acquisition.expected_votes != delivered and acquisition.function != "random":
        warnings.warn(
            f"expected_votes={acquisition.expected_votes}, but the oracle delivers about {delivered} votes per "
            "galaxy; BALD will weigh information from votes that will not come. Leave it unset to use "
            f"{delivered}", UserWarning, stacklevel=2,
        )
    return Plan(model, acquisition, instructions)


def default_expected_votes(oracle_settings, reader: ShardReader, schema) -> int:
    """N for BALD: what the oracle says it delivers per galaxy, else the median votes of the
    starting labelled galaxies (each galaxy's most-answered question: the root of its tree)."""
    delivered = getattr(oracle_settings, "votes_per_galaxy", lambda: None)()
    if delivered is not None:
        return int(delivered)
    counts = reader.votes(reader.split_positions("train"))  # (galaxy, answer)
    if not len(counts):
        raise ValueError(
            f"{reader.shard_dir} has no train galaxies to estimate the votes per galaxy from; "
            "set expected_votes (--expected-votes)"
        )
    per_question = np.stack([counts[:, start:stop].sum(axis=1) for start, stop in schema.answer_groups], axis=1)
    return max(1, int(np.median(per_question.max(axis=1))))


def create_experiment(experiment_dir: str | Path, plan: Plan) -> Path:
    """Check the shards, save the plan and a ledger in which the train split starts labelled.

    The ledger is written last, under a temporary name, then renamed: it marks the experiment
    as created. The oracle kind checks the shards too (a simulated oracle refuses shards whose
    train or eval galaxies have hidden votes: that would leak labels).
    """
    experiment_dir = Path(experiment_dir)
    if (experiment_dir / LEDGER).exists():
        raise FileExistsError(f"{experiment_dir} already holds an experiment; continue it with `zoobot run`")
    leftovers = [p.name for p in (experiment_dir / "iterations", experiment_dir / "oracle_state.sqlite") if p.exists()]
    if leftovers:
        raise FileExistsError(f"{experiment_dir} holds {leftovers} but no ledger; choose a new experiment folder")
    instructions = plan.instructions
    reader = ShardReader(instructions.shard_dir)
    schema = get_schema(instructions.schema)
    if reader.vote_columns != schema.answer_columns:
        raise ValueError(
            f"shards in {instructions.shard_dir} hold votes {reader.vote_columns}, expected "
            f"{schema.answer_columns} for schema {schema.name!r}; make shards from this experiment's catalogs"
        )
    empty = [split for split in ("val", "test") if not reader.counts[split]]
    if empty:
        raise ValueError(
            f"shards in {instructions.shard_dir} have no {' and no '.join(empty)} split: the loop early-stops "
            "on val and reports every curve on test, which no choice may see; make shards with "
            "--val-size N --test-size M"
        )
    if plan.acquisition.expected_votes is None:
        raise ValueError("AcquisitionSpec.expected_votes is unset; make the plan with plan_experiment, which fills it in")
    oracle = instructions.oracle
    oracle_class(oracle.kind).check_shards(oracle_settings(oracle.kind, oracle.settings), reader)
    train_ids, pool_ids = list(reader.ids("train")), list(reader.ids("pool"))
    experiment_dir.mkdir(parents=True, exist_ok=True)
    save_instructions(experiment_dir, plan)
    for stale in experiment_dir.glob(f".{LEDGER}.tmp-*"):
        stale.unlink()
    with atomic_path(experiment_dir / LEDGER) as tmp:
        ledger = Ledger(tmp, schema.n_answers, create=True)
        try:
            ledger.add_galaxies(train_ids, LABELLED)
            counts = reader.votes(reader.positions(train_ids))
            initial = (Delivery(f"initial:{i}", i, tuple(c.tolist())) for i, c in zip(train_ids, counts))
            ledger.record(initial, iteration=0)
            ledger.add_galaxies(pool_ids, UNLABELLED)
        finally:
            ledger.close()
    return experiment_dir


def experiment_identity(plan: Plan, reader: ShardReader) -> dict[str, Any]:
    """What every compared run must share: the schema, the test galaxies, the starting labelled
    set and the oracle's settings (its seed aside: paired repeats differ in seed)."""
    oracle = plan.instructions.oracle
    return {
        "schema": plan.instructions.schema,
        "test_ids_sha256": _ids_sha256(reader.ids("test")),
        "start_labelled_ids_sha256": _ids_sha256(reader.ids("train")),
        "oracle": {"kind": oracle.kind, **{k: v for k, v in oracle.settings.items() if k != "seed"}},
    }


def _ids_sha256(ids) -> str:
    """A hash of a set of galaxy ids, whatever their order."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def plan_differences(saved: Plan, new: Plan) -> list[str]:
    """'file: setting saved -> new' for every setting that differs, in a stable order."""
    differences = []
    new_specs = new.as_dict()
    for name, old_spec in saved.as_dict().items():
        old_flat, new_flat = _flatten(old_spec), _flatten(new_specs[name])
        for key in sorted(set(old_flat) | set(new_flat)):
            if old_flat.get(key) != new_flat.get(key):
                differences.append(f"{name}: {key} {old_flat.get(key)!r} -> {new_flat.get(key)!r}")
    return differences


def override_plan(experiment_dir: str | Path, plan: Plan) -> list[str]:
    """Save ``plan`` over an experiment's plan; later iterations use it. Returns what changed.

    Refuses to change what defines the experiment (``FIXED``: catalogs, shards, schema, oracle kind).
    """
    saved = load_instructions(Path(experiment_dir) / INSTRUCTIONS_DIR)
    differences = plan_differences(saved, plan)
    fixed = [d for d in differences if d.startswith(FIXED)]
    if fixed:
        raise SettingsError(
            f"{experiment_dir}: these settings define the experiment and cannot change: {fixed}; "
            "start a new experiment folder instead"
        )
    if differences:
        save_instructions(experiment_dir, plan)
    return differences


def _flatten(value: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat
