"""Talking to the Panoptes API through panoptes-client: login, one call, retries with backoff.

panoptes-client handles the login (CSRF token, sign-in, OAuth bearer token and its refresh)
and builds each API request. Its own retries do not fit an oracle that must never upload a
galaxy twice: it retries only 5xx responses, with fixed 5 s waits, re-sends POSTs blindly
from ``Subject.save``, sets no timeout, and does not check the media upload. So every call
goes through :meth:`PanoptesSession.call` (one attempt, a timeout, the status code kept),
and the callers decide what may be retried: :meth:`PanoptesSession.retrying` for calls that
are safe to repeat, a look-up first for those that are not (``panoptes_upload``).

The password never leaves :class:`Credentials`: it is not logged, not stored, and every error
raised here has it blanked out.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PanoptesError(RuntimeError):
    """The Panoptes API refused or failed a call; the message says what to do."""


class TransientError(PanoptesError):
    """A call failed in transit, timed out or got a 5xx: it may or may not have taken effect."""


class HTTPError(PanoptesError):
    """The API answered with a 4xx: the call did not take effect."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def read_credentials(credentials_file: str | None) -> Credentials:
    """From ``credentials_file`` (YAML or JSON ``{username, password}``) when given, else from
    ``PANOPTES_USERNAME`` and ``PANOPTES_PASSWORD``."""
    if credentials_file is not None:
        path = Path(credentials_file).expanduser()
        if not path.is_file():
            raise PanoptesError(f"Panoptes credentials file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise PanoptesError(f"Panoptes credentials file {path} is not valid YAML or JSON") from None
        if not isinstance(raw, dict) or not raw.get("username") or not raw.get("password"):
            keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise PanoptesError(
                f"Panoptes credentials file {path}: expected a mapping with 'username' and 'password', got {keys}"
            )
        return Credentials(str(raw["username"]), str(raw["password"]))
    username, password = os.environ.get("PANOPTES_USERNAME"), os.environ.get("PANOPTES_PASSWORD")
    if not username or not password:
        raise PanoptesError(
            "no Panoptes credentials: set PANOPTES_USERNAME and PANOPTES_PASSWORD, or name a file with "
            "'username' and 'password' in the oracle setting credentials_file"
        )
    return Credentials(username, password)


def _import_client():
    """panoptes_client calls logging.basicConfig when imported; a library must not configure
    logging, so the root logger's handlers and level are put back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import panoptes_client.panoptes as client_module

    root.handlers[:] = handlers
    root.setLevel(level)
    return client_module


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout (requests has none)."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)


class PanoptesSession:
    """A logged-in panoptes-client, one call at a time: ``call(method, path)`` -> (json, etag)."""

    def __init__(self, endpoint: str, credentials: Credentials, timeout_s: float, retries: int, backoff_s: float):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._credentials = credentials
        self._client = None
        self._storage = requests.Session()  # media uploads and checks go to storage, not the API

    def close(self) -> None:
        self._storage.close()
        if self._client is not None:
            self._client.session.close()
            self._client = None

    def redact(self, text: str) -> str:
        return str(text).replace(self._credentials.password, "********")

    def _connected(self):
        if self._client is not None:
            return self._client
        module = _import_client()
        # Empty strings, not None: the client would otherwise read the environment and log in
        # at once, before its session has a timeout.
        client = module.Panoptes(endpoint=self.endpoint, username="", password="")
        client.session = _TimeoutSession(self.timeout_s)

        def login():
            try:
                client.login(self._credentials.username, self._credentials.password)
            except requests.RequestException as error:
                raise TransientError(self.redact(f"cannot reach {self.endpoint} to log in: {error}")) from None
            except (module.PanoptesAPIException, ValueError, KeyError) as error:
                raise PanoptesError(self.redact(
                    f"Panoptes login as {self._credentials.username!r} at {self.endpoint} failed: {error}. Check "
                    "PANOPTES_USERNAME / PANOPTES_PASSWORD (or the credentials file) and the endpoint"
                )) from None

        self.retrying(f"logging in to {self.endpoint}", login)
        self._client = client
        return client

    def call(self, method: str, path: str, params: dict | None = None, json_body: Any = None,
             etag: str | None = None) -> tuple[Any, str | None]:
        """One API request, no retries: (decoded JSON or None, ETag).

        Raises TransientError (timeout, connection, 5xx) or HTTPError (4xx, with the API's messages).
        """
        client = self._connected()
        module = _import_client()
        try:
            with client:
                response = client.http_request(method, path, params=dict(params or {}), json=json_body, etag=etag)
        except requests.RequestException as error:
            raise TransientError(self.redact(f"{method} {path}: {type(error).__name__}: {error}")) from None
        except module.PanoptesAPIException as error:  # the client raises this for a 5xx
            raise TransientError(self.redact(f"{method} {path}: {error}")) from None
        if response.status_code >= 400:
            raise HTTPError(response.status_code, self.redact(
                f"{method} {path}: HTTP {response.status_code}: {_messages(response)}"
            ))
        body = response.json() if response.content else None
        return body, response.headers.get("ETag")

    def pages(self, path: str, slug: str, params: dict) -> Iterator[list[dict]]:
        """The resources of a listing, page by page, following ``meta[slug].next_href``."""
        body, _ = self.retrying(f"GET {path}", lambda: self.call("GET", path, params))
        while True:
            yield list((body or {}).get(slug, []))
            next_href = ((body or {}).get("meta", {}).get(slug, {}) or {}).get("next_href")
            if not next_href:
                return
            body, _ = self.retrying(f"GET {next_href}", lambda: self.call("GET", next_href))

    def retrying(self, what: str, attempt: Callable[[], T], before_retry: Callable[[], None] | None = None) -> T:
        """``attempt()`` until it succeeds, retrying a TransientError with doubling waits.

        Use it for calls that are safe to repeat (GETs, PUTs of the same state), or pass
        ``before_retry`` to look up whether a failed call took effect after all.
        """
        for n in range(self.retries + 1):
            try:
                return attempt()
            except TransientError as error:
                if n == self.retries:
                    raise TransientError(
                        f"{what}: still failing after {n + 1} attempts ({error}); the Panoptes API may be "
                        "down. Run again later: the oracle resumes where it stopped"
                    ) from None
                wait = self.backoff_s * 2**n
                logger.warning("%s failed (%s); retrying in %.1f s", what, error, wait)
                time.sleep(wait)
                if before_retry is not None:
                    before_retry()
        raise AssertionError("unreachable")

    def put_media(self, url: str, data: bytes, media_type: str) -> None:
        """Upload an image to a subject's signed location; raises TransientError on any failure."""
        try:
            response = self._storage.put(
                url, data=data, timeout=self.timeout_s,
                headers={"Content-Type": media_type, "x-ms-blob-type": "BlockBlob"},
            )
        except requests.RequestException as error:
            raise TransientError(f"image upload: {type(error).__name__}: {error}") from None
        if response.status_code >= 300:
            raise TransientError(f"image upload: HTTP {response.status_code}")

    def media_exists(self, url: str) -> bool:
        """Whether a subject's public location serves its image (HEAD 200); 404 means lost."""
        try:
            response = self._storage.head(url, timeout=self.timeout_s, allow_redirects=True)
        except requests.RequestException as error:
            raise TransientError(f"checking the image at {url}: {type(error).__name__}: {error}") from None
        if response.status_code in (403, 404):
            return False
        if response.status_code >= 300:
            raise TransientError(f"checking the image at {url}: HTTP {response.status_code}")
        return True


def _messages(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in body["errors"])
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)[:200]
