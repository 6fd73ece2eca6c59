"""The web oracle: people classify requested galaxies on a local page (``zoobot label-server``).

Its state is one SQLite file in the experiment folder, shared by the loop and the page's server
(WAL journal, every change in one ``BEGIN IMMEDIATE`` transaction):

- ``requests``: which galaxies were requested in which iteration (the first request wins);
- ``votes``: one row per completed classification, unique per (galaxy, labeller), so one person's
  vote on one galaxy counts once; each row remembers the iteration that collected it.

Each vote is handed over as its own ``Delivery`` (id ``web:LABELLER:ID_STR``). Votes are ranked
per galaxy in arrival order; the vote that brings a galaxy to ``votes_needed`` and any later
ones are ``complete``, earlier ones partial, so a delivery never changes once made.

A classification walks the schema's questions in tree order: a question is asked when it has
no parent answers or one of them was chosen. ``walk`` checks a sequence of answers and says
which question comes next; a finished walk becomes one vote (1 for each chosen answer).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from zoobot.checks import check_int
from zoobot.oracles.base import Delivery
from zoobot.oracles.registry import register_oracle
from zoobot.schema import Question, Schema

STATE_FILE = "oracle_state.sqlite"
LABELLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}")
LABELLER_RULE = "1 to 40 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"
BUSY_TIMEOUT_S = 30.0

_TABLES = """
CREATE TABLE IF NOT EXISTS requests (
    id_str TEXT PRIMARY KEY,
    iteration INTEGER NOT NULL,
    requested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    vote_id INTEGER PRIMARY KEY AUTOINCREMENT,
    id_str TEXT NOT NULL REFERENCES requests(id_str),
    labeller TEXT NOT NULL,
    answers TEXT NOT NULL,
    counts TEXT NOT NULL,
    voted_at TEXT NOT NULL,
    collected_in INTEGER,
    UNIQUE (id_str, labeller)
);
CREATE INDEX IF NOT EXISTS votes_by_collection ON votes(collected_in);
"""


class ClassificationError(ValueError):
    """A sequence of answers that does not follow the schema's tree."""


class VoteRefused(ValueError):
    """A vote that cannot be recorded: the galaxy was not requested, or this person already voted."""


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_labeller(name: object) -> str:
    """The labeller's name, checked: ``LABELLER_RULE``."""
    if not isinstance(name, str) or not LABELLER_NAME.fullmatch(name):
        raise ValueError(f"labeller name: expected {LABELLER_RULE}, got {name!r}")
    return name


def walk(schema: Schema, answers: Sequence[str]) -> Question | None:
    """The next question to ask after ``answers`` (answer columns, in order); None when finished.

    Raises ClassificationError naming the first answer that is unknown, or that does not answer
    the question asked at that point.
    """
    chosen: set[str] = set()
    remaining = list(answers)
    for question in schema.questions:
        if question.asked_after and not chosen & set(question.asked_after):
            continue
        if not remaining:
            return question
        answer = remaining.pop(0)
        if answer not in question.columns():
            raise ClassificationError(
                f"answer {len(chosen) + 1} ({answer!r}) does not answer the question asked at that point, "
                f"{question.name!r}: expected one of {question.columns()}"
            )
        chosen.add(answer)
    if remaining:
        raise ClassificationError(f"answers {remaining} come after the last question reached")
    return None


def classification_counts(schema: Schema, answers: Sequence[str]) -> tuple[int, ...]:
    """(n_answers,) one finished classification as vote counts: 1 for each chosen answer."""
    if walk(schema, answers) is not None:
        raise ClassificationError(f"the classification {list(answers)} is unfinished")
    chosen = set(answers)
    return tuple(int(column in chosen) for column in schema.answer_columns)


@dataclass(frozen=True)
class WebOracleSettings:
    """How many people must classify a galaxy before it counts as labelled."""

    votes_needed: int = 3

    def __post_init__(self) -> None:
        check_int("web oracle", "votes_needed", self.votes_needed, minimum=1)

    def votes_per_galaxy(self) -> int:
        """Votes a requested galaxy gets: N for BALD."""
        return self.votes_needed

    @classmethod
    def for_experiment(cls, catalog_dir: str | Path, seed: int, **options) -> "WebOracleSettings":
        """Nothing to read from the catalogs; the seed plays no part (people answer)."""
        return cls(**options)


@dataclass(frozen=True)
class Progress:
    """Where labelling stands. votes_histogram: {votes so far: galaxies} over the open requests."""

    votes_needed: int
    n_requested: int
    n_complete: int
    votes_histogram: dict[int, int] = field(default_factory=dict)
    votes_by_labeller: dict[str, int] = field(default_factory=dict)
    last_vote_at: str | None = None

    @property
    def n_open(self) -> int:
        return self.n_requested - self.n_complete


