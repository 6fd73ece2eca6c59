"""Selection: which scored galaxies to acquire, streaming over the pool.

:func:`select` and the streaming :class:`TopK` pick the batch by plain top-k, or stochastically
(power / softmax sampling, Kirsch et al. 2023) through the Gumbel-top-k trick with per-galaxy
noise derived from (seed, id_str). :func:`score_stream` scores batches of MC predictions into a
selector and a Parquet file of scores, holding one batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoobot.acquisition.registry import random_scores
from zoobot.files import atomic_path
from zoobot.ids import describe_ids, describe_rows

STRATEGIES = ("top-k", "power", "softmax")
#: Columns of the scores file that :func:`score_stream` writes.
SCORES_SCHEMA = pa.schema([("id_str", pa.string()), ("score", pa.float64())])

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def id_uniforms(ids: np.ndarray, seed: int) -> np.ndarray:
    """A Uniform(0, 1) number per id that depends only on (seed, id_str), not on order or chunking.

    FNV-1a over the UTF-8 bytes of each id, seeded, then the splitmix64 finaliser; vectorised.
    """
    ids = np.asarray(ids, dtype=str)
    if ids.size == 0:
        return np.zeros(0)
    data = np.char.encode(ids, "utf-8")  # (galaxy,) fixed-width bytes
    lengths = np.char.str_len(data)  # (galaxy,)
    width = data.dtype.itemsize
    data_bytes = np.frombuffer(data.tobytes(), dtype=np.uint8).reshape(len(ids), width)  # (galaxy, byte)
    seed_hash = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    h = np.full(len(ids), _FNV_OFFSET ^ seed_hash, dtype=np.uint64)  # (galaxy,)
    for column in range(width):
        stepped = (h ^ data_bytes[:, column].astype(np.uint64)) * _FNV_PRIME
        h = np.where(column < lengths, stepped, h)
    h = _splitmix64(h)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # (galaxy,) in (0, 1)


def _resolve_seed(seed, strategy: str) -> int | None:
    if strategy == "top-k":
        return None
    if seed is None:
        raise TypeError(
            f"strategy {strategy!r} is random: pass seed=<int> (e.g. the iteration number) "
            "or an np.random.Generator"
        )
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    raise TypeError(f"expected seed as an int or np.random.Generator, got {type(seed).__name__}")


def selection_keys(
    ids, scores, strategy: str = "top-k", beta: float = 1.0, seed: int | None = None
) -> np.ndarray:
    """Keys whose top-k is the selected batch. ids, scores: (galaxy,).

    - "top-k": the scores themselves.
    - "power": beta * log(score) + Gumbel: top-k samples without replacement with P ~ score^beta.
    - "softmax": beta * score + Gumbel: P ~ exp(beta * score).
    Gumbel noise comes from :func:`id_uniforms`, so each galaxy's key is independent of chunking.
    ``seed`` must be an int here.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if strategy == "top-k":
        return scores.copy()
    gumbel = -np.log(-np.log(id_uniforms(ids, seed)))  # (galaxy,)
    if strategy == "power":
        with np.errstate(divide="ignore"):
            return beta * np.log(scores) + gumbel  # score 0 -> key -inf: never preferred
    if strategy == "softmax":
        return beta * scores + gumbel
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


@dataclass(frozen=True)
class Selection:
    """Selected galaxies, best first: ids (n,), their scores (n,) and selection keys (n,)."""

    ids: np.ndarray
    scores: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _best(ids: np.ndarray, scores: np.ndarray, keys: np.ndarray, k: int):
    """The k largest keys, ties broken by ascending id_str; returned best first."""
    if k == 0:
        return ids[:0], scores[:0], keys[:0]
    if len(keys) > k:
        kth = np.partition(keys, len(keys) - k)[len(keys) - k]  # the k-th largest key
        above = np.flatnonzero(keys > kth)
        tied = np.flatnonzero(keys == kth)
        tied = tied[np.argsort(ids[tied], kind="stable")[: k - len(above)]]
        chosen = np.concatenate([above, tied])
        ids, scores, keys = ids[chosen], scores[chosen], keys[chosen]
    order = np.lexsort((ids, -keys))  # by key descending, then id ascending
    return ids[order], scores[order], keys[order]


