"""The ledger: every galaxy's state and every vote delivery, in one SQLite file.

A galaxy is in exactly one state: ``unlabelled``, ``requested`` (pending votes) or ``labelled``.
Votes arrive as deliveries with a unique ``delivery_id``; a delivery seen twice is ignored, so
collecting from an oracle is idempotent and a rerun after a crash never counts a vote twice.
Every change happens inside one SQLite transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoobot.ids import describe_ids
from zoobot.oracles import Delivery

UNLABELLED, REQUESTED, LABELLED = "unlabelled", "requested", "labelled"

_TABLES = """
CREATE TABLE IF NOT EXISTS galaxies (
    id_str TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('unlabelled', 'requested', 'labelled')),
    iteration_acquired INTEGER,
    iteration_labelled INTEGER
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    id_str TEXT NOT NULL REFERENCES galaxies(id_str),
    iteration_collected INTEGER NOT NULL,
    counts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collections (
    iteration INTEGER NOT NULL,
    collected_at TEXT NOT NULL,
    n_handed_over INTEGER NOT NULL,
    n_new INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS galaxies_by_state ON galaxies(state);
CREATE INDEX IF NOT EXISTS deliveries_by_galaxy ON deliveries(id_str);
"""


def votes_per_galaxy(counts: np.ndarray, answer_groups: Sequence[tuple[int, int]]) -> np.ndarray:
    """(galaxy,) classifications behind summed counts (galaxy, n_answers): each galaxy's most-answered
    question (the root of its tree)."""
    per_question = [counts[:, start:stop].sum(axis=1) for start, stop in answer_groups]
    return np.max(per_question, axis=0) if len(counts) else np.zeros(0, dtype=np.int64)


class LedgerError(ValueError):
    """A requested state change contradicts the ledger."""


class Ledger:
    """Galaxy states and vote deliveries, stored in ``path`` (SQLite, WAL journal)."""

    def __init__(self, path: str | Path, n_answers: int, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(
                f"{self.path} is missing: this folder holds no complete experiment; "
                "create one with `zoobot create-instructions` or `zoobot simulate`"
            )
        self.n_answers = n_answers
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_TABLES)

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Transaction(self._db)

    def add_galaxies(self, ids: Sequence[str], state: str = UNLABELLED) -> int:
        """Register galaxies; ids already present are left as they are. Returns how many were new."""
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO galaxies (id_str, state) VALUES (?, ?)",
                ((str(i), state) for i in ids),
            )
            return self._db.total_changes - before

    def mark_requested(self, ids: Sequence[str], iteration: int) -> None:
        """unlabelled -> requested, all or nothing."""
        ids = [str(i) for i in ids]
        with self._transaction():
            states = self._states(ids)
            wrong = [i for i in ids if states.get(i) != UNLABELLED]
            if wrong:
                found = {i: states.get(i, "not in the ledger") for i in wrong[:5]}
                raise LedgerError(
                    f"can only request unlabelled galaxies; {describe_ids(wrong)} are not: {found}"
                )
            self._db.executemany(
                "UPDATE galaxies SET state = ?, iteration_acquired = ? WHERE id_str = ?",
                ((REQUESTED, iteration, i) for i in ids),
            )

    def record(self, deliveries: Iterable[Delivery], iteration: int) -> int:
        """Store new deliveries; a complete one marks its galaxy labelled. Returns how many were new.

        A delivery id seen before is ignored. A partial delivery (``complete=False``) keeps its
        votes and leaves the galaxy requested. Votes for a galaxy that was never requested (or is
        unknown) raise LedgerError and nothing is stored.
        """
        deliveries = list(deliveries)
        with self._transaction():
            states = self._states([d.id_str for d in deliveries])
            unexpected = sorted({d.id_str for d in deliveries if states.get(d.id_str) not in (REQUESTED, LABELLED)})
            if unexpected:
                raise LedgerError(
                    f"votes arrived for galaxies that were never requested: {describe_ids(unexpected)}"
                )
            wrong_length = [d.delivery_id for d in deliveries if len(d.counts) != self.n_answers]
            if wrong_length:
                raise LedgerError(
                    f"deliveries {describe_ids(wrong_length)} do not hold {self.n_answers} vote counts"
                )
            new = 0
            for delivery in deliveries:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?)",
                    (delivery.delivery_id, delivery.id_str, iteration, json.dumps(list(map(int, delivery.counts)))),
                )
                if cursor.rowcount:
                    new += 1
                if cursor.rowcount and delivery.complete:
                    self._db.execute(
                        "UPDATE galaxies SET state = ?, iteration_labelled = COALESCE(iteration_labelled, ?) "
                        "WHERE id_str = ?",
                        (LABELLED, iteration, delivery.id_str),
                    )
            return new

    def note_collection(self, iteration: int, n_handed_over: int, n_new: int) -> None:
        """Remember that the loop collected from the oracle now (``zoobot status`` shows the last)."""
        collected_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._transaction():
            self._db.execute("INSERT INTO collections VALUES (?, ?, ?, ?)", (iteration, collected_at, n_handed_over, n_new))

    def last_collection(self) -> dict | None:
        """{iteration, collected_at (ISO UTC), n_handed_over, n_new} of the latest collection; None if none."""
        row = self._db.execute("SELECT * FROM collections ORDER BY rowid DESC LIMIT 1").fetchone()
        return None if row is None else dict(zip(("iteration", "collected_at", "n_handed_over", "n_new"), row))

    def requests(self) -> list[tuple[str, str, int]]:
        """(id_str, state, iteration_acquired) of every galaxy ever requested, by iteration then id."""
        query = "SELECT id_str, state, iteration_acquired FROM galaxies WHERE iteration_acquired IS NOT NULL"
        return self._db.execute(query + " ORDER BY iteration_acquired, id_str").fetchall()

    def summed_votes(self, ids: Sequence[str]) -> np.ndarray:
        """(galaxy, n_answers) every recorded vote of these galaxies, labelled or not, in ``ids`` order."""
        index = {str(i): n for n, i in enumerate(ids)}
        votes = np.zeros((len(index), self.n_answers), dtype=np.int64)
        unique = list(index)
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            query = f"SELECT id_str, counts FROM deliveries WHERE id_str IN ({','.join('?' * len(chunk))})"
            for id_str, counts in self._db.execute(query, chunk):
                votes[index[id_str]] += json.loads(counts)
        return votes

    def _states(self, ids: Sequence[str]) -> dict[str, str]:
        states: dict[str, str] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            query = f"SELECT id_str, state FROM galaxies WHERE id_str IN ({','.join('?' * len(chunk))})"
            states.update(self._db.execute(query, chunk).fetchall())
        return states

    def ids(self, state: str) -> list[str]:
        """Ids in a state, sorted."""
        rows = self._db.execute("SELECT id_str FROM galaxies WHERE state = ? ORDER BY id_str", (state,))
        return [r[0] for r in rows]

    def ids_array(self, state: str, batch: int = 65_536) -> np.ndarray:
        """Ids in a state, sorted, as an object array filled in batches (no list of every id)."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM galaxies WHERE state = ?", (state,)).fetchone()
        ids = np.empty(count, dtype=object)
        cursor = self._db.execute("SELECT id_str FROM galaxies WHERE state = ? ORDER BY id_str", (state,))
        start = 0
        while rows := cursor.fetchmany(batch):
            ids[start : start + len(rows)] = [row[0] for row in rows]
            start += len(rows)
        return ids[:start]

    def requested_in(self, iteration: int) -> list[str]:
        """Ids acquired in this iteration (requested or since labelled), sorted."""
        rows = self._db.execute(
            "SELECT id_str FROM galaxies WHERE iteration_acquired = ? ORDER BY id_str", (iteration,)
        )
        return [r[0] for r in rows]

    def n_collected_in(self, iteration: int) -> int:
        """Deliveries first recorded in this iteration."""
        query = "SELECT COUNT(*) FROM deliveries WHERE iteration_collected = ?"
        return self._db.execute(query, (iteration,)).fetchone()[0]

    def n_pending_before(self, iteration: int) -> int:
        """Galaxies requested in earlier iterations whose votes have not arrived."""
        query = "SELECT COUNT(*) FROM galaxies WHERE state = ? AND iteration_acquired < ?"
        return self._db.execute(query, (REQUESTED, iteration)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM galaxies GROUP BY state").fetchall()
        return {UNLABELLED: 0, REQUESTED: 0, LABELLED: 0, **dict(rows)}

    def labelled_votes(self) -> tuple[list[str], np.ndarray]:
        """Labelled ids (sorted) and their summed votes over all deliveries: (galaxy, n_answers)."""
        ids = self.ids(LABELLED)
        index = {i: n for n, i in enumerate(ids)}
        votes = np.zeros((len(ids), self.n_answers), dtype=np.int64)
        rows = self._db.execute(
            "SELECT d.id_str, d.counts FROM deliveries d JOIN galaxies g USING (id_str) WHERE g.state = ?",
            (LABELLED,),
        )
        for id_str, counts in rows:
            votes[index[id_str]] += json.loads(counts)
        return ids, votes

    def snapshot(self) -> list[tuple]:
        """Every galaxy row, sorted: (id_str, state, iteration_acquired, iteration_labelled)."""
        return self._db.execute("SELECT * FROM galaxies ORDER BY id_str").fetchall()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
