"""Score shard galaxies on Lightning's predict loop: one CPU, one GPU, many GPUs or nodes, same result.

    result = score_shards(model, reader, positions, job, out_dir, accelerator="cpu", devices=2, strategy="ddp")

The galaxies (manifest positions, in the order given) are cut into **work units** of
``job.unit_size`` galaxies; unit ``u`` goes to rank ``u % world_size``, so each rank reads only
its share of the shards. A unit's dropout masks come from ``torch.manual_seed(job.seed, u)``
(and its acquisition rng from ``(job.seed, u)``), so they do not depend on how many processes
run. Each finished unit is written atomically into ``out_dir/parts/``:

- ``unit_NNNNNN.parquet``: the prediction catalog (``prediction_writer.prediction_columns``), when
  ``job.catalog``;
- ``unit_NNNNNN_scores.parquet``: ``id_str, score`` of every galaxy, and
  ``unit_NNNNNN_topk.parquet``: the unit's own best ``job.top_k`` (``acquisition.TopK``), when
  ``job.acquisition``;
- ``unit_NNNNNN_samples.npy``: the raw (galaxy, sample, output) samples, when ``job.samples``.

A rerun (after a kill or pre-emption) skips the units whose files exist; ``job.json`` in the
folder must match the job. After a barrier, rank 0 merges the parts in unit order into
``predictions.parquet``, ``scores.parquet``, ``samples.npy`` and the selection (best first,
merged from the units' top-k lists, which gives exactly the single-process choice because keys
and tie-breaks depend only on (seed, id_str, score)), then removes the parts. Memory on each
rank holds one unit; the merge holds one part and the top-k lists.

SLURM: Lightning's own cluster environment reads ``SLURM_*``; run one task per device and pass
``num_nodes`` and ``devices`` as in the ``sbatch`` example of docs/scale.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from zoobot import acquisition
from zoobot.acquisition.selection import SCORES_SCHEMA
from zoobot.files import atomic_path, write_json_atomic
from zoobot.models import GalaxyModel
from zoobot.predict import BatchScorer, check_predict_options, resolve_precision
from zoobot.prediction_writer import write_predictions
from zoobot.schema import Schema
from zoobot.shards import ProcessLocalReader, ShardReader
from zoobot.uncertainty import DEFAULT_VOTES

logger = logging.getLogger(__name__)

PARTS = "parts"
JOB = "job.json"
CATALOG, SCORES, SELECTION, SAMPLES = "predictions.parquet", "scores.parquet", "selection.parquet", "samples.npy"
SELECTION_SCHEMA = pa.schema([("id_str", pa.string()), ("score", pa.float64()), ("key", pa.float64())])


@dataclass
class ScoringJob:
    """What to compute for each galaxy; every field goes into ``job.json`` (a rerun must match).

    ``acquisition``: a registered function name (``acquisition.list_acquisitions()``) or None;
    ``top_k`` galaxies are then selected by ``selection`` ("top-k", "power", "softmax") with
    ``beta``, never one of ``exclude`` (ids). ``question_votes`` (galaxy, question) gives each
    galaxy's own votes for the catalog's predictive intervals (None: ``default_votes``).
    """

    n_samples: int = 15
    batch_size: int = 256
    precision: str = "32"
    tta_views: int = 0
    compile: bool = False
    seed: int = 0
    unit_size: int = 4096
    catalog: bool = True
    samples: bool = False
    acquisition: str | None = None
    expected_votes: int = 40
    top_k: int = 0
    selection: str = "top-k"
    beta: float = 1.0
    default_votes: int = DEFAULT_VOTES
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_predict_options(self.n_samples, self.batch_size, self.precision, self.tta_views)
        if self.unit_size < 1:
            raise ValueError(f"unit_size: expected >= 1 galaxies per work unit, got {self.unit_size}")
        if self.acquisition is not None and self.acquisition not in acquisition.list_acquisitions():
            raise ValueError(
                f"acquisition: expected one of {list(acquisition.list_acquisitions())} or None, got {self.acquisition!r}"
            )
        if self.top_k and self.acquisition is None:
            raise ValueError(f"top_k={self.top_k} needs an acquisition function to score with")


@dataclass
class ScoringResult:
    """Paths of the merged files (None where the job did not ask for them) and counts."""

    catalog: Path | None
    scores: Path | None
    samples: Path | None
    selection: acquisition.Selection | None
    n_galaxies: int
    n_units: int
    n_units_skipped: int  # found complete on disk from an earlier run
    precision: str
    compile_seconds: float | None


def unit_path(out_dir: Path, unit: int, kind: str = "") -> Path:
    suffix = {"": ".parquet", "scores": "_scores.parquet", "topk": "_topk.parquet", "samples": "_samples.npy"}[kind]
    return Path(out_dir) / PARTS / f"unit_{unit:06d}{suffix}"


def _unit_files(out_dir: Path, unit: int, job: ScoringJob) -> list[Path]:
    kinds = [""] * job.catalog + ["scores", "topk"] * (job.acquisition is not None) + ["samples"] * job.samples
    return [unit_path(out_dir, unit, kind) for kind in kinds]


def _unit_done(out_dir: Path, unit: int, job: ScoringJob) -> bool:
    return all(path.exists() for path in _unit_files(out_dir, unit, job))


class _UnitBatches(Dataset):
    """Batches of this rank's unfinished units: item -> (unit, first, last, positions (B,))."""

    def __init__(self, items: list[tuple[int, bool, bool, np.ndarray]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _as_is(item):
    """No conversion: positions stay a numpy array (Lightning moves only tensors to the device)."""
    return item


class ScoringModule(L.LightningModule):
    """Lightning's predict loop over work units; writes each unit's part files when it ends."""

    def __init__(self, model: GalaxyModel, reader: ShardReader, positions: np.ndarray, job: ScoringJob,
                 out_dir: Path, question_votes: np.ndarray | None = None, exclude: np.ndarray | None = None):
        super().__init__()
        self.model = model
        self._shards = ProcessLocalReader(reader)  # spawned ranks reopen the shard folder
        self.positions = np.asarray(positions, dtype=np.int64)
        self.job = job
        self.out_dir = Path(out_dir)
        self.question_votes = question_votes
        self.exclude = np.asarray(exclude if exclude is not None else [], dtype=str)
        self.scorer: BatchScorer | None = None
        self._unit_ids: list[np.ndarray] = []
        self._unit_predictions: list[np.ndarray] = []
        self._buffer: np.ndarray | None = None

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_buffer"] = None
        return state

    @property
    def reader(self) -> ShardReader:
        return self._shards.get()

    def n_units(self) -> int:
        return -(-len(self.positions) // self.job.unit_size)

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        size, batch = self.job.unit_size, self.job.batch_size
        items = []
        for unit in range(rank, self.n_units(), world):
            if _unit_done(self.out_dir, unit, self.job):
                continue
            positions = self.positions[unit * size : (unit + 1) * size]
            starts = range(0, len(positions), batch)
            items += [(unit, s == 0, s + batch >= len(positions), positions[s : s + batch]) for s in starts]
        return DataLoader(_UnitBatches(items), batch_size=None, shuffle=False, num_workers=0, collate_fn=_as_is)

    def on_predict_start(self) -> None:
        self.scorer = BatchScorer(
            self.model, self.job.n_samples, self.job.precision, self.job.tta_views,
            compile=self.job.compile, batch_size=self.job.batch_size,
        )

    def predict_step(self, batch, batch_idx: int) -> None:
        unit, first, last, positions = batch
        positions = np.asarray(positions)
        if first:
            torch.manual_seed(self.job.seed * 1_000_003 + int(unit))
            self._unit_ids, self._unit_predictions = [], []
        if self._buffer is None:
            reader = self.reader
            self._buffer = np.empty((self.job.batch_size, reader.channels, reader.size, reader.size), dtype=np.uint8)
        images = self.reader.images(positions, out=self._buffer)
        self._unit_ids.append(self.reader.ids_at(positions))
        self._unit_predictions.append(self.scorer(images))  # (batch, sample, output)
        if last:
            self._write_unit(int(unit))

    def _write_unit(self, unit: int) -> None:
        job, schema = self.job, self.model.schema
        ids = np.concatenate(self._unit_ids)
        predictions = np.concatenate(self._unit_predictions)  # (galaxy, sample, output)
        self._unit_ids, self._unit_predictions = [], []
        if job.samples:
            with atomic_path(unit_path(self.out_dir, unit, "samples")) as tmp, open(tmp, "wb") as handle:
                np.save(handle, predictions)
        if job.acquisition is not None:
            rng = np.random.default_rng([job.seed, unit])
            scores = acquisition.get_acquisition(job.acquisition)(predictions, schema, job.expected_votes, rng)
            scores = np.asarray(scores, dtype=np.float64)
            with atomic_path(unit_path(self.out_dir, unit, "scores")) as tmp:
                pq.write_table(pa.table({"id_str": ids, "score": scores}, schema=SCORES_SCHEMA), tmp)
            selector = _selector(job, self.exclude)
            selector.update(ids, scores)
            best = selector.result()
            with atomic_path(unit_path(self.out_dir, unit, "topk")) as tmp:
                table = pa.table({"id_str": best.ids.astype(str), "score": best.scores, "key": best.keys}, schema=SELECTION_SCHEMA)
                pq.write_table(table, tmp)
        if job.catalog:  # last: a unit counts as done when all its files exist
            start = unit * job.unit_size
            votes = None if self.question_votes is None else self.question_votes[start : start + len(ids)]
            write_predictions(
                [(ids, predictions)], unit_path(self.out_dir, unit), schema, question_votes=votes,
                default_votes=job.default_votes, metadata={**job.metadata, "precision": self.scorer.precision},
            )


def _selector(job: ScoringJob, exclude) -> acquisition.TopK:
    seed = None if job.selection == "top-k" else job.seed
    return acquisition.TopK(job.top_k, strategy=job.selection, beta=job.beta, seed=seed, exclude=exclude)


def _prepare(out_dir: Path, job: ScoringJob, n_galaxies: int, fingerprint: str) -> None:
    """Create out_dir/parts and job.json, or check that an earlier run's job.json matches."""
    record = {"job": asdict(job), "n_galaxies": n_galaxies, "fingerprint": fingerprint}
    path = out_dir / JOB
    if path.exists():
        found = json.loads(path.read_text())
        if found != json.loads(json.dumps(record, default=str)):
            raise ValueError(
                f"{out_dir} holds parts of a different scoring job ({path}: {found}); expected {record}. "
                "Delete the folder, or rerun with the options it was started with"
            )
    else:
        (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)


def positions_fingerprint(positions: np.ndarray) -> str:
    """A short hash of the galaxies to score (their manifest positions, in order)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16]


def score_shards(
    model: GalaxyModel,
    reader: ShardReader,
    positions: np.ndarray,
    job: ScoringJob,
    out_dir: Path,
    *,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    question_votes: np.ndarray | None = None,
    exclude=(),
    fingerprint: str = "",
) -> ScoringResult | None:
    """Score ``positions`` of ``reader`` on Lightning's predict loop; rank 0 returns the merged result.

    Other ranks return None. ``fingerprint`` (e.g. a checkpoint hash) joins ``job.json`` so that a
    rerun with another model refuses stale parts. Files, units and resume: module docstring.
    """
    out_dir = Path(out_dir)
    positions = np.asarray(positions, dtype=np.int64)
    if question_votes is not None and len(question_votes) != len(positions):
        raise ValueError(f"question_votes: expected {len(positions)} rows (one per galaxy), got {len(question_votes)}")
    module = ScoringModule(model, reader, positions, job, out_dir, question_votes, np.asarray(list(exclude), dtype=str))
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        use_distributed_sampler=False, inference_mode=True, default_root_dir=out_dir,
    )
    n_units = module.n_units()
    if trainer.global_rank == 0:
        _prepare(out_dir, job, len(positions), fingerprint + ":" + positions_fingerprint(positions))
    n_skipped = sum(_unit_done(out_dir, unit, job) for unit in range(n_units))
    trainer.strategy.barrier("zoobot-scoring-prepared")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*predict returned None.*")
        trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier("zoobot-scoring-done")
    if trainer.global_rank != 0:
        return None
    scorer = module.scorer  # None where ranks were spawned processes
    precision = scorer.precision if scorer else resolve_precision(job.precision, trainer.strategy.root_device)
    compile_seconds = scorer.compile_seconds if scorer else None
    return merge_parts(out_dir, job, model.schema, n_units, len(positions), n_skipped, precision, compile_seconds)


def merge_parts(out_dir: Path, job: ScoringJob, schema: Schema, n_units: int, n_galaxies: int, n_skipped: int = 0,
                precision: str | None = None, compile_seconds: float | None = None) -> ScoringResult:
    """Concatenate the units' parts in unit order; merge the units' top-k lists; remove the parts."""
    out_dir = Path(out_dir)
    missing = [str(p) for u in range(n_units) for p in _unit_files(out_dir, u, job) if not p.exists()]
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} part files are missing after scoring, e.g. {missing[:3]}")
    catalog = None
    if job.catalog and n_units:
        catalog = _concat_parquet([unit_path(out_dir, u) for u in range(n_units)], out_dir / CATALOG)
    elif job.catalog:  # no galaxies: still a valid, empty catalog
        catalog = write_predictions([], out_dir / CATALOG, schema, default_votes=job.default_votes).catalog
    scores = selection = None
    if job.acquisition is not None:
        scores = _concat_parquet([unit_path(out_dir, u, "scores") for u in range(n_units)], out_dir / SCORES, SCORES_SCHEMA)
        merged = [pq.read_table(unit_path(out_dir, u, "topk")) for u in range(n_units)]
        ids = np.concatenate([t["id_str"].to_numpy(zero_copy_only=False).astype(str) for t in merged] or [np.array([], str)])
        values = np.concatenate([t["score"].to_numpy() for t in merged] or [np.zeros(0)])
        keys = np.concatenate([t["key"].to_numpy() for t in merged] or [np.zeros(0)])
        order = np.lexsort((ids, -keys))[: job.top_k]  # by key descending, then id ascending
        selection = acquisition.Selection(ids[order], values[order], keys[order])
        with atomic_path(out_dir / SELECTION) as tmp:
            pq.write_table(pa.table({"id_str": selection.ids, "score": selection.scores, "key": selection.keys},
                                    schema=SELECTION_SCHEMA), tmp)
    samples = None
    if job.samples:
        samples = out_dir / SAMPLES
        parts = [np.load(unit_path(out_dir, u, "samples"), mmap_mode="r") for u in range(n_units)]
        shape = (n_galaxies, *(parts[0].shape[1:] if parts else (job.n_samples, 0)))
        with atomic_path(samples) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            start = 0
            for part in parts:
                array[start : start + len(part)] = part
                start += len(part)
            array.flush()
            del array
    shutil.rmtree(out_dir / PARTS, ignore_errors=True)
    (out_dir / JOB).unlink(missing_ok=True)
    return ScoringResult(
        catalog, scores, samples, selection, n_galaxies, n_units, n_skipped, precision or job.precision, compile_seconds,
    )


def _concat_parquet(parts: list[Path], out: Path, schema: pa.Schema | None = None) -> Path:
    """Row groups of each part, in order, into one file (one part in memory at a time)."""
    with atomic_path(out) as tmp:
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
            if writer is None:
                if schema is None:
                    raise ValueError(f"no parts to merge into {out}")
                writer = pq.ParquetWriter(tmp, schema)
        finally:
            if writer is not None:
                writer.close()
    return out


@dataclass
class SplitScoring:
    """What :func:`score_split_to_parquet` wrote (rank 0), and how fast."""

    catalog: Path
    samples: Path | None
    scores: Path | None
    acquired: Path | None
    samples_array: np.ndarray | None  # (galaxy, sample, output), when asked for
    n_galaxies: int
    n_samples: int
    seconds: float
    precision: str
    compile_seconds: float | None
    n_units_skipped: int

    @property
    def galaxies_per_second(self) -> float:
        return self.n_galaxies / self.seconds if self.seconds > 0 else float("nan")


def score_split_to_parquet(
    model: GalaxyModel,
    reader: ShardReader,
    split: str,
    out_path: Path,
    fingerprint: str = "",
    *,
    save_samples: bool = False,
    keep_samples: bool = False,
    own_votes: bool = False,
    compile: bool | None = False,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    **job_options,
) -> SplitScoring | None:
    """Score one split into ``out_path`` (the catalog), ``<stem>_samples.npy`` (``save_samples``),
    ``<stem>_scores.parquet`` and ``<stem>_acquired.csv`` (with ``acquisition`` / ``top_k``).

    Parts live in ``<out_path>.parts/`` until merged, so a rerun of the same command resumes.
    ``keep_samples`` returns the samples array (for metrics). Other ranks return None.
    """
    import time

    from zoobot.predict import compile_pays
    from zoobot.prediction_writer import default_samples_path
    from zoobot.uncertainty import question_votes

    started = time.perf_counter()
    out_path = Path(out_path)
    positions = reader.split_positions(split)
    votes = None
    if own_votes:
        counts = reader.manifest[model.schema.answer_columns].to_numpy(dtype=np.int64)[positions]  # (galaxy, answer)
        votes = question_votes(counts, model.schema)  # (galaxy, question)
    if compile is None:
        device = "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
        compile = compile_pays(device, reader.size, len(positions))
    job = ScoringJob(compile=compile, samples=save_samples or keep_samples, **job_options)
    work = out_path.with_name(f"{out_path.name}.parts")
    result = score_shards(
        model, reader, positions, job, work, accelerator=accelerator, devices=devices, strategy=strategy,
        num_nodes=num_nodes, question_votes=votes, fingerprint=fingerprint,
    )
    if result is None:
        return None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result.catalog.replace(out_path)
    samples_array = np.load(result.samples) if keep_samples else None
    samples_path = None
    if save_samples:
        samples_path = default_samples_path(out_path)
        result.samples.replace(samples_path)
    scores = acquired = None
    if result.scores is not None:
        scores = out_path.with_name(f"{out_path.stem}_scores.parquet")
        result.scores.replace(scores)
        acquired = out_path.with_name(f"{out_path.stem}_acquired.csv")
        with atomic_path(acquired) as tmp:
            pd.DataFrame({"id_str": result.selection.ids, "score": result.selection.scores}).to_csv(tmp, index=False)
    shutil.rmtree(work, ignore_errors=True)
    return SplitScoring(
        out_path, samples_path, scores, acquired, samples_array, result.n_galaxies, job.n_samples,
        time.perf_counter() - started, result.precision, result.compile_seconds, result.n_units_skipped,
    )
