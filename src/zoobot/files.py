"""Atomic file writes: a file either has its old content or its complete new content."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Works for files and folders. On an error the temporary file or folder is removed and
    ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)  # left by a killed process that had this pid; no live process uses it
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented JSON to a temporary name beside ``path``, then rename it."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))
    return Path(path)
