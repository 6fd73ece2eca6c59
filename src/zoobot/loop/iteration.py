"""One active-learning iteration, resumable after a kill at any point.

An experiment folder holds::

    instructions/                 model, acquisition and oracle specs (instructions.py)
    ledger.sqlite                 galaxy states and vote deliveries (ledger.py)
    oracle_state.sqlite           the simulated oracle's requests
    iterations/iteration_NNN/     complete iterations, never edited again
    iterations/.iteration_NNN.partial/   the iteration in progress
    metrics.csv                   one row per complete iteration

Iteration n runs these steps; each writes its result atomically into the partial folder, and a
rerun skips the steps whose results exist:

1. collect votes from the oracle and record them in the ledger (idempotent by delivery id);
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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoobot import acquisition
from zoobot.loop.instructions import (
    INSTRUCTIONS_DIR,
    AcquisitionSpec,
    Instructions,
    ModelSpec,
    load_instructions,
    save_instructions,
)
from zoobot.loop.layout import (
    FINAL_STATE,
    LEDGER,
    iteration_dir,
    next_iteration,
    partial_dir,
    write_metrics_table,
)
from zoobot.loop.ledger import LABELLED, UNLABELLED, Ledger
from zoobot.ids import describe_ids
from zoobot.files import write_json_atomic
from zoobot.metrics import evaluate_predictions
from zoobot.oracles import Delivery, Oracle
from zoobot.oracles.simulated import SimulatedOracle
from zoobot.predict import predict_batches
from zoobot.schema import Schema, get_schema
from zoobot.shards import ShardReader
from zoobot.checkpoints import load_model
from zoobot.training import train_model

logger = logging.getLogger(__name__)

def create_experiment(
    experiment_dir: Path, model: ModelSpec, acquisition_spec: AcquisitionSpec, instructions: Instructions
) -> Path:
    """Save the instructions and a ledger in which the train split starts labelled.

    The ledger is written last, under a temporary name, then renamed: it marks the experiment
    as created. For a simulated oracle, the shards must come from the simulation: every pool
    galaxy has hidden votes, and no train or eval galaxy does (that would leak labels).
    """
    experiment_dir = Path(experiment_dir)
    if (experiment_dir / LEDGER).exists():
        raise FileExistsError(f"{experiment_dir} already holds an experiment; continue it with `zoobot run`")
    leftovers = [p.name for p in (experiment_dir / "iterations", experiment_dir / "oracle_state.sqlite") if p.exists()]
    if leftovers:
        raise FileExistsError(
            f"{experiment_dir} holds {leftovers} but no ledger; choose a new experiment folder"
        )
    reader = ShardReader(instructions.shard_dir)
    schema = get_schema(instructions.schema)
    if reader.vote_columns != schema.answer_columns:
        raise ValueError(
            f"shards in {instructions.shard_dir} hold votes {reader.vote_columns}, expected "
            f"{schema.answer_columns} for schema {schema.name!r}; make shards from this experiment's catalogs"
        )
    train_ids, pool_ids = list(reader.ids("train")), list(reader.ids("pool"))
    if instructions.oracle.kind == "simulated":
        _check_simulation_shards(reader, instructions)
    experiment_dir.mkdir(parents=True, exist_ok=True)
    save_instructions(experiment_dir, model, acquisition_spec, instructions)
    for stale in experiment_dir.glob(f".{LEDGER}.tmp-*"):
        stale.unlink()
    tmp = experiment_dir / f".{LEDGER}.tmp-{os.getpid()}"
    ledger = Ledger(tmp, schema.n_answers, create=True)
    try:
        ledger.add_galaxies(train_ids, LABELLED)
        counts = reader.votes(reader.positions(train_ids))
        initial = (Delivery(f"initial:{i}", i, tuple(c.tolist())) for i, c in zip(train_ids, counts))
        ledger.record(initial, iteration=0)
        ledger.add_galaxies(pool_ids, UNLABELLED)
    finally:
        ledger.close()
    os.replace(tmp, experiment_dir / LEDGER)
    return experiment_dir


def _check_simulation_shards(reader: ShardReader, instructions: Instructions) -> None:
    hidden = set(pd.read_parquet(instructions.oracle.oracle_path, columns=["id_str"])["id_str"].astype(str))
    unanswerable = sorted(set(reader.ids("pool")) - hidden)
    if unanswerable:
        raise ValueError(
            f"pool galaxies {describe_ids(unanswerable)} in {instructions.shard_dir} have no hidden "
            f"votes in {instructions.oracle.oracle_path}; make the shards from this simulation's "
            "simulation_context catalogs"
        )
    leaked = sorted(hidden & (set(reader.ids("train")) | set(reader.ids("eval"))))
    if leaked:
        raise ValueError(
            f"train/eval galaxies {describe_ids(leaked)} in {instructions.shard_dir} are hidden in the "
            "oracle, so their votes would leak into training; make the shards from this simulation's "
            "simulation_context catalogs"
        )


def build_oracle(experiment_dir: Path, instructions: Instructions, schema: Schema) -> Oracle:
    spec = instructions.oracle
    if spec.kind != "simulated":
        raise NotImplementedError(
            f"oracle kind {spec.kind!r} is not available yet; only 'simulated' is implemented"
        )
    return SimulatedOracle(
        spec.oracle_path,
        Path(experiment_dir) / "oracle_state.sqlite",
        schema,
        reveal_votes=spec.reveal_votes,
        delay=spec.delay,
        duplicate_rate=spec.duplicate_rate,
        seed=spec.seed,
    )


def run_iteration(
    experiment_dir: Path,
    iteration: int | None = None,
    epochs: int | None = None,
    learning_rate: float | None = None,
) -> dict:
    """Run (or finish) one iteration and return its metrics."""
    experiment_dir = Path(experiment_dir)
    model_spec, acquisition_spec, instructions = load_instructions(experiment_dir / INSTRUCTIONS_DIR)
    expected = next_iteration(experiment_dir)
    iteration = expected if iteration is None else iteration
    if iteration != expected:
        raise ValueError(
            f"{experiment_dir}: the next iteration to run is {expected}, not {iteration}; "
            "iterations run in order and a complete one is never rerun"
        )
    schema = get_schema(instructions.schema)
    reader = ShardReader(instructions.shard_dir)
    with _exclusive(experiment_dir), closing(Ledger(experiment_dir / LEDGER, schema.n_answers)) as ledger, \
            closing(build_oracle(experiment_dir, instructions, schema)) as oracle:
        work = partial_dir(experiment_dir, iteration)
        work.mkdir(parents=True, exist_ok=True)
        metrics = _collect(work, iteration, ledger, oracle)
        return _finish_iteration(
            experiment_dir, iteration, work, metrics, reader, ledger, oracle, schema,
            model_spec, acquisition_spec, instructions, epochs, learning_rate,
        )


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


def _collect(work: Path, iteration: int, ledger: Ledger, oracle: Oracle) -> dict:
    """Step 1: record the oracle's deliveries; after a crash, the recorded state is reused."""
    path = work / "collected.json"
    if path.exists():
        return json.loads(path.read_text())
    ledger.record(oracle.collect(iteration), iteration)
    metrics = {
        "iteration": iteration,
        "deliveries_collected": ledger.n_collected_in(iteration),
        "n_pending": ledger.n_pending_before(iteration),
    }
    write_json_atomic(path, metrics)
    logger.info("iteration %d: step collect done (%d deliveries)", iteration, metrics["deliveries_collected"])
    return metrics


