"""Requesting votes on Panoptes: one subject set per iteration, one subject per galaxy.

Every step is recorded in ``panoptes_state`` before or after it happens, so a rerun after a
kill or a failure carries on without uploading anything twice:

1. the iteration's subject set is found by name or created, and linked to the workflow;
2. each galaxy's subject is created (``POST /subjects``). A create that failed in transit
   may have succeeded, so before sending it again the project's subjects are searched for
   one tagged with this experiment and the galaxy's ``id_str``;
3. its image is sent to the signed location, then checked at its public location; a lost
   image is sent again to a fresh location;
4. subjects are linked to the set in batches, skipping those already in it; a stale-set
   conflict (409) reloads the set and tries again.

A 403 on create (the account's subject limit) links what was uploaded, then stops with
:class:`SubjectLimitError`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from zoobot.oracles.panoptes_media import subject_image
from zoobot.oracles.panoptes_session import HTTPError, PanoptesError, PanoptesSession, TransientError
from zoobot.oracles.panoptes_settings import PanoptesSettings
from zoobot.oracles.panoptes_state import PanoptesState

logger = logging.getLogger(__name__)

EXPERIMENT_TAG = "#zoobot_experiment"  # hidden subject metadata ('#': not shown to volunteers)
STALE_SET = 409


class SubjectLimitError(PanoptesError):
    """Panoptes refused more subjects: the uploading account reached its subject limit."""


class Uploader:
    """Carries every unfinished request in the state forward: sets, subjects, images, links."""

    def __init__(self, session: PanoptesSession, state: PanoptesState, settings: PanoptesSettings,
                 experiment: str, galaxies: dict[str, dict[str, Any]]):
        self.session = session
        self.state = state
        self.settings = settings
        self.experiment = experiment
        self.galaxies = galaxies  # id_str -> {"file_loc", "ra", "dec"}
        self._ours: dict[str, str] | None = None  # id_str -> subject id of our subjects on Panoptes
        self._image: tuple[str, bytes, str] | None = None  # (id_str, bytes, MIME type) of the last image read

    def run(self) -> None:
        rows = self.state.unfinished()
        for iteration in sorted({row["iteration"] for row in rows}):
            set_id = self._subject_set(iteration)
            limit = None
            for row in [r for r in rows if r["iteration"] == iteration]:
                try:
                    self._upload(row)
                except SubjectLimitError as error:
                    limit = error
                    break
            self._link(iteration, set_id)
            if limit is not None:
                uploaded, requested = self.state.n_uploaded(iteration)
                raise SubjectLimitError(
                    f"Panoptes refused to create more subjects ({limit}). {uploaded} of the {requested} "
                    f"galaxies requested in iteration {iteration} are uploaded and linked to their subject "
                    f"set; {requested - uploaded} are not. The limit is per Zooniverse account: ask the "
                    "Zooniverse team to raise it (contact@zooniverse.org) or upload from another account, "
                    "then run again: the request resumes where it stopped and uploads nothing twice."
                ) from None

    # -- the iteration's subject set ------------------------------------------------------------

    def _subject_set(self, iteration: int) -> str:
        name = self.settings.set_name(self.experiment, iteration)
        row = self.state.db.execute(
            "SELECT set_id, in_workflow FROM subject_sets WHERE iteration = ?", (iteration,)
        ).fetchone()
        set_id, in_workflow = (row[0], row[1]) if row else (None, 0)
        if set_id is None:
            body = {"subject_sets": {"display_name": name, "links": {"project": self.settings.project_id}}}
            set_id = self._create_once(
                f"creating subject set {name!r}",
                lambda: self.session.call("POST", "/subject_sets", json_body=body)[0]["subject_sets"][0]["id"],
                lambda: self._find_set(name),
            )
            with self.state.transaction() as db:
                db.execute("INSERT OR REPLACE INTO subject_sets VALUES (?, ?, ?, 0)", (iteration, str(set_id), name))
        if not in_workflow:
            self._add_set_to_workflow(str(set_id))
            with self.state.transaction() as db:
                db.execute("UPDATE subject_sets SET in_workflow = 1 WHERE iteration = ?", (iteration,))
        return str(set_id)

    def _find_set(self, name: str) -> str | None:
        params = {"project_id": self.settings.project_id, "display_name": name}
        for page in self.session.pages("/subject_sets", "subject_sets", params):
            for subject_set in page:
                if subject_set.get("display_name") == name:
                    return str(subject_set["id"])
        return None

    def _add_set_to_workflow(self, set_id: str) -> None:
        path = f"/workflows/{self.settings.workflow_id}"

        def linked() -> bool:
            body, _ = self.session.retrying(f"GET {path}", lambda: self.session.call("GET", path))
            links = body["workflows"][0].get("links", {}).get("subject_sets", [])
            return set_id in {str(s) for s in links}

        if linked():
            return
        self._create_once(
            f"linking subject set {set_id} to workflow {self.settings.workflow_id}",
            lambda: self.session.call("POST", f"{path}/links/subject_sets", json_body={"subject_sets": [set_id]}),
            lambda: True if linked() else None,
        )

    # -- one galaxy's subject and image ------------------------------------------------------------

    def _upload(self, row) -> None:
        id_str = row["id_str"]
        subject_id, upload_url = row["subject_id"], None
        if subject_id is None:
            subject_id, upload_url = self._create_subject(id_str, row["iteration"], row["create_attempts"])
        if not row["uploaded"]:
            self._send_image(id_str, subject_id, upload_url)

    def _create_subject(self, id_str: str, iteration: int, attempts_before: int) -> tuple[str, str | None]:
        """(subject id, signed upload URL or None when the subject was found rather than made)."""
        data, media_type = self._image_of(id_str)
        metadata = {"id_str": id_str, "iteration": iteration, EXPERIMENT_TAG: self.state.token}
        for key in ("ra", "dec"):
            value = self.galaxies[id_str].get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metadata[key] = float(value)
        body = {"subjects": {"locations": [media_type], "metadata": metadata,
                             "links": {"project": self.settings.project_id}}}

        def post():
            with self.state.transaction() as db:  # from here on the subject may exist
                db.execute("UPDATE subjects SET create_attempts = create_attempts + 1 WHERE id_str = ?", (id_str,))
            try:
                made, _ = self.session.call("POST", "/subjects", json_body=body)
            except TransientError:
                self._ours = None  # the subject may exist now: search again
                raise
            except HTTPError as error:
                if error.status == 403:
                    raise SubjectLimitError(str(error)) from None
                raise
            subject = made["subjects"][0]
            return str(subject["id"]), next(iter(subject["locations"][0].values()))

        def find():
            found = self._our_subjects().get(id_str)
            return None if found is None else (found, None)

        subject_id, upload_url = self._create_once(
            f"creating the subject of galaxy {id_str}", post, find, look_first=attempts_before > 0
        )
        with self.state.transaction() as db:
            db.execute("UPDATE subjects SET subject_id = ? WHERE id_str = ?", (subject_id, id_str))
        return subject_id, upload_url

    def _our_subjects(self) -> dict[str, str]:
        """id_str -> subject id of the project's subjects tagged with this experiment's token."""
        if self._ours is None:
            ours = {}
            params = {"project_id": self.settings.project_id, "page_size": self.settings.page_size}
            for page in self.session.pages("/subjects", "subjects", params):
                for subject in page:
                    metadata = subject.get("metadata") or {}
                    if metadata.get(EXPERIMENT_TAG) == self.state.token and "id_str" in metadata:
                        ours.setdefault(str(metadata["id_str"]), str(subject["id"]))
            self._ours = ours
        return self._ours

    def _image_of(self, id_str: str) -> tuple[bytes, str]:
        if self._image is None or self._image[0] != id_str:
            self._image = (id_str, *subject_image(self.galaxies[id_str]["file_loc"]))
        return self._image[1], self._image[2]

    def _send_image(self, id_str: str, subject_id: str, upload_url: str | None) -> None:
        data, media_type = self._image_of(id_str)
        for n in range(self.settings.retries + 1):
            if upload_url is None:
                location = self._public_location(subject_id)
                if location and self.session.media_exists(location):
                    break
                upload_url = self._fresh_location(subject_id, media_type)
            try:
                self.session.put_media(upload_url, data, media_type)
            except TransientError as error:
                logger.warning("uploading the image of galaxy %s (subject %s) failed: %s", id_str, subject_id, error)
            location = self._public_location(subject_id)
            if location and self.session.media_exists(location):
                break
            logger.warning("the image of galaxy %s (subject %s) is not at its location; sending it again",
                           id_str, subject_id)
            upload_url = None
            time.sleep(self.settings.backoff_s * 2**n)
        else:
            raise PanoptesError(
                f"the image of galaxy {id_str} (subject {subject_id}) did not arrive after "
                f"{self.settings.retries + 1} uploads; run again later to resume"
            )
        with self.state.transaction() as db:
            db.execute("UPDATE subjects SET uploaded = 1 WHERE id_str = ?", (id_str,))

    def _public_location(self, subject_id: str) -> str | None:
        path = f"/subjects/{subject_id}"
        body, _ = self.session.retrying(f"GET {path}", lambda: self.session.call("GET", path))
        locations = body["subjects"][0].get("locations") or []
        return next(iter(locations[0].values()), None) if locations else None

    def _fresh_location(self, subject_id: str, media_type: str) -> str:
        """Set the subject's location again: Panoptes answers with a new signed upload URL."""
        path = f"/subjects/{subject_id}"

        def put():
            _, etag = self.session.call("GET", path)
            body, _ = self.session.call("PUT", path, json_body={"subjects": {"locations": [media_type]}}, etag=etag)
            return next(iter(body["subjects"][0]["locations"][0].values()))

        return self.session.retrying(f"PUT {path}", put)

    # -- linking -------------------------------------------------------------------------------------

    def _link(self, iteration: int, set_id: str) -> None:
        rows = self.state.db.execute(
            "SELECT id_str, subject_id FROM subjects WHERE iteration = ? AND uploaded = 1 AND linked = 0 "
            "ORDER BY rowid", (iteration,),
        ).fetchall()
        if not rows:
            return
        members = self._members(set_id)
        self._mark_linked([i for i, s in rows if s in members])
        todo = [(i, s) for i, s in rows if s not in members]
        size = self.settings.link_batch_size
        for start in range(0, len(todo), size):
            self._link_batch(set_id, todo[start : start + size])

    def _link_batch(self, set_id: str, batch: list[tuple[str, str]]) -> None:
        path = f"/subject_sets/{set_id}/links/subjects"
        for n in range(self.settings.retries + 1):
            try:
                self.session.call("POST", path, json_body={"subjects": [s for _, s in batch]})
                self._mark_linked([i for i, _ in batch])
                return
            except HTTPError as error:
                if error.status != STALE_SET:
                    raise
                logger.warning("subject set %s was stale (%s); reloading it and linking again", set_id, error)
                self.session.retrying(f"GET /subject_sets/{set_id}",
                                      lambda: self.session.call("GET", f"/subject_sets/{set_id}"))
            except TransientError as error:
                logger.warning("linking %d subjects to set %s failed (%s); checking what arrived",
                               len(batch), set_id, error)
                time.sleep(self.settings.backoff_s * 2**n)
                members = self._members(set_id)
                self._mark_linked([i for i, s in batch if s in members])
                batch = [(i, s) for i, s in batch if s not in members]
                if not batch:
                    return
        raise PanoptesError(
            f"linking {len(batch)} subjects to subject set {set_id} still failed after "
            f"{self.settings.retries + 1} attempts; run again later to resume"
        )

    def _members(self, set_id: str) -> set[str]:
        params = {"subject_set_id": set_id, "page_size": self.settings.page_size}
        return {
            str(member["links"]["subject"])
            for page in self.session.pages("/set_member_subjects", "set_member_subjects", params)
            for member in page
        }

    def _mark_linked(self, ids: list[str]) -> None:
        with self.state.transaction() as db:
            db.executemany("UPDATE subjects SET linked = 1 WHERE id_str = ?", ((i,) for i in ids))

    # -- calls that must not take effect twice ------------------------------------------------------

    def _create_once(self, what: str, post: Callable[[], Any], find: Callable[[], Any], look_first: bool = True):
        """``post()`` until it succeeds; after a transient failure (or when ``look_first``),
        ``find()`` first: what it finds is returned instead of posting again."""
        if look_first:
            found = find()
            if found is not None:
                return found
        for n in range(self.settings.retries + 1):
            try:
                return post()
            except TransientError as error:
                if n == self.settings.retries:
                    raise TransientError(
                        f"{what}: still failing after {n + 1} attempts ({error}); run again later: "
                        "the request resumes where it stopped"
                    ) from None
                wait = self.settings.backoff_s * 2**n
                logger.warning("%s failed (%s); checking whether it took effect, then retrying in %.1f s",
                               what, error, wait)
                time.sleep(wait)
                found = find()
                if found is not None:
                    return found
        raise AssertionError("unreachable")
