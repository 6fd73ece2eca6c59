"""write_shards: decode every image once and write a complete shard folder, or nothing.

The folder is built under a temporary name beside ``shard_dir`` and renamed into place only
when everything, ``shard_config.json`` last, is written.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot import __version__
from zoobot.catalog import validate_catalog
from zoobot.files import write_json_atomic
from zoobot.ids import describe_ids
from zoobot.images import DECODE_SETTINGS, ImageError, check_crop_fraction, load_image
from zoobot.progress import ProgressCallback
from zoobot.schema import Schema
from zoobot.shards.format import (
    BAD_IMAGES_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    BadImagesError,
    ShardError,
    file_sha256,
    npy_header,
    shard_name,
)

logger = logging.getLogger(__name__)

N_BAD_SHOWN = 10


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


def write_shards(
    labelled: pd.DataFrame,
    unlabelled: pd.DataFrame,
    shard_dir: str | os.PathLike,
    schema: Schema,
    val_size: int,
    test_size: int = 0,
    size: int = 128,
    channels: int = 3,
    crop_fraction: float = 1.0,
    shard_size: int = 4096,
    max_labelled: int | None = None,
    max_unlabelled: int | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    progress: ProgressCallback | None = None,
    sources: Mapping[str, str] | None = None,
) -> ShardSummary:
    """Decode every image once and write the train / val / test / pool shards.

    val is the first ``val_size`` labelled rows (early stopping and checkpoint choice), test the
    next ``test_size`` (reported, never used for any choice), train the rest of the labelled
    rows (at most ``max_labelled``), pool the unlabelled rows (at most ``max_unlabelled``);
    catalogs arrive shuffled from define-experiment. ``crop_fraction`` in (0, 1] keeps the central
    fraction of each image side before resizing to ``size`` (1.0: the whole image; see
    :func:`zoobot.images.crop_box`). ``workers > 1`` decodes in a process pool, in order.

    Without ``skip_bad`` any missing or undecodable image fails the run with a BadImagesError
    naming all of them, and nothing is left at ``shard_dir``. With ``skip_bad`` they are left
    out and listed in ``bad_images.csv``. ``sources`` (e.g. the catalog paths) is recorded in
    ``shard_config.json``.
    """
    _check_settings(val_size, test_size, size, channels, shard_size, max_labelled, max_unlabelled, workers)
    check_crop_fraction(crop_fraction)
    plan = _plan(labelled, unlabelled, schema, val_size, test_size, max_labelled, max_unlabelled)
    shard_dir = Path(shard_dir)
    _check_target(shard_dir)
    if not skip_bad:
        _fail_on_missing_files(plan)

    start = time.perf_counter()
    shard_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not zoobot.files.atomic_path: its temporary name is fixed per process id, and a run killed
    # mid-write leaves that folder behind (warned about above). Where process ids repeat (a
    # container's entry point), the rerun would then write into, or trip over, that leftover;
    # mkdtemp gives every run a new empty folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{shard_dir.name}.tmp-", dir=shard_dir.parent))
    logger.debug("writing shards into %s", tmp)
    try:
        locations, bad = _decode_and_write(
            plan, tmp, size, channels, crop_fraction, shard_size, workers, skip_bad, progress
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
            "crop_fraction": float(crop_fraction),
            "shard_size": shard_size,
            "n_galaxies": len(manifest),
            "splits": {split: {"count": counts[split], "shards": shard_files[split]} for split in SPLITS},
            "val_size": val_size,
            "test_size": test_size,
            "max_labelled": max_labelled,
            "max_unlabelled": max_unlabelled,
            "schema": schema.name,
            "vote_columns": list(schema.answer_columns),
            "sources": dict(sources or {}),
            "skip_bad": skip_bad,
            "n_bad_images": len(bad),
            "decode": DECODE_SETTINGS,
            "checksums": {"sha256": {name: file_sha256(tmp / name) for name in checksummed}},
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


def _check_settings(val_size, test_size, size, channels, shard_size, max_labelled, max_unlabelled, workers) -> None:
    checks = [
        (val_size >= 0, f"val_size must be >= 0, got {val_size}"),
        (test_size >= 0, f"test_size must be >= 0, got {test_size}"),
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


def _plan(labelled, unlabelled, schema, val_size, test_size, max_labelled, max_unlabelled) -> pd.DataFrame:
    """One row per image to write, in writing order: id_str, file_loc, split, vote columns."""
    labelled = validate_catalog(labelled, schema, check_files=False, name="labelled catalog")
    unlabelled = validate_catalog(unlabelled, schema, check_files=False, name="unlabelled catalog")
    both = np.intersect1d(labelled["id_str"].to_numpy(str), unlabelled["id_str"].to_numpy(str))
    if len(both):
        raise ShardError(
            f"ids {describe_ids(both)} are in both the labelled and the unlabelled catalog; "
            "a galaxy must be in one of them. Rebuild the catalogs with `zoobot define-experiment`."
        )
    held_out = val_size + test_size
    if held_out > len(labelled):
        raise ShardError(
            f"val_size + test_size = {val_size} + {test_size} is larger than the labelled catalog "
            f"({len(labelled)} galaxies); choose a smaller --val-size or --test-size"
        )
    train_stop = len(labelled) if max_labelled is None else min(len(labelled), held_out + max_labelled)
    parts = {
        "train": labelled.iloc[held_out:train_stop],
        "val": labelled.iloc[:val_size],
        "test": labelled.iloc[val_size:held_out],
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


def _decode_or_reason(
    path: str, size: int, channels: int, crop_fraction: float
) -> tuple[np.ndarray | None, str | None]:
    """Worker task: (C, size, size) uint8 and None, or None and why it failed."""
    try:
        return load_image(path, size, channels, crop_fraction), None
    except ImageError as error:
        return None, error.reason


def _decode_and_write(plan, tmp, size, channels, crop_fraction, shard_size, workers, skip_bad, progress):
    """Decode in plan order and append to per-split shard files.

    Returns ({plan index: (shard name, row)}, bad images DataFrame indexed like plan).
    After the first bad image without skip_bad, decoding goes on (to report every bad image)
    but nothing more is written.
    """
    decode = functools.partial(_decode_or_reason, size=size, channels=channels, crop_fraction=crop_fraction)
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
        name = f"{self.folder.name}/{shard_name(self.n_shards - 1)}"
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
        self._file = open(self.folder / shard_name(self.n_shards), "wb")
        self._file.write(npy_header((0, *self.item_shape)))
        self._rows = 0
        self.n_shards += 1

    def _finish(self) -> None:
        self._file.seek(0)
        self._file.write(npy_header((self._rows, *self.item_shape)))
        self._file.close()
        self._file = None
