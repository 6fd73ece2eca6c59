"""Benchmark shards on the 6,664 real GZ1 SDSS JPEGs: writing speed, then reading speed
against decoding the source JPEGs every time.

    .venv/bin/python benchmarks/bench_shards.py [DATA_FOLDER] [--size 128] [--batch-size 64]

DATA_FOLDER defaults to ../shared/data/gz1_sdss_6664 (it needs labels.csv and images/).
Shards are written to a temporary folder that is deleted at the end. The source JPEGs are read
once before timing, so every row measures a warm page cache, not the disk.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zoobot.images import RESAMPLE, load_image
from zoobot.schema import SMOOTH_OR_FEATURED
from zoobot.shards import SPLITS, ShardReader, write_shards

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz1_sdss_6664"


def gz1_catalogs(folder: Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Elliptical = one 'smooth' vote, spiral / edge-on = one 'featured' vote; the rest unlabelled."""
    labels = pd.read_csv(folder / "labels.csv", dtype={"OBJID": str})
    smooth, featured = SMOOTH_OR_FEATURED.answer_columns
    catalog = pd.DataFrame(
        {
            "id_str": labels["OBJID"],
            "file_loc": [str(folder / name) for name in labels["image_file"]],
            smooth: (labels["CLASS"] == 0).astype(np.int64),
            featured: labels["CLASS"].isin([1, 2, 3]).astype(np.int64),
        }
    ).sample(frac=1.0, random_state=seed, ignore_index=True)
    is_labelled = catalog[[smooth, featured]].sum(axis=1) > 0
    return catalog[is_labelled].reset_index(drop=True), catalog[~is_labelled].reset_index(drop=True)


def rate(n_images: int, seconds: float) -> float:
    return n_images / seconds


def best_of(repeats: int, measure, *args) -> float:
    """The fastest of several runs: the machine is shared, so slower runs measure the neighbours."""
    return max(measure(*args) for _ in range(repeats))


def time_write(labelled, unlabelled, target: Path, size: int, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    summary = write_shards(labelled, unlabelled, target, SMOOTH_OR_FEATURED, val_size=500, size=size, workers=workers)
    return rate(summary.n_images, time.perf_counter() - start), summary.n_images


def time_random_batches(reader: ShardReader, batch_size: int, n_batches: int, rng) -> float:
    batches = [rng.integers(0, len(reader), batch_size) for _ in range(n_batches)]
    start = time.perf_counter()
    for positions in batches:
        reader.images(positions)  # (B, C, H, W)
    return rate(batch_size * n_batches, time.perf_counter() - start)


def time_random_single(reader: ShardReader, n_images: int, rng) -> float:
    """One image per call, as a map-style torch Dataset asks for them."""
    positions = rng.integers(0, len(reader), n_images)
    start = time.perf_counter()
    for position in positions:
        reader.images([position])
    return rate(n_images, time.perf_counter() - start)


def time_sequential(reader: ShardReader, batch_size: int) -> float:
    start = time.perf_counter()
    n_images = sum(len(ids) for split in SPLITS for ids, _ in reader.iter_batches(split, batch_size))
    return rate(n_images, time.perf_counter() - start)


def time_jpeg(paths: list[str], size: int) -> float:
    start = time.perf_counter()
    for path in paths:
        load_image(path, size, 3)
    return rate(len(paths), time.perf_counter() - start)


def time_jpeg_full_decode(paths: list[str], size: int) -> float:
    """Pillow without Image.draft: decode all 423 px, then resize."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((size, size), RESAMPLE)).transpose(2, 0, 1)
    return rate(len(paths), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-decode", type=int, default=1500, help="JPEGs decoded for the decode rows.")
    parser.add_argument("--repeats", type=int, default=3, help="Report the best of this many runs of each read.")
    args = parser.parse_args()

    labelled, unlabelled = gz1_catalogs(args.folder)
    paths = pd.concat([labelled, unlabelled])["file_loc"].tolist()
    for path in paths:  # warm the page cache so that no row measures the disk
        Path(path).read_bytes()
    print(f"{len(paths)} JPEGs from {args.folder}: {len(labelled)} labelled, {len(unlabelled)} unlabelled; {args.size} px")

    rng = np.random.default_rng(0)
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        for workers in (1, 2):
            speed, n_written = time_write(labelled, unlabelled, Path(tmp) / f"w{workers}", args.size, workers)
            rows.append((f"write shards, workers={workers}", speed))
        load_during_writes = os.getloadavg()[0]
        shard_bytes = sum(p.stat().st_size for p in (Path(tmp) / "w1").rglob("*.npy"))
        reader = ShardReader(Path(tmp) / "w1")
        sample = [paths[i] for i in rng.permutation(len(paths))[: args.n_decode]]
        repeats = args.repeats
        reads = [
            ("read: JPEG decode + resize (draft), 1 core", best_of(repeats, time_jpeg, sample, args.size)),
            ("read: JPEG full decode + resize, 1 core", best_of(repeats, time_jpeg_full_decode, sample, args.size)),
            (
                f"read: shards, random batches of {args.batch_size}",
                best_of(repeats, time_random_batches, reader, args.batch_size, 300, rng),
            ),
            ("read: shards, random single images", best_of(repeats, time_random_single, reader, 5000, rng)),
            (
                f"read: shards, sequential iter_batches({args.batch_size})",
                best_of(repeats, time_sequential, reader, args.batch_size),
            ),
        ]
    rows.extend(reads)
    baseline = reads[0][1]
    print(f"shards: {n_written} images, {shard_bytes / 2**20:.0f} MiB on disk")
    print(f"{os.cpu_count()} cores; 1-minute load average {load_during_writes:.1f} after the writes, {os.getloadavg()[0]:.1f} at the end\n")
    print(f"{'method':<48} {'images/s':>12} {'x JPEG decode':>14}")
    for name, speed in rows:
        print(f"{name:<48} {speed:>12,.0f} {speed / baseline:>14.2f}")


if __name__ == "__main__":
    main()
