"""One active-learning iteration, resumable after a kill at any point.

An experiment folder holds::

    instructions/                 model, acquisition and oracle specs (instructions.py)
    ledger.sqlite                 galaxy states and vote deliveries (ledger.py)
    oracle_state.sqlite           the oracle's own state (its kind decides what it keeps)
    iterations/iteration_NNN/     complete iterations, never edited again
    iterations/.iteration_NNN.partial/   the iteration in progress
    metrics.csv                   one row per complete iteration

Iteration n runs these steps; each writes its result atomically into the partial folder, and a
rerun skips the steps whose results exist:

1. collect votes from the oracle and record them in the ledger (idempotent by delivery id); with a
   live oracle (people answer), go on only when the previous iteration's galaxies are complete or
   its deadline has passed, else return ``Waiting`` (collect again on the next call);
2. train on every labelled galaxy, warm-started from iteration n-1 if asked;
3. evaluate on the fixed eval split;
4. score the pool with MC dropout, streaming, keeping only the top galaxies;
5. write ``acquired.csv``, then mark those galaxies requested in the ledger, then request their
   votes from the oracle (both idempotent);
6. write ``final_state.json`` and rename the partial folder to ``iteration_NNN``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from zoobot import acquisition
from zoobot.checkpoints import load_model
from zoobot.files import atomic_path, write_json_atomic
from zoobot.loop.experiment import experiment_identity
from zoobot.loop.instructions import Plan, load_instructions
from zoobot.loop.layout import FINAL_STATE, INSTRUCTIONS_DIR, TEST_PREDICTIONS, LEDGER, iteration_dir, next_iteration, partial_dir, write_metrics_table
from zoobot.loop.ledger import REQUESTED, UNLABELLED, Ledger, votes_per_galaxy
from zoobot.loop.train_process import needs_process_group, train_in_process_group
from zoobot.oracles import Oracle, open_oracle
from zoobot.metrics import evaluate_predictions
from zoobot.pool_scoring import ScoringJob, score_shards
from zoobot.predict import compile_pays, predict_all
from zoobot.schema import Schema, get_schema
from zoobot.shards import ShardReader
from zoobot.timing import StepTimer, process_age_seconds
from zoobot.training import train_model

logger = logging.getLogger(__name__)


@dataclass
class IterationContext:
    """Everything the steps of one iteration share; opened once per iteration."""

    experiment_dir: Path
    iteration: int
    work: Path  # the partial folder, renamed to iteration_NNN when complete
    plan: Plan
    schema: Schema
    reader: ShardReader
    ledger: Ledger
    oracle: Oracle
    epochs: int | None = None  # per-iteration overrides of the plan's defaults
    learning_rate: float | None = None
    timer: StepTimer = field(default_factory=StepTimer)  # wall seconds per step, into metrics.json


@dataclass(frozen=True)
class Waiting:
    """A live iteration that waits for votes: collected, but nothing trained or requested yet."""

    iteration: int
    n_requested: int  # galaxies requested by the previous iteration
    n_pending: int  # of those, still without complete votes
    votes_so_far: int  # classifications received for the pending ones
    votes_needed: int | None  # per galaxy, when the oracle says
    requested_at: str  # ISO UTC
    deadline_at: str | None  # ISO UTC; None: no deadline, wait until complete

    def describe(self) -> str:
        needed = f" of {self.votes_needed * self.n_pending} needed" if self.votes_needed else ""
        until = f"until {self.deadline_at} (the deadline)" if self.deadline_at else "with no deadline"
        return (
            f"iteration {self.iteration} waits for votes: {self.n_pending} of the {self.n_requested} galaxies "
            f"requested at {self.requested_at} are incomplete ({self.votes_so_far} votes so far{needed}); "
            f"waiting {until}. Run `zoobot run` again later (e.g. hourly from cron)"
        )


def run_iteration(
    experiment_dir: Path,
    iteration: int | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
    deadline: timedelta | None = None,
) -> dict | Waiting:
    """Run (or finish) one iteration and return its metrics.

    With a live oracle, ``Waiting`` when the previous iteration's galaxies are incomplete and
    ``deadline`` (counted from that request; None: never) has not passed.
    """
    startup, timer = process_age_seconds(), StepTimer()
    opening = time.perf_counter()
    experiment_dir = Path(experiment_dir)
    plan = load_instructions(experiment_dir / INSTRUCTIONS_DIR)
    expected = next_iteration(experiment_dir)
    iteration = expected if iteration is None else iteration
    if iteration != expected:
        raise ValueError(
            f"{experiment_dir}: the next iteration to run is {expected}, not {iteration}; "
            "iterations run in order and a complete one is never rerun"
        )
    schema = get_schema(plan.instructions.schema)
    reader = ShardReader(plan.instructions.shard_dir)
    oracle_spec = plan.instructions.oracle
    with _exclusive(experiment_dir), closing(Ledger(experiment_dir / LEDGER, schema.n_answers)) as ledger, \
            closing(open_oracle(oracle_spec.kind, oracle_spec.settings, experiment_dir, schema)) as oracle:
        work = partial_dir(experiment_dir, iteration)
        work.mkdir(parents=True, exist_ok=True)
        context = IterationContext(
            experiment_dir, iteration, work, plan, schema, reader, ledger, oracle, epochs, learning_rate, timer
        )
        timer.seconds.update({"startup": startup or 0.0, "open": time.perf_counter() - opening})
        with timer("collect"):
            collected = _collect(context, deadline)
        if isinstance(collected, Waiting):
            return collected
        return _finish_iteration(context, collected)


@contextmanager
def _exclusive(experiment_dir: Path):
    """Hold a lock on the experiment, so two processes never run its iterations at once."""
    with open(Path(experiment_dir) / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another zoobot process is running an iteration of {experiment_dir}; wait for it"
            ) from None
        yield


def _collect(context: IterationContext, deadline: timedelta | None = None) -> dict | Waiting:
    """Step 1: record the oracle's deliveries; after a crash, the recorded state is reused.

    A live oracle's iteration waits (nothing written but the ledger's new votes) until the gate opens.
    """
    path = context.work / "collected.json"
    if path.exists():
        return json.loads(path.read_text())
    iteration, ledger = context.iteration, context.ledger
    deliveries = context.oracle.collect(iteration)
    ledger.note_collection(iteration, len(deliveries), ledger.record(deliveries, iteration))
    gate = {}
    if getattr(context.oracle, "live", False):
        waiting = _waiting_for_votes(context, deadline)
        if isinstance(waiting, Waiting):
            return waiting
        gate = {"live_gate": waiting}
    metrics = {
        "iteration": iteration,
        "deliveries_collected": ledger.n_collected_in(iteration),
        "n_pending": ledger.n_pending_before(iteration),
        **gate,
    }
    write_json_atomic(path, metrics)
    logger.info("iteration %d: step collect done (%d deliveries)", iteration, metrics["deliveries_collected"])
    return metrics


def _waiting_for_votes(context: IterationContext, deadline: timedelta | None) -> Waiting | str:
    """Waiting, or why the gate is open: "nothing requested", "complete" or "deadline"."""
    previous = context.iteration - 1
    requested = context.ledger.requested_in(previous) if previous >= 1 else []
    if not requested:
        return "nothing requested"
    pending = sorted(set(requested) & set(context.ledger.ids(REQUESTED)))
    if not pending:
        return "complete"
    final_state = iteration_dir(context.experiment_dir, previous) / FINAL_STATE
    requested_at = json.loads(final_state.read_text()).get("requested_at")
    if requested_at is None:  # iterations made before the request time was recorded
        requested_at = datetime.fromtimestamp(final_state.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    deadline_at = None if deadline is None else datetime.fromisoformat(requested_at) + deadline
    if deadline_at is not None and datetime.now(timezone.utc) >= deadline_at:
        logger.info(
            "iteration %d: the deadline passed with %d of %d requested galaxies incomplete; they stay requested",
            context.iteration, len(pending), len(requested),
        )
        return "deadline"
    votes = votes_per_galaxy(context.ledger.summed_votes(pending), context.schema.answer_groups)
    votes_needed = getattr(context.oracle.settings, "votes_per_galaxy", lambda: None)()
    return Waiting(
        iteration=context.iteration, n_requested=len(requested), n_pending=len(pending),
        votes_so_far=int(votes.sum()), votes_needed=votes_needed, requested_at=requested_at,
        deadline_at=None if deadline_at is None else deadline_at.isoformat(timespec="seconds"),
    )


def _finish_iteration(context: IterationContext, metrics: dict) -> dict:
    """Steps 2-6: train, evaluate, acquire, request, and make the iteration complete."""
    iteration, seed, timer = context.iteration, context.plan.instructions.seed, context.timer
    with timer("ledger"):
        train_ids, train_counts = context.ledger.labelled_votes()
    metrics["n_labelled"] = len(train_ids)
    metrics["votes_used"] = int(train_counts.sum())
    with timer("train"):
        checkpoint, train_record = _train(context, train_ids, train_counts)
    metrics.update(train_record)
    logger.info("iteration %d: step train done (%.1f s)", iteration, train_record["train_seconds"])

    with timer("load_model"):
        model = load_model(checkpoint)
    torch.manual_seed(seed + iteration)  # the same dropout masks after a resume
    with timer("evaluate"):
        metrics.update(_evaluate(context, model))
    logger.info("iteration %d: step evaluate done (test loss %.4f)", iteration, metrics["test_loss"])

    torch.manual_seed(seed + iteration + 1)
    with timer("acquire"):
        acquired, acquisition_seconds = _acquire(context, model)
    metrics["acquisition_seconds"] = acquisition_seconds
    logger.info("iteration %d: step acquire done (%d galaxies)", iteration, len(acquired))

    with timer("request"):
        _request(context, acquired)
    metrics["n_acquired"] = len(acquired)
    logger.info("iteration %d: step request done", iteration)

    with timer("identity"):
        metrics["identity"] = experiment_identity(context.plan, context.reader)
    metrics.update(step_overhead(timer.seconds))
    write_json_atomic(context.work / "metrics.json", metrics)
    requested_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(
        context.work / FINAL_STATE,
        {"iteration": iteration, "ledger": context.ledger.counts(), "requested_at": requested_at},
    )
    os.replace(context.work, iteration_dir(context.experiment_dir, iteration))
    write_metrics_table(context.experiment_dir)
    logger.info("iteration %d: complete", iteration)
    return metrics


MODEL_STEPS = ("train", "evaluate", "acquire")  # the work itself; every other step is overhead


def step_overhead(seconds: dict[str, float]) -> dict:
    """``step_seconds`` (wall seconds of each step run by this process; ``startup`` is the process's
    age when the iteration began: interpreter start-up and imports) and ``overhead_fraction``: the
    share of the iteration outside training, evaluation and scoring/acquisition."""
    total = sum(seconds.values())
    overhead = total - sum(seconds.get(step, 0.0) for step in MODEL_STEPS)
    return {
        "step_seconds": {step: round(value, 4) for step, value in seconds.items()},
        "overhead_fraction": overhead / total if total > 0 else 0.0,
    }


def _train(context: IterationContext, train_ids: list[str], train_counts: np.ndarray) -> tuple[Path, dict]:
    """Step 2: train on every labelled galaxy; a finished training is reused after a crash."""
    work, iteration, instructions = context.work, context.iteration, context.plan.instructions
    record_path = work / "train_result.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return work / record.pop("checkpoint"), record
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    settings = context.plan.model.train
    settings.epochs = context.epochs if context.epochs is not None else instructions.epochs
    settings.learning_rate = context.learning_rate if context.learning_rate is not None else instructions.learning_rate
    settings.seed = instructions.seed + iteration
    warm_start = None
    if context.plan.model.warm_start and iteration > 1:
        previous = iteration_dir(context.experiment_dir, iteration - 1)
        warm_start = previous / json.loads((previous / "train_result.json").read_text())["checkpoint"]
    reader = context.reader
    val_ids = list(reader.ids("val"))
    val_counts = reader.votes(reader.positions(val_ids))
    if needs_process_group(settings):  # Lightning's launcher would restart this whole command per rank
        result = train_in_process_group(
            reader.shard_dir, context.schema, train_ids, train_counts, val_ids, val_counts,
            settings, model_dir, work / "train_process", warm_start=warm_start,
        )
    else:
        result = train_model(
            reader, context.schema, train_ids, train_counts, val_ids, val_counts,
            settings, model_dir, warm_start=warm_start,
        )
    record = {
        "checkpoint": str(Path(result.best_checkpoint).resolve().relative_to(work.resolve())),
        "best_val_loss": result.best_val_loss,
        "baseline_loss": result.baseline_loss,
        "beats_baseline": result.beats_baseline,
        "collapsed": result.collapsed,
        "epochs_trained": result.epochs_trained,
        "train_seconds": result.seconds,
        "settings": asdict(settings),
    }
    write_json_atomic(record_path, record)
    record.pop("checkpoint")
    return Path(result.best_checkpoint), record


def _evaluate(context: IterationContext, model) -> dict:
    """Step 3: MC predictions on the held-out test split against its votes (never used for a choice).

    The predictions are kept (``test_predictions.npy``, (galaxy, sample, output) in test order)
    for coverage and calibration reports.
    """
    path = context.work / "test_metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    spec, reader = context.plan.acquisition, context.reader
    ids, predictions = predict_all(
        model, reader, split="test", n_samples=spec.n_samples, batch_size=spec.batch_size, precision=spec.precision
    )
    report = evaluate_predictions(predictions, reader.votes(reader.positions(ids)), context.schema)
    with atomic_path(context.work / TEST_PREDICTIONS) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, predictions.astype(np.float32))
    metrics = {  # test_loss: the Bayesian predictive NLL, -log mean_t p(votes | theta_t)
        "test_loss": float(report["mixture_loss"]),
        "test_loss_at_mean": float(report["loss"]),
        "test_report": report,
    }
    if "mae" in report:
        metrics["test_mae"] = float(report["mae"])
    write_json_atomic(path, metrics)
    return metrics


def _acquire(context: IterationContext, model) -> tuple[list[str], float]:
    """Step 4: score unlabelled pool galaxies and pick the next ones; reuses acquired.csv after a crash."""
    work, iteration = context.work, context.iteration
    spec, instructions, reader = context.plan.acquisition, context.plan.instructions, context.reader
    acquired_path = work / "acquired.csv"
    if acquired_path.exists():
        record = json.loads((work / "acquisition.json").read_text())
        return pd.read_csv(acquired_path, dtype={"id_str": str})["id_str"].tolist(), record["seconds"]
    started = time.perf_counter()
    rng = np.random.default_rng([instructions.seed, iteration])
    candidates, positions = candidate_positions(context.ledger, reader, instructions.pool_size_per_iteration, rng)
    n_total = min(instructions.subjects_per_iteration, len(candidates))
    n_random = 0 if spec.function == "random" else int(round(spec.random_fraction * n_total))
    n_acquire = n_total - n_random  # chosen by the acquisition function; the rest uniformly at random
    selector = acquisition.TopK(
        n_acquire, strategy=spec.selection, beta=spec.power_beta,
        seed=None if spec.selection == "top-k" else instructions.seed * 100_003 + iteration,
    )
    score = acquisition.get_acquisition(spec.function)
    if spec.function == "random":
        batches = ((candidates, None),)
        acquisition.score_stream(batches, score, selector, work / "scores.parquet", context.schema, spec.expected_votes, rng)
        chosen = selector.result()
    else:
        chosen = _score_pool(context, model, positions, n_acquire)
    acquired = [str(i) for i in chosen.ids]
    scores = np.asarray(chosen.scores, dtype=np.float64)
    explore = _random_picks(work / "scores.parquet", acquired, n_random, [instructions.seed, iteration, 1])
    acquired += explore["id_str"].tolist()
    scores = np.concatenate([scores, explore["score"].to_numpy(np.float64)])
    _, predictions = predict_all(  # the acquired galaxies' predicted fractions, for reports
        model, reader, ids=acquired, n_samples=spec.n_samples, batch_size=spec.batch_size, precision=spec.precision
    )
    table = pd.DataFrame({"id_str": acquired, "score": scores})
    first_random = 0 if spec.function == "random" else len(chosen.ids)  # exploration picks come last
    table["random_pick"] = np.arange(len(acquired)) >= first_random
    fractions = context.schema.expected_fractions(predictions).mean(axis=1)  # (galaxy, answer)
    for column, values in zip(context.schema.answer_columns, fractions.T):
        table[f"{column}_fraction"] = values.astype(np.float32)
    seconds = time.perf_counter() - started
    write_json_atomic(work / "acquisition.json", {"seconds": seconds, "n_candidates": len(candidates), **asdict(spec)})
    with atomic_path(acquired_path) as tmp:
        table.to_csv(tmp, index=False)
    return acquired, seconds


def _random_picks(scores_path: Path, chosen: list[str], n: int, seed) -> pd.DataFrame:
    """``n`` scored candidates not in ``chosen``, drawn uniformly (exploration, and an unbiased
    sample of the pool): id_str and score, in the order drawn."""
    if n == 0:
        return pd.DataFrame({"id_str": pd.Series(dtype=str), "score": pd.Series(dtype=np.float64)})
    scored = pd.read_parquet(scores_path, columns=["id_str", "score"])
    left = scored[~scored["id_str"].isin(chosen)].sort_values("id_str", kind="stable")
    picks = np.random.default_rng(seed).choice(len(left), size=min(n, len(left)), replace=False)
    return left.iloc[picks].reset_index(drop=True)


def candidate_positions(ledger: Ledger, reader: ShardReader, pool_size: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """The unlabelled pool galaxies to score: ids (n,) sorted, and their manifest positions (n,).

    ``pool_size`` (or None/0: all) draws that many at random with ``rng``. Columns throughout:
    the ledger's ids come as one array, matched to the manifest through its index; no set or
    list of every pool id is built.
    """
    ids = ledger.ids_array(UNLABELLED)  # (n,) sorted
    positions = reader.positions_or_missing(ids)  # (n,), -1 where not in the shards
    in_pool = np.zeros(len(reader) + 1, dtype=bool)  # the extra last entry stands for -1
    in_pool[reader.split_positions("pool")] = True
    keep = in_pool[positions]
    ids, positions = ids[keep], positions[keep]
    if pool_size and len(ids) > pool_size:
        chosen = np.sort(rng.choice(len(ids), pool_size, replace=False))
        ids, positions = ids[chosen], positions[chosen]
    return ids, positions


def _score_pool(context: IterationContext, model, positions: np.ndarray, n_acquire: int) -> acquisition.Selection:
    """MC-score the candidates in shard order on Lightning's predict loop (``pool_scoring``), into
    ``scores.parquet``; finished work units in ``scoring/`` are reused after a crash."""
    spec, instructions, settings = context.plan.acquisition, context.plan.instructions, context.plan.model.train
    job = ScoringJob(
        n_samples=spec.n_samples, batch_size=spec.batch_size, precision=spec.precision,
        seed=instructions.seed * 100_003 + context.iteration, catalog=False, acquisition=spec.function,
        expected_votes=spec.expected_votes, top_k=n_acquire, selection=spec.selection, beta=spec.power_beta,
        compile=compile_pays(settings.accelerator, context.reader.size, len(positions)),
    )
    result = score_shards(model, context.reader, np.sort(positions), job, context.work / "scoring", accelerator=settings.accelerator)
    os.replace(result.scores, context.work / "scores.parquet")
    shutil.rmtree(context.work / "scoring")
    return result.selection


def _request(context: IterationContext, acquired: list[str]) -> None:
    """Step 5: mark the acquired galaxies requested in the ledger, then ask the oracle (both idempotent)."""
    iteration, ledger = context.iteration, context.ledger
    already = ledger.requested_in(iteration)
    if already and sorted(already) != sorted(acquired):
        raise RuntimeError(
            f"the ledger's requests for iteration {iteration} differ from {context.work / 'acquired.csv'}; "
            "the partial folder was altered. Restore it, or start a new experiment"
        )
    if not already and acquired:
        ledger.mark_requested(acquired, iteration)
    context.oracle.request(acquired, iteration)