def _finish_iteration(
    experiment_dir, iteration, work, metrics, reader, ledger, oracle, schema,
    model_spec, acquisition_spec, instructions, epochs, learning_rate,
) -> dict:
    """Steps 2-6: train, evaluate, acquire, request, and make the iteration complete."""
    train_ids, train_counts = ledger.labelled_votes()
    metrics["n_labelled"] = len(train_ids)
    metrics["votes_used"] = int(train_counts.sum())
    checkpoint, train_record = _train(
        experiment_dir, iteration, work, reader, schema, model_spec, instructions,
        train_ids, train_counts, epochs, learning_rate,
    )
    metrics.update(train_record)
    logger.info("iteration %d: step train done (%.1f s)", iteration, train_record["train_seconds"])

    model = load_model(checkpoint)
    torch.manual_seed(instructions.seed + iteration)  # the same dropout masks after a resume
    metrics.update(_evaluate(work, model, reader, schema, acquisition_spec))
    logger.info("iteration %d: step evaluate done (eval loss %.4f)", iteration, metrics["eval_loss"])

    torch.manual_seed(instructions.seed + iteration + 1)
    acquired, acquisition_seconds = _acquire(
        work, iteration, model, reader, ledger, schema, acquisition_spec, instructions
    )
    metrics["acquisition_seconds"] = acquisition_seconds
    logger.info("iteration %d: step acquire done (%d galaxies)", iteration, len(acquired))

    already = ledger.requested_in(iteration)
    if already and sorted(already) != sorted(acquired):
        raise RuntimeError(
            f"the ledger's requests for iteration {iteration} differ from {work / 'acquired.csv'}; "
            "the partial folder was altered. Restore it, or start a new experiment"
        )
    if not already and acquired:
        ledger.mark_requested(acquired, iteration)
    oracle.request(acquired, iteration)
    metrics["n_acquired"] = len(acquired)
    logger.info("iteration %d: step request done", iteration)

    write_json_atomic(work / "metrics.json", metrics)
    write_json_atomic(work / FINAL_STATE, {"iteration": iteration, "ledger": ledger.counts()})
    os.replace(work, iteration_dir(experiment_dir, iteration))
    write_metrics_table(experiment_dir)
    logger.info("iteration %d: complete", iteration)
    return metrics


