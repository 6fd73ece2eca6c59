"""The simulated oracle: reveals the hidden votes of a simulation context.

Optional realism, all deterministic given the seed, so a rerun after a crash sees the same
answers:

- ``reveal_votes=n``: only n of the hidden votes are revealed, drawn without replacement from the
  root question's votes; each child question then keeps as many of its votes as the revealed
  parent answers allow, so counts stay consistent down the tree;
- ``delay=d``: votes requested in iteration m can be collected from iteration m + 1 + d;
- ``duplicate_rate=p``: each delivery is handed over a second time with probability p, as a
  flaky live service might; the ledger must not count it twice.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.ids import describe_ids
from zoobot.oracles import Delivery
from zoobot.schema import Schema


class SimulatedOracle:
    """Answers requests from ``oracle_path`` (id_str + vote columns); requests persist in ``state_path``."""

    def __init__(
        self,
        oracle_path: str | Path,
        state_path: str | Path,
        schema: Schema,
        reveal_votes: int | None = None,
        delay: int = 0,
        duplicate_rate: float = 0.0,
        seed: int = 0,
    ):
        if delay < 0 or not 0 <= duplicate_rate <= 1 or (reveal_votes is not None and reveal_votes < 1):
            raise ValueError(
                f"expected delay >= 0, 0 <= duplicate_rate <= 1 and reveal_votes >= 1; got "
                f"delay={delay}, duplicate_rate={duplicate_rate}, reveal_votes={reveal_votes}"
            )
        self.schema = schema
        self.reveal_votes = reveal_votes
        self.delay = delay
        self.duplicate_rate = duplicate_rate
        self.seed = seed
        hidden = pd.read_parquet(oracle_path, columns=["id_str", *schema.answer_columns])
        self._hidden = dict(
            zip(hidden["id_str"].astype(str), hidden[schema.answer_columns].to_numpy(dtype=np.int64))
        )
        self._db = sqlite3.connect(state_path, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS requests (id_str TEXT PRIMARY KEY, iteration INTEGER NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    def request(self, ids: Sequence[str], iteration: int) -> None:
        unknown = [i for i in ids if i not in self._hidden]
        if unknown:
            raise KeyError(
                f"the simulated oracle has no hidden votes for {describe_ids(unknown)}; only the "
                "simulation's pool (simulation_context/oracle.parquet) can be requested"
            )
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "INSERT OR IGNORE INTO requests VALUES (?, ?)", ((str(i), iteration) for i in ids)
        )
        self._db.execute("COMMIT")

    def collect(self, iteration: int) -> list[Delivery]:
        ready = self._db.execute(
            "SELECT id_str FROM requests WHERE iteration + 1 + ? <= ? ORDER BY id_str",
            (self.delay, iteration),
        ).fetchall()
        deliveries = []
        for (id_str,) in ready:
            rng = np.random.default_rng([self.seed, zlib.crc32(id_str.encode())])
            delivery = Delivery(f"simulated:{id_str}", id_str, tuple(self._reveal(id_str, rng).tolist()))
            deliveries.append(delivery)
            if rng.random() < self.duplicate_rate:
                deliveries.append(delivery)
        return deliveries

    @property
    def ids(self) -> set[str]:
        """Every galaxy whose votes this oracle can reveal."""
        return set(self._hidden)

    def _reveal(self, id_str: str, rng: np.random.Generator) -> np.ndarray:
        """(n_answers,) the revealed subset of one galaxy's hidden votes."""
        hidden = self._hidden[id_str]
        if self.reveal_votes is None:
            return hidden
        revealed = np.zeros_like(hidden)
        columns = self.schema.answer_columns
        for question, (start, stop) in zip(self.schema.questions, self.schema.answer_groups):
            if question.asked_after:
                budget = sum(revealed[columns.index(c)] for c in question.asked_after)
            else:
                budget = self.reveal_votes
            n_draw = min(int(budget), int(hidden[start:stop].sum()))
            if n_draw:
                revealed[start:stop] = rng.multivariate_hypergeometric(hidden[start:stop], n_draw)
        return revealed
