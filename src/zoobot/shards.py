"""Shards: every image decoded and resized once, stored as uint8 arrays with a Parquet manifest.

Layout of a shard folder (see docs/shards.md)::

    shard_config.json        written last: a folder without it is incomplete
    manifest.parquet         id_str, split, shard, row, file_loc, one int64 column per answer
    train/shard_00000.npy    uint8 (n, channels, size, size), channels first
    eval/shard_00000.npy
    pool/shard_00000.npy
    bad_images.csv           only with skip_bad: id_str, file_loc, split, reason

:func:`write_shards` builds the folder under a temporary name beside it and renames it into
place only when everything, ``shard_config.json`` last, is written. :class:`ShardReader` opens
the ``.npy`` files as read-only memory maps, lazily and once per process, so it can be
pickled into DataLoader workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot import __version__
from zoobot.catalog import validate_catalog
from zoobot.ids import describe_ids
from zoobot.files import write_json_atomic
from zoobot.images import DECODE_SETTINGS, ImageError, load_image
from zoobot.schema import Schema

logger = logging.getLogger(__name__)

CONFIG_NAME = "shard_config.json"
MANIFEST_NAME = "manifest.parquet"
BAD_IMAGES_NAME = "bad_images.csv"
SPLITS = ("train", "eval", "pool")
FORMAT_VERSION = 1
N_BAD_SHOWN = 10

#: progress(n_done, n_total), called after each image is decoded.
ProgressCallback = Callable[[int, int], None]


class ShardError(ValueError):
    """A shard folder is missing, incomplete or inconsistent, or cannot be written."""


class BadImagesError(ShardError):
    """Images failed to decode; ``bad`` lists them all (id_str, file_loc, split, reason)."""

    def __init__(self, message: str, bad: pd.DataFrame) -> None:
        super().__init__(message)
        self.bad = bad


@dataclass
class ShardSummary:
    """What :func:`write_shards` wrote."""

    shard_dir: Path
    counts: dict[str, int]  # galaxies written per split
    n_bad: int  # images skipped (skip_bad) and listed in bad_images.csv
    n_shards: int
    seconds: float
    bad: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_second(self) -> float:
        """Images decoded (good and bad) per second of wall time."""
        return (self.n_images + self.n_bad) / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# writing


def write_shards(
    labelled: pd.DataFrame,
    unlabelled: pd.DataFrame,
    shard_dir: str | os.PathLike,
    schema: Schema,
    eval_size: int,
    size: int = 128,
    channels: int = 3,
    shard_size: int = 4096,
    max_labelled: int | None = None,
    max_unlabelled: int | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    progress: ProgressCallback | None = None,
    sources: Mapping[str, str] | None = None,
) -> ShardSummary:
    """Decode every image once and write the train / eval / pool shards.

    eval is the first ``eval_size`` labelled rows, train the rest of the labelled rows (at most
    ``max_labelled``), pool the unlabelled rows (at most ``max_unlabelled``); catalogs arrive
    shuffled from define-experiment. ``workers > 1`` decodes in a process pool, in order.

    Without ``skip_bad`` any missing or undecodable image fails the run with a BadImagesError
    naming all of them, and nothing is left at ``shard_dir``. With ``skip_bad`` they are left
    out and listed in ``bad_images.csv``. ``sources`` (e.g. the catalog paths) is recorded in
    ``shard_config.json``.
    """
    _check_settings(eval_size, size, channels, shard_size, max_labelled, max_unlabelled, workers)
    plan = _plan(labelled, unlabelled, schema, eval_size, max_labelled, max_unlabelled)
    shard_dir = Path(shard_dir)
    _check_target(shard_dir)
    if not skip_bad:
        _fail_on_missing_files(plan)

    start = time.perf_counter()
    shard_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shard_dir.name}.tmp-", dir=shard_dir.parent))
    logger.debug("writing shards into %s", tmp)
    try:
        locations, bad = _decode_and_write(
            plan, tmp, size, channels, shard_size, workers, skip_bad, progress
        )
        if len(bad) and not skip_bad:
            raise BadImagesError(_bad_images_message(bad, len(plan)), bad)
        written = plan.drop(index=bad.index)
        manifest = pd.DataFrame(
            {
                "id_str": written["id_str"].to_numpy(),
                "split": written["split"].to_numpy(),
                "shard": [locations[i][0] for i in written.index],
                "row": np.array([locations[i][1] for i in written.index], dtype=np.int64),
                "file_loc": written["file_loc"].to_numpy(),
            }
        )
        for column in schema.answer_columns:
            manifest[column] = written[column].to_numpy(dtype=np.int64)
        manifest.to_parquet(tmp / MANIFEST_NAME, index=False)
        if skip_bad:
            bad.to_csv(tmp / BAD_IMAGES_NAME, index=False)
        counts = {split: int((manifest["split"] == split).sum()) for split in SPLITS}
        shard_files = {split: sorted(manifest.loc[manifest["split"] == split, "shard"].unique()) for split in SPLITS}
        checksummed = [MANIFEST_NAME, *(name for split in SPLITS for name in shard_files[split])]
        config = {
            "format_version": FORMAT_VERSION,
            "zoobot_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "size": size,
            "channels": channels,
            "shard_size": shard_size,
            "n_galaxies": len(manifest),
            "splits": {split: {"count": counts[split], "shards": shard_files[split]} for split in SPLITS},
            "eval_size": eval_size,
            "max_labelled": max_labelled,
            "max_unlabelled": max_unlabelled,
            "schema": schema.name,
            "vote_columns": list(schema.answer_columns),
            "sources": dict(sources or {}),
            "skip_bad": skip_bad,
            "n_bad_images": len(bad),
            "decode": DECODE_SETTINGS,
            "checksums": {"sha256": {name: _sha256(tmp / name) for name in checksummed}},
        }
        write_json_atomic(tmp / CONFIG_NAME, config)  # last: marks the folder complete
        os.replace(tmp, shard_dir)  # replaces an empty shard_dir too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    n_shards = sum(len(files) for files in shard_files.values())
    logger.debug("wrote %s: %s, %d bad, %.1f s", shard_dir, counts, len(bad), seconds)
    return ShardSummary(shard_dir, counts, len(bad), n_shards, seconds, bad)


def _check_settings(eval_size, size, channels, shard_size, max_labelled, max_unlabelled, workers) -> None:
    checks = [
        (eval_size >= 0, f"eval_size must be >= 0, got {eval_size}"),
        (size >= 1, f"size must be a positive number of pixels, got {size}"),
        (channels in (1, 3), f"channels must be 1 (greyscale) or 3 (RGB), got {channels}"),
        (shard_size >= 1, f"shard_size must be >= 1 images per shard, got {shard_size}"),
        (max_labelled is None or max_labelled >= 0, f"max_labelled must be >= 0, got {max_labelled}"),
        (max_unlabelled is None or max_unlabelled >= 0, f"max_unlabelled must be >= 0, got {max_unlabelled}"),
        (workers >= 1, f"workers must be >= 1, got {workers}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _plan(labelled, unlabelled, schema, eval_size, max_labelled, max_unlabelled) -> pd.DataFrame:
    """One row per image to write, in writing order: id_str, file_loc, split, vote columns."""
    labelled = validate_catalog(labelled, schema, check_files=False, name="labelled catalog")
    unlabelled = validate_catalog(unlabelled, schema, check_files=False, name="unlabelled catalog")
    both = np.intersect1d(labelled["id_str"].to_numpy(str), unlabelled["id_str"].to_numpy(str))
    if len(both):
        raise ShardError(
            f"ids {describe_ids(both)} are in both the labelled and the unlabelled catalog; "
            "a galaxy must be in one of them. Rebuild the catalogs with `zoobot define-experiment`."
        )
    if eval_size > len(labelled):
        raise ShardError(
            f"eval_size {eval_size} is larger than the labelled catalog ({len(labelled)} galaxies); "
            "choose a smaller --eval-size"
        )
    train_stop = len(labelled) if max_labelled is None else min(len(labelled), eval_size + max_labelled)
    parts = {
        "train": labelled.iloc[eval_size:train_stop],
        "eval": labelled.iloc[:eval_size],
        "pool": unlabelled.iloc[: len(unlabelled) if max_unlabelled is None else max_unlabelled],
    }
    columns = ["id_str", "file_loc", *schema.answer_columns]
    plan = pd.concat(
        [part[columns].assign(split=split) for split, part in parts.items()], ignore_index=True
    )
    plan["file_loc"] = plan["file_loc"].astype(str)
    return plan


def _check_target(shard_dir: Path) -> None:
    if shard_dir.exists() and not shard_dir.is_dir():
        raise FileExistsError(f"{shard_dir} exists and is not a folder; choose a new --shard-dir")
    if shard_dir.is_dir() and any(shard_dir.iterdir()):
        raise FileExistsError(
            f"{shard_dir} already exists and is not empty; choose a new --shard-dir "
            "or delete the old one"
        )
    stale = sorted(shard_dir.parent.glob(f".{shard_dir.name}.tmp-*")) if shard_dir.parent.is_dir() else []
    if stale:
        logger.warning(
            "found unfinished shard folders from earlier runs that were killed: %s. "
            "They are not used; delete them to free the space.",
            describe_ids(stale),
        )


def _fail_on_missing_files(plan: pd.DataFrame) -> None:
    exists = np.fromiter((os.path.isfile(p) for p in plan["file_loc"]), bool, len(plan))
    if not exists.all():
        bad = plan.loc[~exists, ["id_str", "file_loc", "split"]].assign(reason="file not found")
        raise BadImagesError(_bad_images_message(bad, len(plan)), bad)


def _bad_images_message(bad: pd.DataFrame, n_total: int) -> str:
    examples = "\n".join(
        f"  {row.id_str} ({row.file_loc}): {row.reason}" for row in bad.head(N_BAD_SHOWN).itertuples()
    )
    more = f"\n  ... and {len(bad) - N_BAD_SHOWN} more" if len(bad) > N_BAD_SHOWN else ""
    return (
        f"{len(bad)} of {n_total} images could not be read, ids {describe_ids(bad['id_str'])}:\n"
        f"{examples}{more}\n"
        "Fix or replace these files, drop their rows from the catalog, or pass --skip-bad "
        f"(skip_bad=True) to leave them out and list them in {BAD_IMAGES_NAME}. Nothing was written."
    )


def _decode_or_reason(path: str, size: int, channels: int) -> tuple[np.ndarray | None, str | None]:
    """Worker task: (C, size, size) uint8 and None, or None and why it failed."""
    try:
        return load_image(path, size, channels), None
    except ImageError as error:
        return None, error.reason


def _decode_and_write(plan, tmp, size, channels, shard_size, workers, skip_bad, progress):
    """Decode in plan order and append to per-split shard files.

    Returns ({plan index: (shard name, row)}, bad images DataFrame indexed like plan).
    After the first bad image without skip_bad, decoding goes on (to report every bad image)
    but nothing more is written.
    """
    decode = functools.partial(_decode_or_reason, size=size, channels=channels)
    paths = plan["file_loc"].tolist()
    writers: dict[str, _SplitWriter] = {}
    locations: dict[int, tuple[str, int]] = {}
    bad_rows: list[tuple[int, str]] = []
    pool = multiprocessing.Pool(workers) if workers > 1 and len(paths) > 1 else None
    try:
        if pool is None:
            results = map(decode, paths)
        else:
            results = pool.imap(decode, paths, chunksize=max(1, min(64, len(paths) // (workers * 8))))
        splits = plan["split"].to_numpy()
        for i, (image, reason) in enumerate(results):
            if image is None:
                bad_rows.append((i, reason))
            elif skip_bad or not bad_rows:
                split = splits[i]
                if split not in writers:
                    writers[split] = _SplitWriter(tmp / split, shard_size, image.shape)
                locations[i] = writers[split].append(image)
            if progress is not None:
                progress(i + 1, len(paths))
        for writer in writers.values():
            writer.close()
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()
        for writer in writers.values():
            writer.abort()
    index = [i for i, _ in bad_rows]
    bad = plan.loc[index, ["id_str", "file_loc", "split"]].assign(reason=[r for _, r in bad_rows])
    return locations, bad


class _SplitWriter:
    """Streams images of one split into ``shard_NNNNN.npy`` files of ``shard_size`` rows.

    Each file starts with a fixed-length .npy header that is rewritten with the final row count
    when the file is closed, so a shard never has to be held in memory.
    """

    def __init__(self, folder: Path, shard_size: int, item_shape: tuple[int, ...]) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.item_shape = tuple(item_shape)
        self.n_shards = 0
        self._file = None
        self._rows = 0
        folder.mkdir()

    def append(self, image: np.ndarray) -> tuple[str, int]:
        if image.shape != self.item_shape or image.dtype != np.uint8:
            raise ShardError(f"expected a uint8 image of shape {self.item_shape}, got {image.dtype} {image.shape}")
        if self._file is None:
            self._open()
        self._file.write(np.ascontiguousarray(image).tobytes())
        row = self._rows
        self._rows += 1
        name = f"{self.folder.name}/{_shard_name(self.n_shards - 1)}"
        if self._rows == self.shard_size:
            self._finish()
        return name, row

    def close(self) -> None:
        if self._file is not None:
            self._finish()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        self._file = open(self.folder / _shard_name(self.n_shards), "wb")
        self._file.write(_npy_header((0, *self.item_shape)))
        self._rows = 0
        self.n_shards += 1

    def _finish(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header((self._rows, *self.item_shape)))
        self._file.close()
        self._file = None


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.npy"


_NPY_MAGIC = b"\x93NUMPY\x01\x00"  # .npy format version 1.0
_NPY_HEADER_BYTES = 128  # fixed, so the row count can be patched in place; a multiple of 64


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header for a C-ordered uint8 array, padded to exactly _NPY_HEADER_BYTES."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    length = _NPY_HEADER_BYTES - len(_NPY_MAGIC) - 2
    if len(text) + 1 > length:
        raise ShardError(f"array shape {shape} is too large for a shard header")
    return _NPY_MAGIC + struct.pack("<H", length) + (text.ljust(length - 1) + "\n").encode("latin1")


def _sha256(path: Path) -> str:
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
            f"{config.get('format_version')!r}; rebuild the shards with this zoobot version"
        )
    return config


class ShardReader:
    """Read images and votes from a shard folder by manifest position or id_str.

    Positions are row indices of ``manifest``. Shard files are memory-mapped on first use in
    each process; pickling drops the maps, so a reader can be sent to DataLoader workers.
    """

    def __init__(self, shard_dir: str | os.PathLike) -> None:
        self.shard_dir = Path(shard_dir)
        self.config = read_config(self.shard_dir)
        manifest_path = self.shard_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ShardError(f"{self.shard_dir}: {MANIFEST_NAME} is missing; rerun `zoobot make-shards`")
        self.manifest = pd.read_parquet(manifest_path)
        self.vote_columns: list[str] = list(self.config["vote_columns"])
        self.size: int = int(self.config["size"])
        self.channels: int = int(self.config["channels"])
        self.schema_spec: str = self.config["schema"]
        self._check_manifest()
        self._shard_files = [name for split in SPLITS for name in self.config["splits"][split]["shards"]]
        missing = [name for name in self._shard_files if not (self.shard_dir / name).is_file()]
        if missing:
            raise ShardError(
                f"{self.shard_dir}: shard files {describe_ids(missing)} listed in {CONFIG_NAME} are "
                "missing; the folder was altered after it was written. Rerun `zoobot make-shards`."
            )
        shard_code = pd.Categorical(self.manifest["shard"], categories=self._shard_files).codes
        if (shard_code < 0).any():
            unknown = self.manifest.loc[shard_code < 0, "shard"].unique()
            raise ShardError(f"{self.shard_dir}: the manifest refers to unknown shard files {describe_ids(unknown)}")
        self._shard_code = np.asarray(shard_code, dtype=np.int64)  # (galaxy,)
        self._rows = self.manifest["row"].to_numpy(dtype=np.int64)  # (galaxy,)
        self._ids = self.manifest["id_str"].to_numpy(dtype=object)  # (galaxy,)
        self._index = pd.Index(self._ids)
        self._votes = self.manifest[self.vote_columns].to_numpy(dtype=np.int64)  # (galaxy, answer)
        split = self.manifest["split"].to_numpy()
        self._split_positions = {s: np.flatnonzero(split == s) for s in SPLITS}
        self._arrays: dict[int, np.ndarray] = {}

    def _check_manifest(self) -> None:
        needed = ["id_str", "split", "shard", "row", *self.vote_columns]
        absent = [c for c in needed if c not in self.manifest.columns]
        if absent:
            raise ShardError(f"{self.shard_dir / MANIFEST_NAME}: columns {absent} are missing")
        expected = {s: int(self.config["splits"][s]["count"]) for s in SPLITS}
        found = self.manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
        if found != expected or len(self.manifest) != sum(expected.values()):
            raise ShardError(
                f"{self.shard_dir}: {CONFIG_NAME} expects split counts {expected}, the manifest has "
                f"{found}; the folder was altered after it was written. Rerun `zoobot make-shards`."
            )

    # --- pickling: memory maps are reopened lazily in the receiving process
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        return f"ShardReader({str(self.shard_dir)!r}, counts={self.counts}, size={self.size}, channels={self.channels})"

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(p) for s, p in self._split_positions.items()}

    def split_positions(self, split: str) -> np.ndarray:
        """(galaxy,) manifest positions of one split, in writing order."""
        if split not in self._split_positions:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return self._split_positions[split].copy()

    def ids(self, split: str) -> np.ndarray:
        """id_str of one split, in writing order (object array of str)."""
        return self._ids[self.split_positions(split)]

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Manifest positions of these ids; KeyError naming the ids that are not in the shards."""
        if isinstance(ids, str):
            raise TypeError(f"expected a list of ids, got the single string {ids!r}; use [{ids!r}]")
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=object)
        positions = self._index.get_indexer(ids.astype(str))
        unknown = positions < 0
        if unknown.any():
            raise KeyError(
                f"ids {describe_ids(ids[unknown])} are not in the shards at {self.shard_dir}; "
                "they were never written (not in the catalogs, or skipped as bad images)"
            )
        return positions.astype(np.int64)

    def images(self, positions) -> np.ndarray:
        """(B, C, H, W) uint8 for manifest positions, gathered shard by shard."""
        positions = self._check_positions(positions)
        out = np.empty((len(positions), self.channels, self.size, self.size), dtype=np.uint8)
        if len(positions) == 0:
            return out
        codes = self._shard_code[positions]  # (B,)
        rows = self._rows[positions]  # (B,)
        if (codes == codes[0]).all() and _is_run(rows):
            out[:] = self._array(codes[0])[rows[0] : rows[-1] + 1]
            return out
        order = np.lexsort((rows, codes))  # by shard, then row: sequential reads
        sorted_codes, sorted_rows = codes[order], rows[order]
        starts = np.flatnonzero(np.diff(sorted_codes)) + 1
        for group in np.split(np.arange(len(order)), starts):
            group_rows = sorted_rows[group]
            array = self._array(sorted_codes[group[0]])
            if _is_run(group_rows):
                out[order[group]] = array[group_rows[0] : group_rows[-1] + 1]
            else:
                out[order[group]] = array[group_rows]
        return out

    def image(self, id_str: str) -> np.ndarray:
        """(C, H, W) uint8 of one galaxy."""
        return self.images(self.positions([id_str]))[0]

    def votes(self, positions) -> np.ndarray:
        """(B, n_answers) int64 vote counts, columns in ``vote_columns`` order."""
        return self._votes[self._check_positions(positions)]

    def iter_batches(self, split_or_positions, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids (B,), images (B, C, H, W)) in order, by split name or manifest positions."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(split_or_positions, str):
            positions = self.split_positions(split_or_positions)
        else:
            positions = self._check_positions(split_or_positions)
        for start in range(0, len(positions), batch_size):
            batch = positions[start : start + batch_size]
            yield self._ids[batch], self.images(batch)

    def verify(self) -> None:
        """Recompute the sha256 of the manifest and every shard; ShardError naming any mismatch."""
        expected = self.config["checksums"]["sha256"]
        changed = [name for name, digest in expected.items() if _sha256(self.shard_dir / name) != digest]
        if changed:
            raise ShardError(
                f"{self.shard_dir}: files {describe_ids(changed)} do not match the checksums in "
                f"{CONFIG_NAME}; they were altered or damaged. Rerun `zoobot make-shards`."
            )

    def _check_positions(self, positions) -> np.ndarray:
        positions = np.asarray(positions)
        if positions.ndim != 1 or not (positions.size == 0 or np.issubdtype(positions.dtype, np.integer)):
            raise ValueError(
                f"positions must be a 1D array of integer manifest rows, got dtype {positions.dtype} "
                f"shape {positions.shape}; use positions(ids) to turn ids into positions"
            )
        positions = positions.astype(np.int64, copy=False)
        outside = (positions < 0) | (positions >= len(self.manifest))
        if outside.any():
            raise IndexError(
                f"positions {describe_ids(positions[outside])} are outside the manifest "
                f"(0..{len(self.manifest) - 1})"
            )
        return positions

    def _array(self, code: int) -> np.ndarray:
        array = self._arrays.get(code)
        if array is None:
            name = self._shard_files[code]
            array = np.load(self.shard_dir / name, mmap_mode="r")
            expected = (self.channels, self.size, self.size)
            n_rows = int(self._rows[self._shard_code == code].max()) + 1
            if array.dtype != np.uint8 or array.shape[1:] != expected or len(array) < n_rows:
                raise ShardError(
                    f"{self.shard_dir / name}: expected uint8 of shape (>= {n_rows}, *{expected}), "
                    f"got {array.dtype} {array.shape}; rerun `zoobot make-shards`"
                )
            self._arrays[code] = array
        return array


def _is_run(rows: np.ndarray) -> bool:
    """True when rows are consecutive increasing integers (a slice)."""
    return rows[-1] - rows[0] == len(rows) - 1 and (len(rows) < 2 or bool((np.diff(rows) == 1).all()))