def _train(
    experiment_dir, iteration, work, reader, schema, model_spec, instructions,
    train_ids, train_counts, epochs, learning_rate,
) -> tuple[Path, dict]:
    record_path = work / "train_result.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        return work / record.pop("checkpoint"), record
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    settings = model_spec.train
    settings.epochs = epochs if epochs is not None else instructions.epochs
    settings.learning_rate = learning_rate if learning_rate is not None else instructions.learning_rate
    settings.seed = instructions.seed + iteration
    warm_start = None
    if model_spec.warm_start and iteration > 1:
        previous = iteration_dir(experiment_dir, iteration - 1)
        warm_start = previous / json.loads((previous / "train_result.json").read_text())["checkpoint"]
    eval_ids = list(reader.ids("eval"))
    eval_counts = reader.votes(reader.positions(eval_ids))
    result = train_model(
        Path(instructions.shard_dir), schema, train_ids, train_counts, eval_ids, eval_counts,
        settings, model_dir, warm_start=warm_start,
    )
    record = {
        "checkpoint": str(Path(result.best_checkpoint).resolve().relative_to(work.resolve())),
        "best_eval_loss": result.best_eval_loss,
        "epochs_trained": result.epochs_trained,
        "train_seconds": result.seconds,
        "settings": asdict(settings),
    }
    write_json_atomic(record_path, record)
    record.pop("checkpoint")
    return Path(result.best_checkpoint), record


def _evaluate(work, model, reader, schema, spec: AcquisitionSpec) -> dict:
    path = work / "eval_metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    ids, chunks = [], []
    for batch_ids, predictions in predict_batches(
        model, reader, split="eval", n_samples=spec.n_samples, batch_size=spec.batch_size, precision=spec.precision
    ):
        ids.extend(batch_ids)
        chunks.append(predictions)
    counts = reader.votes(reader.positions(ids))
    report = evaluate_predictions(np.concatenate(chunks), counts, schema)
    metrics = {"eval_loss": float(report["loss"]), "eval_report": report}
    if "mae" in report:
        metrics["eval_mae"] = float(report["mae"])
    write_json_atomic(path, metrics)
    return metrics


def _acquire(work, iteration, model, reader, ledger, schema, spec: AcquisitionSpec, instructions) -> tuple[list[str], float]:
    """Score unlabelled pool galaxies and pick the next ones; reuses acquired.csv after a crash."""
    acquired_path = work / "acquired.csv"
    if acquired_path.exists():
        record = json.loads((work / "acquisition.json").read_text())
        return pd.read_csv(acquired_path, dtype={"id_str": str})["id_str"].tolist(), record["seconds"]
    started = time.perf_counter()
    rng = np.random.default_rng([instructions.seed, iteration])
    candidates = sorted(set(ledger.ids(UNLABELLED)) & set(reader.ids("pool")))
    if instructions.pool_size_per_iteration and len(candidates) > instructions.pool_size_per_iteration:
        chosen = rng.choice(len(candidates), instructions.pool_size_per_iteration, replace=False)
        candidates = [candidates[i] for i in np.sort(chosen)]
    n_acquire = min(instructions.subjects_per_iteration, len(candidates))
    selector = acquisition.TopK(
        n_acquire, strategy=spec.selection, beta=spec.power_beta,
        seed=None if spec.selection == "top-k" else instructions.seed * 100_003 + iteration,
    )
    score = acquisition.get_acquisition(spec.function)
    if spec.function == "random":
        batches = ((np.asarray(candidates), None),)
    else:
        batches = predict_batches(
            model, reader, ids=candidates, n_samples=spec.n_samples,
            batch_size=spec.batch_size, precision=spec.precision,
        )
    score_stream(batches, score, selector, work / "scores.parquet", schema, spec.expected_votes, rng)
    acquired = [str(i) for i in selector.result().ids]
    seconds = time.perf_counter() - started
    write_json_atomic(work / "acquisition.json", {"seconds": seconds, "n_candidates": len(candidates), **asdict(spec)})
    tmp = work / ".acquired.csv.tmp"
    pd.DataFrame({"id_str": acquired}).to_csv(tmp, index=False)
    os.replace(tmp, acquired_path)
    return acquired, seconds


def score_stream(batches, score, selector, scores_path: Path, schema, expected_votes: int, rng) -> int:
    """Score (ids, predictions) batches into a streaming selector and a Parquet file of scores.

    predictions: (batch, sample, output), or None for random scores. Memory holds one batch and
    the selector's kept galaxies, whatever the pool size. The file appears only when complete.
    Returns the number of galaxies scored.
    """
    tmp = scores_path.with_name(f".{scores_path.name}.tmp")
    writer, n_scored = None, 0
    try:
        for batch_ids, predictions in batches:
            batch_ids = np.asarray(batch_ids).astype(str)
            if predictions is None:
                scores = acquisition.random_scores(len(batch_ids), rng)
            else:
                scores = score(predictions, schema, expected_votes, rng)
            selector.update(batch_ids, scores)
            table = pa.table({"id_str": batch_ids, "score": np.asarray(scores, dtype=np.float64)})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            n_scored += len(batch_ids)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(tmp, scores_path)
    return n_scored