class TopK:
    """Streaming selection of the best k galaxies over chunks of (ids, scores).

    Memory holds the k kept galaxies, one chunk and the excluded ids, never the whole pool.
    ``strategy`` is "top-k", "power" or "softmax" (see :func:`selection_keys`); ``exclude``
    holds ids that must never be selected (labelled or pending). Ties are broken by id_str, so
    the result does not depend on how the pool was chunked. ids must be unique across the stream;
    duplicates are caught within a chunk and against the kept galaxies.
    """

    def __init__(
        self,
        k: int,
        strategy: str = "top-k",
        beta: float = 1.0,
        seed: int | np.random.Generator | None = None,
        exclude: Iterable[str] = (),
    ):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"expected k as an int >= 0, got {k!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        if not (np.isfinite(beta) and beta > 0):
            raise ValueError(f"expected beta > 0, got {beta!r}")
        self.k = int(k)
        self.strategy = strategy
        self.beta = float(beta)
        self.seed = _resolve_seed(seed, strategy)
        self._exclude = np.unique(np.asarray(list(exclude), dtype=str))  # sorted
        self._ids = np.array([], dtype=str)
        self._scores = np.zeros(0)
        self._keys = np.zeros(0)
        self.n_seen = 0
        self.n_excluded = 0

    def update(self, ids, scores) -> None:
        """Offer one chunk: ids (n,) of id_str, scores (n,) finite."""
        ids = np.asarray(ids, dtype=str)
        scores = np.asarray(scores, dtype=np.float64)
        if ids.ndim != 1 or scores.shape != ids.shape:
            raise ValueError(f"expected ids and scores of one shape (n,), got {ids.shape} and {scores.shape}")
        bad = ~np.isfinite(scores)
        if bad.any():
            raise ValueError(
                f"scores contain NaN or inf; expected finite values: {describe_rows(np.flatnonzero(bad), ids)}"
            )
        if self.strategy == "power" and (scores < 0).any():
            raise ValueError(
                "power sampling needs scores >= 0, got negative scores: "
                f"{describe_rows(np.flatnonzero(scores < 0), ids)}"
            )
        unique, counts = np.unique(ids, return_counts=True)
        repeated = unique[counts > 1]
        if len(repeated) == 0:
            repeated = ids[np.isin(ids, self._ids)]
        if len(repeated):
            raise ValueError(f"expected unique ids, got repeated ids: {describe_ids(repeated)}")
        self.n_seen += len(ids)
        if len(self._exclude):
            position = np.clip(np.searchsorted(self._exclude, ids), 0, len(self._exclude) - 1)
            keep = self._exclude[position] != ids
            self.n_excluded += int((~keep).sum())
            ids, scores = ids[keep], scores[keep]
        keys = selection_keys(ids, scores, self.strategy, self.beta, self.seed)
        self._ids, self._scores, self._keys = _best(
            np.concatenate([self._ids, ids]),
            np.concatenate([self._scores, scores]),
            np.concatenate([self._keys, keys]),
            self.k,
        )

    def result(self) -> Selection:
        """The selection so far, best first (fewer than k if fewer galaxies were offered)."""
        return Selection(self._ids.copy(), self._scores.copy(), self._keys.copy())


def select(
    ids,
    scores,
    k: int,
    strategy: str = "top-k",
    beta: float = 1.0,
    seed: int | np.random.Generator | None = None,
    exclude: Iterable[str] = (),
) -> Selection:
    """Pick k galaxies from one array of scores; the one-chunk case of :class:`TopK`."""
    selector = TopK(k, strategy=strategy, beta=beta, seed=seed, exclude=exclude)
    selector.update(ids, scores)
    return selector.result()


def score_stream(batches, score, selector, scores_path: Path, schema, expected_votes: int, rng) -> int:
    """Score (ids, predictions) batches into a streaming selector and a Parquet file of scores.

    predictions: (batch, sample, output), or None for random scores. Memory holds one batch and
    the selector's kept galaxies, whatever the pool size. The file appears only when complete.
    Returns the number of galaxies scored.
    """
    n_scored = 0
    with atomic_path(scores_path) as tmp, pq.ParquetWriter(tmp, SCORES_SCHEMA) as writer:
        for batch_ids, predictions in batches:
            batch_ids = np.asarray(batch_ids).astype(str)
            if predictions is None:
                scores = random_scores(len(batch_ids), rng)
            else:
                scores = score(predictions, schema, expected_votes, rng)
            selector.update(batch_ids, scores)
            table = pa.table(
                {"id_str": batch_ids, "score": np.asarray(scores, dtype=np.float64)}, schema=SCORES_SCHEMA
            )
            writer.write_table(table)
            n_scored += len(batch_ids)
    return n_scored