@register_oracle("web")
class WebOracle:
    """Votes from the local labelling page; state in EXPERIMENT/oracle_state.sqlite.

    Safe to use from several threads and processes at once: every call opens its own connection.
    """

    Settings = WebOracleSettings
    live = True

    def __init__(self, settings: WebOracleSettings, experiment_dir: str | Path, schema: Schema):
        self.settings = settings
        self.schema = schema
        self.path = Path(experiment_dir) / STATE_FILE
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_TABLES)

    @staticmethod
    def check_shards(settings: WebOracleSettings, reader) -> None:
        """The page shows pool galaxies; a pool is needed."""
        if not reader.counts["pool"]:
            raise ValueError(f"shards in {reader.shard_dir} have no pool: the web oracle has nothing to show")

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self):
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Nothing stays open between calls."""

    def request(self, ids: Sequence[str], iteration: int) -> None:
        at = now_utc()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO requests (id_str, iteration, requested_at) VALUES (?, ?, ?)",
                ((str(i), iteration, at) for i in ids),
            )

    def collect(self, iteration: int) -> list[Delivery]:
        """Votes not handed over in an earlier iteration, one delivery each (see the module doc)."""
        with self._transaction() as db:
            db.execute("UPDATE votes SET collected_in = ? WHERE collected_in IS NULL", (iteration,))
            rows = db.execute(
                "SELECT id_str, labeller, counts, rank FROM ("
                " SELECT id_str, labeller, counts, collected_in,"
                " ROW_NUMBER() OVER (PARTITION BY id_str ORDER BY vote_id) AS rank FROM votes"
                ") WHERE collected_in = ? ORDER BY id_str, rank",
                (iteration,),
            ).fetchall()
        needed = self.settings.votes_needed
        return [
            Delivery(f"web:{labeller}:{id_str}", id_str, tuple(json.loads(counts)), complete=rank >= needed)
            for id_str, labeller, counts, rank in rows
        ]

    def add_vote(self, id_str: str, labeller: str, answers: Sequence[str]) -> tuple[int, ...]:
        """Record one finished classification; returns its counts.

        Raises ClassificationError for answers off the tree, VoteRefused when the galaxy was
        never requested or this labeller already classified it (nothing is stored then).
        """
        labeller = check_labeller(labeller)
        counts = classification_counts(self.schema, answers)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM requests WHERE id_str = ?", (id_str,)).fetchone() is None:
                raise VoteRefused(f"galaxy {id_str!r} was never requested")
            cursor = db.execute(
                "INSERT OR IGNORE INTO votes (id_str, labeller, answers, counts, voted_at) VALUES (?, ?, ?, ?, ?)",
                (id_str, labeller, json.dumps(list(answers)), json.dumps(counts), now_utc()),
            )
            if not cursor.rowcount:
                raise VoteRefused(f"{labeller} already classified galaxy {id_str!r}; one vote per person counts")
        return counts

    def is_requested(self, id_str: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM requests WHERE id_str = ?", (id_str,)).fetchone() is not None

    def has_voted(self, id_str: str, labeller: str) -> bool:
        with self._connect() as db:
            query = "SELECT 1 FROM votes WHERE id_str = ? AND labeller = ?"
            return db.execute(query, (id_str, labeller)).fetchone() is not None

    def next_galaxy(self, labeller: str) -> str | None:
        """A requested galaxy this labeller has not classified and that needs votes; None if none.

        Oldest request first, then the galaxy closest to complete, then by id.
        """
        with self._connect() as db:
            row = db.execute(
                "SELECT r.id_str FROM requests r LEFT JOIN votes v USING (id_str) "
                "GROUP BY r.id_str HAVING COUNT(v.vote_id) < ? AND SUM(v.labeller = ?) IS NOT 1 "
                "ORDER BY r.iteration, COUNT(v.vote_id) DESC, r.id_str LIMIT 1",
                (self.settings.votes_needed, labeller),
            ).fetchone()
        return None if row is None else row[0]

    def votes_so_far(self) -> dict[str, int]:
        """{id_str: votes} for every requested galaxy."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.id_str, COUNT(v.vote_id) FROM requests r LEFT JOIN votes v USING (id_str) GROUP BY r.id_str"
            ).fetchall()
        return dict(rows)

    def progress(self) -> Progress:
        votes = self.votes_so_far()
        needed = self.settings.votes_needed
        histogram: dict[int, int] = {}
        for n in votes.values():
            histogram[min(n, needed)] = histogram.get(min(n, needed), 0) + 1
        with self._connect() as db:
            by_labeller = dict(db.execute("SELECT labeller, COUNT(*) FROM votes GROUP BY labeller ORDER BY labeller"))
            last = db.execute("SELECT MAX(voted_at) FROM votes").fetchone()[0]
        return Progress(
            votes_needed=needed,
            n_requested=len(votes),
            n_complete=sum(n >= needed for n in votes.values()),
            votes_histogram=dict(sorted(histogram.items())),
            votes_by_labeller=by_labeller,
            last_vote_at=last,
        )

    def requested_ids(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT id_str FROM requests ORDER BY id_str")]
