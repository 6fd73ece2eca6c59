"""The Panoptes oracle's own state: one SQLite file in the experiment folder.

It is what makes a killed request or collection safe to rerun:

- ``subjects``: each requested galaxy (id_str -> Panoptes subject id) and how far its upload
  got (``create_attempts``: a create was sent and may have succeeded; ``uploaded``: its image
  is at its location; ``linked``: it is in its iteration's subject set);
- ``subject_sets``: the set of each iteration and whether the workflow has it;
- ``classifications``: every classification of our subjects seen, by id, with what it counted
  as (``counted``, ``duplicate``, ``empty``, ``late``) and the delivery that carried it;
- ``deliveries``: votes handed to the loop, numbered per galaxy (``panoptes:ID_STR:N``);
- ``meta``: the collection watermark (last classification id read) and the experiment token
  that tags our subjects' metadata.

No credentials are ever stored here.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

STATE_FILE = "oracle_state.sqlite"
COUNTED, DUPLICATE, EMPTY, LATE = "counted", "duplicate", "empty", "late"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subject_sets (
    iteration INTEGER PRIMARY KEY,
    set_id TEXT,
    name TEXT NOT NULL,
    in_workflow INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS subjects (
    id_str TEXT PRIMARY KEY,
    iteration INTEGER NOT NULL,
    subject_id TEXT UNIQUE,
    create_attempts INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    linked INTEGER NOT NULL DEFAULT 0,
    retired INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS classifications (
    classification_id INTEGER PRIMARY KEY,
    subject_id TEXT NOT NULL,
    id_str TEXT NOT NULL,
    user_key TEXT NOT NULL,
    status TEXT NOT NULL,
    answers TEXT NOT NULL,
    unknown TEXT NOT NULL,
    delivery INTEGER
);
CREATE INDEX IF NOT EXISTS classifications_by_voter ON classifications(subject_id, user_key);
CREATE INDEX IF NOT EXISTS classifications_by_galaxy ON classifications(id_str, delivery);
CREATE TABLE IF NOT EXISTS deliveries (
    id_str TEXT NOT NULL,
    number INTEGER NOT NULL,
    counts TEXT NOT NULL,
    complete INTEGER NOT NULL,
    handed_in INTEGER NOT NULL,
    PRIMARY KEY (id_str, number)
);
"""


class PanoptesState:
    """The SQLite state file; every change commits in one transaction (``with state.transaction():``)."""

    def __init__(self, experiment_dir: str | Path):
        self.path = Path(experiment_dir) / STATE_FILE
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_TABLES)
        if self.get("token") is None:
            with self.transaction():
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('token', ?)", (uuid.uuid4().hex,))

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, value) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, str(value)))

    @property
    def token(self) -> str:
        return self.get("token")

    @property
    def watermark(self) -> int:
        """The id of the last classification read (0: none yet)."""
        return int(self.get("last_classification_id") or 0)

    def add_requests(self, ids: Sequence[str], iteration: int) -> None:
        """Remember requested galaxies; one requested before keeps its first iteration."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO subjects (id_str, iteration) VALUES (?, ?)", ((str(i), iteration) for i in ids)
            )

    def unfinished(self) -> list[sqlite3.Row]:
        """Requested galaxies not yet linked to their set, in request order."""
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(
                "SELECT * FROM subjects WHERE linked = 0 ORDER BY iteration, rowid"
            ).fetchall()
        finally:
            self.db.row_factory = None

    def subject_ids(self) -> dict[str, str]:
        """Panoptes subject id -> id_str, for every galaxy with a subject."""
        rows = self.db.execute("SELECT subject_id, id_str FROM subjects WHERE subject_id IS NOT NULL")
        return dict(rows.fetchall())

    def n_uploaded(self, iteration: int) -> tuple[int, int]:
        """(galaxies of ``iteration`` whose subject has its image, galaxies requested in it)."""
        row = self.db.execute(
            "SELECT SUM(uploaded), COUNT(*) FROM subjects WHERE iteration = ?", (iteration,)
        ).fetchone()
        return int(row[0] or 0), int(row[1])

    def deliveries(self, iteration: int) -> list[tuple[str, int, list[int], bool]]:
        """(id_str, number, counts, complete) of the deliveries handed over in ``iteration``."""
        rows = self.db.execute(
            "SELECT id_str, number, counts, complete FROM deliveries WHERE handed_in = ? ORDER BY id_str, number",
            (iteration,),
        )
        return [(i, n, json.loads(c), bool(done)) for i, n, c, done in rows]


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
