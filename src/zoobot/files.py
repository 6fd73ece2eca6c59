"""Atomic file writes: a file either has its old content or its complete new content."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented JSON to a temporary name beside ``path``, then rename it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)
    return path
