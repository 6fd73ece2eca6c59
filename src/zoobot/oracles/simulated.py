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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.checks import check_int, check_number
from zoobot.ids import describe_ids
from zoobot.oracles.base import Delivery
from zoobot.oracles.registry import register_oracle
from zoobot.schema import Schema

STATE_FILE = "oracle_state.sqlite"
HIDDEN_VOTES = Path("simulation_context") / "oracle.parquet"  # inside a define-experiment folder


@dataclass(frozen=True)
class SimulatedOracleSettings:
    """Where the hidden votes are, and how realistically they are revealed."""

    hidden_votes_path: str  # id_str + vote columns: define-experiment's simulation_context/oracle.parquet
    reveal_votes: int | None = None
    delay: int = 0
    duplicate_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "simulated oracle"
        if not isinstance(self.hidden_votes_path, str) or not self.hidden_votes_path:
            raise ValueError(f"{owner}.hidden_votes_path: expected a path, got {self.hidden_votes_path!r}")
        check_int(owner, "reveal_votes", self.reveal_votes, minimum=1, optional=True)
        check_int(owner, "delay", self.delay, minimum=0)
        check_number(owner, "duplicate_rate", self.duplicate_rate, 0.0, 1.0)
        check_int(owner, "seed", self.seed, minimum=0)

    def votes_per_galaxy(self) -> int | None:
        """How many votes a requested galaxy gets (None: as many as it has hidden)."""
        return self.reveal_votes

    @classmethod
    def for_experiment(cls, catalog_dir: str | Path, seed: int, **options) -> "SimulatedOracleSettings":
        """The hidden votes of ``catalog_dir`` (made by define-experiment --simulation-size)."""
        path = Path(catalog_dir) / HIDDEN_VOTES
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: a simulated oracle needs an experiment made with "
                "`zoobot define-experiment --simulation-size M`"
            )
        return cls(hidden_votes_path=str(path.resolve()), seed=seed, **options)


@register_oracle("simulated")
class SimulatedOracle:
    """Answers requests from hidden votes; requests persist in EXPERIMENT/oracle_state.sqlite."""

    Settings = SimulatedOracleSettings
    live = False

    def __init__(self, settings: SimulatedOracleSettings, experiment_dir: str | Path, schema: Schema):
        self.settings = settings
        self.schema = schema
        hidden = pd.read_parquet(settings.hidden_votes_path, columns=["id_str", *schema.answer_columns])
        self._hidden = dict(
            zip(hidden["id_str"].astype(str), hidden[schema.answer_columns].to_numpy(dtype=np.int64))
        )
        self._db = sqlite3.connect(Path(experiment_dir) / STATE_FILE, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS requests (id_str TEXT PRIMARY KEY, iteration INTEGER NOT NULL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
        if "collected_in" not in columns:  # experiments made before deliveries were handed over once
            self._db.execute("ALTER TABLE requests ADD COLUMN collected_in INTEGER")

    @staticmethod
    def check_shards(settings: SimulatedOracleSettings, reader) -> None:
        """Every pool galaxy must have hidden votes, and no train or eval galaxy may (label leakage)."""
        path = settings.hidden_votes_path
        hidden = set(pd.read_parquet(path, columns=["id_str"])["id_str"].astype(str))
        unanswerable = sorted(set(reader.ids("pool")) - hidden)
        if unanswerable:
            raise ValueError(
                f"pool galaxies {describe_ids(unanswerable)} in {reader.shard_dir} have no hidden "
                f"votes in {path}; make the shards from this simulation's simulation_context catalogs"
            )
        labelled = set(reader.ids("train")) | set(reader.ids("val")) | set(reader.ids("test"))
        leaked = sorted(hidden & labelled)
        if leaked:
            raise ValueError(
                f"train/val/test galaxies {describe_ids(leaked)} in {reader.shard_dir} are hidden in the "
                "oracle, so their votes would leak into training; make the shards from this "
                "simulation's simulation_context catalogs"
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
            "INSERT OR IGNORE INTO requests (id_str, iteration) VALUES (?, ?)", ((str(i), iteration) for i in ids)
        )
        self._db.execute("COMMIT")

    def collect(self, iteration: int) -> list[Delivery]:
        """Deliveries handed over in ``iteration``: those ready now and not handed over before."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "UPDATE requests SET collected_in = ? WHERE collected_in IS NULL AND iteration + 1 + ? <= ?",
            (iteration, self.settings.delay, iteration),
        )
        self._db.execute("COMMIT")
        ready = self._db.execute(
            "SELECT id_str FROM requests WHERE collected_in = ? ORDER BY id_str", (iteration,)
        ).fetchall()
        deliveries = []
        for (id_str,) in ready:
            rng = np.random.default_rng([self.settings.seed, zlib.crc32(id_str.encode())])
            delivery = Delivery(f"simulated:{id_str}", id_str, tuple(self._reveal(id_str, rng).tolist()))
            deliveries.append(delivery)
            if rng.random() < self.settings.duplicate_rate:
                deliveries.append(delivery)
        return deliveries

    @property
    def ids(self) -> set[str]:
        """Every galaxy whose votes this oracle can reveal."""
        return set(self._hidden)

    def _reveal(self, id_str: str, rng: np.random.Generator) -> np.ndarray:
        """(n_answers,) the revealed subset of one galaxy's hidden votes."""
        hidden = self._hidden[id_str]
        if self.settings.reveal_votes is None:
            return hidden
        revealed = np.zeros_like(hidden)
        columns = self.schema.answer_columns
        for question, (start, stop) in zip(self.schema.questions, self.schema.answer_groups):
            if question.asked_after:
                budget = sum(revealed[columns.index(c)] for c in question.asked_after)
            else:
                budget = self.settings.reveal_votes
            n_draw = min(int(budget), int(hidden[start:stop].sum()))
            if n_draw:
                revealed[start:stop] = rng.multivariate_hypergeometric(hidden[start:stop], n_draw)
        return revealed
