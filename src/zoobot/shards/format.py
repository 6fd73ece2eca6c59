"""The on-disk shard format shared by the writer and the reader: names, version, errors, config.

A shard is a ``.npy`` v1.0 file of uint8 (n, channels, size, size) with a fixed 128-byte header,
so the writer can stream rows and patch the row count in place when the shard is full.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pandas as pd

CONFIG_NAME = "shard_config.json"
MANIFEST_NAME = "manifest.parquet"
BAD_IMAGES_NAME = "bad_images.csv"
SPLITS = ("train", "val", "test", "pool")
FORMAT_VERSION = 2  # 2: the eval split became val (early stopping) and test (reported)


class ShardError(ValueError):
    """A shard folder is missing, incomplete or inconsistent, or cannot be written."""


class BadImagesError(ShardError):
    """Images failed to decode; ``bad`` lists them all (id_str, file_loc, split, reason)."""

    def __init__(self, message: str, bad: pd.DataFrame) -> None:
        super().__init__(message)
        self.bad = bad


def shard_name(index: int) -> str:
    """File name of a split's ``index``-th shard."""
    return f"shard_{index:05d}.npy"


_NPY_MAGIC = b"\x93NUMPY\x01\x00"  # .npy format version 1.0
_NPY_HEADER_BYTES = 128  # fixed, so the row count can be patched in place; a multiple of 64


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header for a C-ordered uint8 array, padded to exactly _NPY_HEADER_BYTES."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    length = _NPY_HEADER_BYTES - len(_NPY_MAGIC) - 2
    if len(text) + 1 > length:
        raise ShardError(f"array shape {shape} is too large for a shard header")
    return _NPY_MAGIC + struct.pack("<H", length) + (text.ljust(length - 1) + "\n").encode("latin1")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def read_config(shard_dir: str | os.PathLike) -> dict:
    """The ``shard_config.json`` of a complete shard folder; ShardError otherwise."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise ShardError(f"shard folder {shard_dir} does not exist; create it with `zoobot make-shards`")
    path = shard_dir / CONFIG_NAME
    if not path.is_file():
        raise ShardError(
            f"{shard_dir} is not a complete shard folder: it has no {CONFIG_NAME}, which "
            "make-shards writes last. The run that made it was interrupted or failed (or is still "
            "running). Delete the folder and run `zoobot make-shards` again."
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShardError(f"{path} is not valid JSON ({error}); rerun `zoobot make-shards`") from error
    if config.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: expected shard format version {FORMAT_VERSION}, got "
            f"{config.get('format_version')!r}; rebuild the shards with this zoobot version (`zoobot "
            "make-shards`; version 2 splits the labelled galaxies into train, val and test)"
        )
    return config


def crop_fraction_of(config: dict) -> float:
    """The centre crop a shard folder was made with; 1.0 (no crop) for folders that predate it."""
    return float(config.get("crop_fraction", 1.0))
