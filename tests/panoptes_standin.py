"""A local stand-in of the Zooniverse Panoptes API, served on 127.0.0.1 for the tests.

It implements exactly what the Panoptes oracle calls through panoptes-client, with the same
request and response shapes as Panoptes (JSON API with ``meta[slug].next_href`` paging,
ETags and If-Match on updates, signed upload URLs returned on create):

- login: ``GET /users/sign_in`` (CSRF token header), ``POST /users/sign_in``, ``POST /oauth/token``;
- ``/api/projects``, ``/api/workflows`` (+ ``links/subject_sets``), ``/api/subject_sets``
  (+ ``links/subjects``), ``/api/set_member_subjects``, ``/api/subjects`` (create, list by
  project, show, update locations), ``/api/classifications/project`` (``last_id`` paging),
  ``/api/classifications`` (volunteers post here), ``/api/subject_workflow_statuses``;
- media: ``PUT /upload/<token>`` (the signed location), ``HEAD|GET /media/<key>`` (public).

Faults are injected with :meth:`PanoptesStandIn.fault` (see ``FAULTS``): a 5xx, a response held
back after the request took effect (the client times out), a lost media upload, the per-user
subject limit (``subject_limit``), a stale subject set, overlapping classification pages, and a
hook that runs after a matching request took effect (to kill a client mid-request).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

FAULTS = ("5xx", "timeout", "lose_media", "stale", "overlap", "hook")


@dataclass
class Fault:
    method: str
    path: str  # regular expression matched against the path
    kind: str
    times: int = 1  # how many matching requests it hits (then it is spent)
    skip: int = 0  # matching requests let through before it hits
    hook: Callable[[], None] | None = None


class PanoptesStandIn:
    """A Panoptes API with one project and one workflow, on ``self.url``; stop with ``close()``."""

    def __init__(self, username: str = "zoobot-tester", password: str = "not-a-real-password-7f3a",
                 project_id: str = "1101", workflow_id: str = "2202", retire_after: int | None = None,
                 subject_limit: int | None = None, hang_s: float = 1.0):
        self.username, self.password = username, password
        self.project_id, self.workflow_id = project_id, workflow_id
        self.retire_after = retire_after
        self.subject_limit = subject_limit
        self.hang_s = hang_s
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.sessions: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}  # bearer token -> user id
        self.owner_id = "7"
        self.subjects: dict[str, dict] = {}
        self.uploads: dict[str, tuple[str, int]] = {}  # signed upload token -> (subject id, location index)
        self.media: dict[str, bytes] = {}
        self.subject_sets: dict[str, dict] = {}
        self.workflow_sets: list[str] = []
        self.classifications: list[dict] = []
        self.later: list[list[tuple[dict, str | None]]] = []  # batches volunteers post between two collections
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []
        self.routes = Map([
            Rule("/users/sign_in", endpoint="sign_in"),
            Rule("/oauth/token", endpoint="token"),
            Rule("/api/projects/<pid>", endpoint="project"),
            Rule("/api/workflows/<wid>", endpoint="workflow"),
            Rule("/api/workflows/<wid>/links/subject_sets", endpoint="workflow_link"),
            Rule("/api/subject_sets", endpoint="subject_sets"),
            Rule("/api/subject_sets/<sid>", endpoint="subject_set"),
            Rule("/api/subject_sets/<sid>/links/subjects", endpoint="set_link"),
            Rule("/api/set_member_subjects", endpoint="set_members"),
            Rule("/api/subjects", endpoint="subjects"),
            Rule("/api/subjects/<sid>", endpoint="subject"),
            Rule("/api/classifications", endpoint="classify"),
            Rule("/api/classifications/project", endpoint="project_classifications"),
            Rule("/api/subject_workflow_statuses", endpoint="statuses"),
            Rule("/upload/<token>", endpoint="upload"),
            Rule("/media/<key>", endpoint="media"),
        ])
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls -----------------------------------------------------------------------------

    def fault(self, method: str, path: str, kind: str, times: int = 1, skip: int = 0, hook=None) -> Fault:
        """Inject a fault into the next ``times`` requests matching (after ``skip`` of them)."""
        if kind not in FAULTS:
            raise ValueError(f"fault kind: expected one of {FAULTS}, got {kind!r}")
        fault = Fault(method.upper(), path, kind, times, skip, hook)
        with self.lock:
            self.faults.append(fault)
        return fault

    def classify_later(self, batches: list[list[tuple[dict, str | None]]]) -> None:
        """Classifications (body, user id) that volunteers make while time passes: one batch is
        posted each time the project's classifications are listed from their first page."""
        with self.lock:
            self.later.extend(batches)

    def unspent(self) -> list[Fault]:
        """Faults that have not hit all their requests yet (a test whose fault never fired proves nothing)."""
        with self.lock:
            return [f for f in self.faults if f.times]

    def volunteer_token(self, user_id: str) -> str:
        token = secrets.token_hex(8)
        with self.lock:
            self.tokens[token] = str(user_id)
        return token

    def subjects_of(self, id_str: str) -> list[str]:
        """Subject ids whose metadata names this galaxy (two would be a duplicate upload)."""
        with self.lock:
            return [sid for sid, s in self.subjects.items() if s["metadata"].get("id_str") == id_str]

    def set_members(self, set_id: str) -> list[str]:
        with self.lock:
            return list(self.subject_sets[set_id]["subjects"])

    def has_media(self, subject_id: str) -> bool:
        with self.lock:
            return f"{subject_id}-0" in self.media

    def n_calls(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.calls if m == method and re.fullmatch(path, p))

    # -- WSGI ----------------------------------------------------------------------------------------

    def app(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.calls.append((request.method, request.path))
            fault = self._take_fault(request)
        if fault is not None and fault.kind == "5xx":
            return _json({"errors": [{"message": "Internal Server Error"}]}, 503)(environ, start_response)
        if fault is not None and fault.kind == "stale":
            return _json({"errors": [{"message": "Attempted to update a stale object: SubjectSet."}]}, 409)(
                environ, start_response)
        try:
            endpoint, args = self.routes.bind_to_environ(environ).match()
            with self.lock:
                response = getattr(self, f"_{endpoint}")(request, fault, **args)
        except HTTPException as error:
            response = _json({"errors": [{"message": error.description}]}, error.code)
        if fault is not None and fault.kind == "hook":
            fault.hook()
        if fault is not None and fault.kind == "timeout":
            time.sleep(self.hang_s)  # it took effect, but the client gives up before this answer
        return response(environ, start_response)

    def _take_fault(self, request: Request) -> Fault | None:
        """The first fault that hits this request; every matching fault counts it."""
        chosen = None
        for fault in self.faults:
            if fault.times and fault.method == request.method and re.fullmatch(fault.path, request.path):
                if fault.skip:
                    fault.skip -= 1
                elif chosen is None:
                    fault.times -= 1
                    chosen = fault
        return chosen

    def _user(self, request: Request, required: bool = True) -> str | None:
        header = request.headers.get("Authorization", "")
        user = self.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if user is None and required:
            raise _Error(401, "You must be logged in to access this resource.")
        return user

    def _owner(self, request: Request) -> None:
        if self._user(request) != self.owner_id:
            raise _Error(403, "You do not have access to this project.")

    # -- login ---------------------------------------------------------------------------------------

    def _sign_in(self, request: Request, fault):
        if request.method == "GET":
            session, csrf = secrets.token_hex(8), secrets.token_hex(8)
            self.sessions[session] = {"csrf": csrf, "user": None}
            response = Response("{}", content_type="application/json", headers={"x-csrf-token": csrf})
            response.set_cookie("_standin_session", session)
            return response
        state = self.sessions.get(request.cookies.get("_standin_session", ""))
        body = request.get_json(silent=True) or {}
        if state is None or body.get("authenticity_token") != state["csrf"]:
            return _json({"error": "Invalid authenticity token."}, 422)
        user = body.get("user") or {}
        if user.get("login") != self.username or user.get("password") != self.password:
            return _json({"error": "Invalid login or password."}, 401)
        state["user"] = self.owner_id
        return _json({"users": [{"id": self.owner_id, "login": self.username}]})

    def _token(self, request: Request, fault):
        state = self.sessions.get(request.cookies.get("_standin_session", ""))
        if state is None or state["user"] is None:
            return _json({"errors": ["not signed in"]}, 401)
        token = secrets.token_hex(16)
        self.tokens[token] = state["user"]
        return _json({"access_token": token, "token_type": "Bearer", "expires_in": 7200,
                      "refresh_token": secrets.token_hex(16)})

    # -- projects, workflows, subject sets -------------------------------------------------------------

    def _project(self, request: Request, fault, pid):
        self._owner(request)
        if pid != self.project_id:
            raise NotFound(f"Could not find project with id='{pid}'")
        return _json({"projects": [{"id": pid, "links": {"workflows": [self.workflow_id]}}]})

    def _workflow_resource(self) -> dict:
        return {"id": self.workflow_id, "links": {"project": self.project_id, "subject_sets": list(self.workflow_sets)}}

    def _workflow(self, request: Request, fault, wid):
        self._owner(request)
        if wid != self.workflow_id:
            raise NotFound(f"Could not find workflow with id='{wid}'")
        return _resource("workflows", self._workflow_resource())

    def _workflow_link(self, request: Request, fault, wid):
        self._owner(request)
        if wid != self.workflow_id:
            raise NotFound(f"Could not find workflow with id='{wid}'")
        for set_id in (request.get_json() or {}).get("subject_sets", []):
            if str(set_id) not in self.subject_sets:
                raise _Error(422, f"subject set {set_id} does not exist")
            if str(set_id) not in self.workflow_sets:
                self.workflow_sets.append(str(set_id))
        return _resource("workflows", self._workflow_resource())

    def _subject_sets(self, request: Request, fault):
        self._owner(request)
        if request.method == "POST":
            body = (request.get_json() or {}).get("subject_sets", {})
            set_id = str(next(self.ids))
            self.subject_sets[set_id] = {
                "id": set_id, "display_name": body["display_name"], "metadata": {},
                "links": {"project": str(body["links"]["project"])}, "subjects": [],
            }
            return _resource("subject_sets", self._set_resource(set_id), status=201)
        found = [
            self._set_resource(s) for s in self.subject_sets
            if request.args.get("project_id", self.subject_sets[s]["links"]["project"]) == self.subject_sets[s]["links"]["project"]
            and request.args.get("display_name", self.subject_sets[s]["display_name"]) == self.subject_sets[s]["display_name"]
        ]
        return _page(request, "/subject_sets", "subject_sets", found)

    def _set_resource(self, set_id: str) -> dict:
        subject_set = self.subject_sets[set_id]
        return {"id": set_id, "display_name": subject_set["display_name"], "metadata": {},
                "set_member_subjects_count": len(subject_set["subjects"]), "links": dict(subject_set["links"])}

    def _subject_set(self, request: Request, fault, sid):
        self._owner(request)
        if sid not in self.subject_sets:
            raise NotFound(f"Could not find subject_set with id='{sid}'")
        return _resource("subject_sets", self._set_resource(sid))

    def _set_link(self, request: Request, fault, sid):
        self._owner(request)
        if sid not in self.subject_sets:
            raise NotFound(f"Could not find subject_set with id='{sid}'")
        ids = [str(s) for s in (request.get_json() or {}).get("subjects", [])]
        members = self.subject_sets[sid]["subjects"]
        unknown = [s for s in ids if s not in self.subjects]
        if unknown:
            raise _Error(422, f"subjects {unknown} do not exist")
        again = [s for s in ids if s in members]
        if again:
            raise _Error(422, f"Validation failed: subjects {again} are already in the set")
        members.extend(ids)
        return _resource("subject_sets", self._set_resource(sid))

    def _set_members(self, request: Request, fault):
        self._owner(request)
        set_id = request.args.get("subject_set_id", "")
        members = [
            {"id": f"{set_id}.{s}", "links": {"subject": s, "subject_set": set_id}}
            for s in self.subject_sets.get(set_id, {}).get("subjects", [])
        ]
        return _page(request, "/set_member_subjects", "set_member_subjects", members)

    # -- subjects and media -----------------------------------------------------------------------------

    def _subject_resource(self, subject_id: str, signed: bool = False) -> dict:
        subject = self.subjects[subject_id]
        locations = []
        for index, media_type in enumerate(subject["locations"]):
            if signed:
                token = secrets.token_hex(8)
                self.uploads[token] = (subject_id, index)
                locations.append({media_type: f"{self.url}/upload/{token}"})
            else:
                locations.append({media_type: f"{self.url}/media/{subject_id}-{index}"})
        return {"id": subject_id, "metadata": dict(subject["metadata"]), "locations": locations,
                "links": {"project": subject["project"]}}

    def _subjects(self, request: Request, fault):
        self._owner(request)
        if request.method == "POST":
            n_uploaded = len(self.subjects)
            if self.subject_limit is not None and n_uploaded >= self.subject_limit:
                raise _Error(403, f"User has uploaded {n_uploaded} subjects of {self.subject_limit} maximum")
            body = (request.get_json() or {}).get("subjects", {})
            subject_id = str(next(self.ids))
            self.subjects[subject_id] = {
                "locations": list(body["locations"]), "metadata": dict(body.get("metadata") or {}),
                "project": str(body["links"]["project"]),
            }
            return _resource("subjects", self._subject_resource(subject_id, signed=True), status=201)
        project = request.args.get("project_id")
        found = [self._subject_resource(s) for s, v in self.subjects.items() if project in (None, v["project"])]
        return _page(request, "/subjects", "subjects", found)

    def _subject(self, request: Request, fault, sid):
        self._owner(request)
        if sid not in self.subjects:
            raise NotFound(f"Could not find subject with id='{sid}'")
        current = _etag(self._subject_resource(sid))
        if request.method == "PUT":
            if request.headers.get("If-Match") != current:
                raise _Error(412, "JsonApiController::PreconditionFailed")
            body = (request.get_json() or {}).get("subjects", {})
            if "locations" in body:
                self.subjects[sid]["locations"] = list(body["locations"])
                for index in range(len(body["locations"])):
                    self.media.pop(f"{sid}-{index}", None)
            return _resource("subjects", self._subject_resource(sid, signed=True))
        return _resource("subjects", self._subject_resource(sid))

    def _upload(self, request: Request, fault, token):
        if request.method != "PUT" or token not in self.uploads:
            raise _Error(403, "AuthenticationFailed: signature not valid")
        if request.headers.get("x-ms-blob-type") != "BlockBlob":
            raise _Error(400, "x-ms-blob-type header missing")
        subject_id, index = self.uploads[token]
        if fault is None or fault.kind != "lose_media":
            self.media[f"{subject_id}-{index}"] = request.get_data()
        return Response(status=201)

    def _media(self, request: Request, fault, key):
        if key not in self.media:
            return Response("BlobNotFound", status=404)
        return Response(self.media[key], content_type="application/octet-stream")

    # -- classifications and retirement --------------------------------------------------------------------

    def _classify(self, request: Request, fault):
        body = (request.get_json() or {}).get("classifications", {})
        classification = self._add_classification(body, self._user(request, required=False))
        return _resource("classifications", classification, status=201)

    def _add_classification(self, body: dict, user: str | None) -> dict:
        subject_ids = [str(s) for s in body["links"]["subjects"]]
        if any(s not in self.subjects for s in subject_ids):
            raise _Error(422, f"subjects {subject_ids} do not exist")
        classification = {
            "id": str(next(self.ids)), "annotations": body.get("annotations"),
            "metadata": dict(body.get("metadata") or {}), "created_at": _now(),
            "links": {"project": str(body["links"]["project"]), "workflow": str(body["links"]["workflow"]),
                      "subjects": subject_ids, "user": user},
        }
        self.classifications.append(classification)
        for subject_id in subject_ids:
            subject = self.subjects[subject_id]
            subject["classifications_count"] = subject.get("classifications_count", 0) + 1
            if self.retire_after is not None and subject["classifications_count"] >= self.retire_after:
                subject.setdefault("retired_at", _now())
        return classification

    def _project_classifications(self, request: Request, fault):
        self._owner(request)
        if self.later and int(request.args.get("page") or 1) == 1:  # time passed since the last look
            for body, user in self.later.pop(0):
                self._add_classification(body, user)
        last_id = int(request.args.get("last_id") or 0)
        found = [
            c for c in self.classifications
            if int(c["id"]) > last_id and c["links"]["project"] == request.args.get("project_id")
            and request.args.get("workflow_id", c["links"]["workflow"]) == c["links"]["workflow"]
        ]
        return _page(request, "/classifications/project", "classifications", found,
                     overlap=fault is not None and fault.kind == "overlap")

    def _statuses(self, request: Request, fault):
        self._owner(request)
        wanted = [s.strip() for s in request.args.get("subject_ids", "").split(",") if s.strip()]
        found = [
            {"id": f"sws{s}", "classifications_count": self.subjects[s].get("classifications_count", 0),
             "retired_at": self.subjects[s].get("retired_at"), "retirement_reason": None,
             "links": {"subject": s, "workflow": request.args.get("workflow_id")}}
            for s in wanted if s in self.subjects
        ]
        return _page(request, "/subject_workflow_statuses", "subject_workflow_statuses", found)


class _QuietHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API

    def log_request(self, *args, **kwargs) -> None:
        """The tests read ``PanoptesStandIn.calls`` instead of a request log."""


class _Error(HTTPException):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _etag(resource: dict) -> str:
    return 'W/"' + hashlib.md5(json.dumps(resource, sort_keys=True).encode()).hexdigest() + '"'


def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers or {})


