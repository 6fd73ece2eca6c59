"""Collecting votes from Panoptes: new classifications since a watermark, as deliveries.

Classifications are read from ``/classifications/project`` with ``last_id`` = the watermark,
page by page; each page is stored in one transaction, and the watermark moves to the highest
id read only once every page is stored (pages need not come in id order). A kill
mid-collection loses nothing: the rerun reads from the old watermark again, and classifications
already stored are skipped by id. Each classification of one of our subjects is read alone
against the task map (``convert.panoptes_annotations``) and stored as:

- ``counted``: its votes count;
- ``duplicate``: the same volunteer (user id, or session for logged-out volunteers) already
  counted on this subject;
- ``empty``: no answer at all (null or empty values);
- ``late``: the galaxy already had its retirement limit of votes.

A classification id seen twice is stored once. Answers the task map does not know are kept
with the classification, not guessed, and reported (:meth:`Collector.report`).

Deliveries: the counted votes not yet delivered become one delivery per galaxy, numbered
``panoptes:ID_STR:N`` and marked with the iteration that handed them over. A galaxy is
complete when Panoptes retired it or it has ``retirement_limit`` counted votes; its last
delivery says so (``complete=True``), and later classifications of it are ``late``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timezone

import numpy as np

from zoobot.convert.panoptes_annotations import LOGGED_OUT_PREFIX, TaskMap, classification_votes
from zoobot.oracles.base import Delivery
from zoobot.oracles.panoptes_session import PanoptesSession
from zoobot.oracles.panoptes_settings import PanoptesSettings
from zoobot.oracles.panoptes_state import COUNTED, DUPLICATE, EMPTY, LATE, PanoptesState

logger = logging.getLogger(__name__)

STATUS_BATCH = 50  # subject ids per subject_workflow_statuses request


class Collector:
    def __init__(self, session: PanoptesSession, state: PanoptesState, settings: PanoptesSettings, task_map: TaskMap):
        self.session = session
        self.state = state
        self.settings = settings
        self.task_map = task_map

    def collect(self, iteration: int) -> list[Delivery]:
        """Read what is new on Panoptes, then hand over this iteration's deliveries."""
        ours = self.state.subject_ids()
        if ours:
            unknown_before = self._n_unknown()
            self._read_classifications(ours)
            self._read_retirements()
            new_unknown = self._n_unknown() - unknown_before
            if new_unknown:
                logger.warning(
                    "%d answers in new classifications are not in the task map and were not counted: %s. "
                    "Add them to the task map's answers if they are answers of the schema.",
                    new_unknown, self.describe_unknown(),
                )
        self._make_deliveries(iteration)
        with self.state.transaction():
            self.state.put("last_collection", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return [
            Delivery(f"panoptes:{id_str}:{number}", id_str, tuple(counts), complete)
            for id_str, number, counts, complete in self.state.deliveries(iteration)
        ]

    def _read_classifications(self, ours: dict[str, str]) -> None:
        params = {
            "project_id": self.settings.project_id, "workflow_id": self.settings.workflow_id,
            "last_id": self.state.watermark, "page_size": self.settings.page_size,
        }
        last = self.state.watermark
        for page in self.session.pages("/classifications/project", "classifications", params):
            with self.state.transaction():
                for classification in sorted(page, key=lambda c: int(c["id"])):
                    self._store(classification, ours)
            last = max([last, *(int(c["id"]) for c in page)])
        with self.state.transaction():  # only now: the pages need not come in id order
            self.state.put("last_classification_id", last)

    def _store(self, classification: dict, ours: dict[str, str]) -> None:
        db = self.state.db
        classification_id = int(classification["id"])
        links = classification.get("links") or {}
        subjects = [str(s) for s in links.get("subjects") or []]
        workflow = links.get("workflow")
        if len(subjects) != 1 or subjects[0] not in ours or (workflow is not None and str(workflow) != self.settings.workflow_id):
            return  # another project's, workflow's or experiment's subject
        if db.execute("SELECT 1 FROM classifications WHERE classification_id = ?", (classification_id,)).fetchone():
            return
        subject_id = subjects[0]
        id_str = ours[subject_id]
        votes = classification_votes(self.task_map, classification.get("annotations"))
        user_key = _user_key(classification)
        n_counted = db.execute(
            "SELECT COUNT(*) FROM classifications WHERE id_str = ? AND status = ?", (id_str, COUNTED)
        ).fetchone()[0]
        complete = db.execute("SELECT complete FROM subjects WHERE id_str = ?", (id_str,)).fetchone()[0]
        if not votes.answers:
            status = EMPTY
        elif db.execute(
            "SELECT 1 FROM classifications WHERE subject_id = ? AND user_key = ? AND status IN (?, ?)",
            (subject_id, user_key, COUNTED, LATE),
        ).fetchone():
            status = DUPLICATE
        elif complete or n_counted >= self.settings.retirement_limit:
            status = LATE
        else:
            status = COUNTED
        db.execute(
            "INSERT INTO classifications VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (classification_id, subject_id, id_str, user_key, status, json.dumps(list(votes.answers)),
             json.dumps([list(u) for u in votes.unknown])),
        )

    def _read_retirements(self) -> None:
        pending = [s for (s,) in self.state.db.execute(
            "SELECT subject_id FROM subjects WHERE subject_id IS NOT NULL AND complete = 0 AND retired = 0"
        )]
        retired = []
        for start in range(0, len(pending), STATUS_BATCH):
            params = {"workflow_id": self.settings.workflow_id, "subject_ids": ",".join(pending[start : start + STATUS_BATCH])}
            for page in self.session.pages("/subject_workflow_statuses", "subject_workflow_statuses", params):
                retired += [str(s["links"]["subject"]) for s in page if s.get("retired_at")]
        if retired:
            with self.state.transaction() as db:
                db.executemany("UPDATE subjects SET retired = 1 WHERE subject_id = ?", ((s,) for s in retired))

    def _make_deliveries(self, iteration: int) -> None:
        n_answers = self.task_map.schema.n_answers
        with self.state.transaction() as db:
            galaxies = db.execute(
                "SELECT id_str, retired FROM subjects WHERE subject_id IS NOT NULL AND complete = 0"
            ).fetchall()
            for id_str, retired in galaxies:
                new = db.execute(
                    "SELECT classification_id, answers FROM classifications "
                    "WHERE id_str = ? AND status = ? AND delivery IS NULL",
                    (id_str, COUNTED),
                ).fetchall()
                n_counted = db.execute(
                    "SELECT COUNT(*) FROM classifications WHERE id_str = ? AND status = ?", (id_str, COUNTED)
                ).fetchone()[0]
                complete = bool(retired) or n_counted >= self.settings.retirement_limit
                if not new and not complete:
                    continue
                counts = np.zeros(n_answers, dtype=np.int64)  # (answer,)
                for _, answers in new:
                    np.add.at(counts, np.asarray(json.loads(answers), dtype=np.int64), 1)
                number = 1 + db.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM deliveries WHERE id_str = ?", (id_str,)
                ).fetchone()[0]
                db.execute(
                    "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?)",
                    (id_str, number, json.dumps(counts.tolist()), int(complete), iteration),
                )
                db.executemany(
                    "UPDATE classifications SET delivery = ? WHERE classification_id = ?",
                    ((number, cid) for cid, _ in new),
                )
                if complete:
                    db.execute("UPDATE subjects SET complete = 1 WHERE id_str = ?", (id_str,))

    def _n_unknown(self) -> int:
        return sum(len(json.loads(u)) for (u,) in self.state.db.execute("SELECT unknown FROM classifications"))

    def describe_unknown(self, n_shown: int = 10) -> str:
        """'T0: 'maybe' (3), T2 (task not in the map) (1)' over every stored classification."""
        unknown = Counter()
        for (text,) in self.state.db.execute("SELECT unknown FROM classifications"):
            unknown.update((task, value) for task, value in json.loads(text))
        return ", ".join(
            f"{task}: {value} ({n})" if value is not None else f"{task} (task not in the map) ({n})"
            for (task, value), n in unknown.most_common(n_shown)
        )

    def report(self) -> dict:
        """What collection has seen so far: classifications by status, unknown answers, watermark."""
        db = self.state.db
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM classifications GROUP BY status").fetchall())
        return {
            "classifications": {s: int(by_status.get(s, 0)) for s in (COUNTED, DUPLICATE, EMPTY, LATE)},
            "votes_delivered": int(db.execute(
                "SELECT COUNT(*) FROM classifications WHERE delivery IS NOT NULL").fetchone()[0]),
            "unknown_answers": self._n_unknown(),
            "unknown_answers_seen": self.describe_unknown(),
            "last_classification_id": self.state.watermark,
            "last_collection": self.state.get("last_collection"),
            "galaxies_complete": int(db.execute("SELECT COUNT(*) FROM subjects WHERE complete = 1").fetchone()[0]),
            "galaxies_requested": int(db.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]),
        }


def _user_key(classification: dict) -> str:
    """Who classified: the user id, else the session of a logged-out volunteer, else the classification."""
    user = (classification.get("links") or {}).get("user")
    if user:
        return f"user:{user}"
    session = (classification.get("metadata") or {}).get("session")
    if session:
        return f"{LOGGED_OUT_PREFIX}-{session}"
    return f"classification:{classification['id']}"