def _resource(slug: str, resource: dict, status: int = 200) -> Response:
    return _json({slug: [resource]}, status, {"ETag": _etag(resource)})


def _page(request: Request, path: str, slug: str, items: list, overlap: bool = False) -> Response:
    """One page of ``items`` with Panoptes' paging meta; ``overlap`` repeats the previous page's
    last item at the top (a listing that shifted between two page requests)."""
    page = int(request.args.get("page") or 1)
    size = int(request.args.get("page_size") or 20)
    start = (page - 1) * size
    shown = items[start : start + size]
    if overlap and page > 1 and start - 1 < len(items):
        shown = [items[start - 1], *shown]
    n_pages = max(1, -(-len(items) // size))
    query = {k: v for k, v in request.args.items() if k != "page"}
    next_href = f"{path}?{urlencode({**query, 'page': page + 1})}" if page < n_pages else None
    meta = {"page": page, "page_size": size, "count": len(items), "page_count": n_pages, "next_href": next_href}
    return _json({slug: shown, "meta": {slug: meta}})


# -- what the tests share: a pool catalog with images, settings, volunteers --------------------------

TASK_MAP = {"schema": "smooth-or-featured",
            "tasks": {"T0": {"question": "smooth-or-featured", "answers": ["smooth", "featured"]}}}
FAST = {"retries": 3, "backoff_s": 0.01, "timeout_s": 0.25}  # hang_s of the stand-in must exceed timeout_s


def write_pool_catalog(folder, ids, fits_ids=()) -> str:
    """A pool catalog (id_str, file_loc relative to it, ra, dec, zero votes) with small PNG images
    (FITS for ``fits_ids``); returns its path."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from zoobot.catalog import write_catalog
    from zoobot.schema import SMOOTH_OR_FEATURED

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for id_str in ids:
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        if id_str in fits_ids:
            from astropy.io import fits

            fits.PrimaryHDU(pixels.transpose(2, 0, 1).astype(np.float32)).writeto(folder / "images" / f"{id_str}.fits")
            files.append(f"images/{id_str}.fits")
        else:
            Image.fromarray(pixels).save(folder / "images" / f"{id_str}.png")
            files.append(f"images/{id_str}.png")
    catalog = pd.DataFrame({"id_str": list(ids), "file_loc": files,
                            "ra": np.linspace(150.0, 151.0, len(ids)), "dec": np.linspace(2.0, 2.5, len(ids))})
    for column in SMOOTH_OR_FEATURED.answer_columns:
        catalog[column] = 0
    path = folder / "unlabelled_catalog.parquet"
    write_catalog(catalog, path, SMOOTH_OR_FEATURED)
    return str(path)


def oracle_settings(standin: PanoptesStandIn, catalog_path: str, **overrides) -> dict:
    """The Panoptes oracle's settings (as stored in instructions.json) for this stand-in."""
    return {"project_id": standin.project_id, "workflow_id": standin.workflow_id, "task_map": TASK_MAP,
            "catalog_path": catalog_path, "endpoint": standin.url, **FAST, **overrides}


class Volunteers:
    """People classifying on the stand-in, as the Zooniverse front end posts classifications."""

    def __init__(self, standin: PanoptesStandIn):
        import requests

        self.standin = standin
        self.http = requests.Session()
        self.tokens: dict[str, str] = {}

    def classify(self, subject_id: str, value, user: str | None = None, session: str | None = None,
                 annotations=None) -> str:
        """One classification of T0 (``value``: an answer index, a label, None) by a logged-in
        ``user`` or a logged-out ``session``; returns its id."""
        headers = {}
        if user is not None:
            token = self.tokens.setdefault(user, self.standin.volunteer_token(user))
            headers["Authorization"] = f"Bearer {token}"
        body = {"classifications": self.body(subject_id, value, user, session, annotations)}
        response = self.http.post(f"{self.standin.url}/api/classifications", json=body, headers=headers, timeout=5)
        response.raise_for_status()
        return response.json()["classifications"][0]["id"]

    def body(self, subject_id: str, value, user: str | None = None, session: str | None = None, annotations=None) -> dict:
        """A classification as the front end posts it."""
        return {
            "annotations": annotations if annotations is not None else [{"task": "T0", "value": value}],
            "metadata": {"session": session or "s-" + (user or "anon")},
            "links": {"project": self.standin.project_id, "workflow": self.standin.workflow_id,
                      "subjects": [subject_id]},
        }
