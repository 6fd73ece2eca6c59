"""Benchmark: MC-dropout scoring and training throughput, side by side in one run.

    .venv/bin/python benchmarks/bench_models.py                        # efficientnet_b0, 128 px
    .venv/bin/python benchmarks/bench_models.py --architecture zoobot-2019 --size 64

Scoring (galaxies/s): head-only MC dropout (the backbone once per galaxy, then T dropout masks
on the pooled features: zoobot.predict's default path) against T full forward passes, at
T = 15 and 30, in fp32 and bf16 autocast.

Training (images/s): the real data pipeline (shards -> DataLoader -> augmentations -> train
step: forward, loss, backward, AdamW) against the train step alone on one in-memory batch,
and the augmentations alone.

Synthetic shards are rendered into a temporary folder unless --shard-dir is given. The
numbers depend on the machine and on whatever else runs on it; docs/training.md records them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoobot.augmentation import GalaxyAugmentation
from zoobot.catalog import define_experiment
from zoobot.models import create_model
from zoobot.predict import predict_image_batches
from zoobot.schema import DECALS_DR5, schema_to_dict
from zoobot.shard_dataset import ShardDataModule, ShardVoteDataset
from zoobot.shards import SPLITS, ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training import GalaxyLightningModule


def timed(function, repeats: int = 1, warm_up: bool = True) -> float:
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    if warm_up:
        function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def make_shards(folder: Path, n_galaxies: int, size: int) -> Path:
    catalog = make_synthetic_catalog(n_galaxies, folder / "synthetic", size=size, seed=0)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    labelled = experiment.labelled
    write_shards(labelled, labelled.iloc[:0], folder / "shards", DECALS_DR5, val_size=8, size=size, workers=2)
    return folder / "shards"


def bench_scoring(model, images: torch.Tensor, batch_size: int, repeats: int, n_full: int) -> list[tuple[str, float]]:
    """Head-only MC over all ``images``; full passes over the first ``n_full`` (their cost per
    galaxy does not depend on how many galaxies there are, and they are T times slower)."""
    rows = []
    batches = [(np.arange(len(images[i : i + batch_size])), images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    full_batches = [(None, images[:n_full])]

    def head_only(n_samples: int, precision: str, channels_last: bool = True) -> None:
        for _ in predict_image_batches(model, batches, n_samples, precision, channels_last=channels_last):
            pass

    def full_passes(n_samples: int, precision: str) -> None:
        model.eval()
        model.to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for _, batch in full_batches:
                x = batch.contiguous(memory_format=torch.channels_last)
                torch.cat([model(x, n_samples=1) for _ in range(n_samples)], dim=1)  # (batch, sample, output)

    n = len(images)
    for precision in ("32", "bf16"):
        for n_samples in (15, 30):
            head = n / timed(lambda: head_only(n_samples, precision), repeats)
            full = n_full / timed(lambda: full_passes(n_samples, precision), 1, warm_up=False)
            rows.append((f"score T={n_samples:<2} {precision:>4}: head-only MC vs {n_samples} full passes", head, full))
            print(f"  {rows[-1][0]}: {head:8.1f} vs {full:8.1f} galaxies/s ({head / full:.1f}x)", flush=True)
    plain = n / timed(lambda: head_only(15, "32", channels_last=False), repeats)
    last = n / timed(lambda: head_only(15, "32", channels_last=True), repeats)
    rows.append(("score T=15   32: head-only, channels_last vs contiguous", last, plain))
    print(f"  {rows[-1][0]}: {last:8.1f} vs {plain:8.1f} galaxies/s ({last / plain:.2f}x)", flush=True)
    return rows


def bench_training(architecture: str, shard_dir: Path, batch_size: int, n_steps: int, num_workers: int) -> list[tuple]:
    reader = ShardReader(shard_dir)
    positions = reader.split_positions("train")
    counts = reader.votes(positions)
    torch.manual_seed(0)
    model = create_model(architecture, DECALS_DR5, channels=reader.channels, image_size=reader.size)
    settings = {"learning_rate": 1e-3, "weight_decay": 1e-2}
    module = GalaxyLightningModule(model.config, schema_to_dict(DECALS_DR5), settings, model=model)
    optimizer = module.configure_optimizers()
    module.train()

    def step(images: torch.Tensor, batch_counts: torch.Tensor) -> None:
        loss = module._loss(images, batch_counts, n_samples=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    augmentation = GalaxyAugmentation(reader.size)
    dataset = ShardVoteDataset(reader, positions, counts, augmentation)
    data = ShardDataModule(dataset, dataset, batch_size=batch_size, num_workers=num_workers)
    loader = data._loader(dataset, shuffle=True, drop_last=True)
    n_batches = min(n_steps, len(loader))

    def pipeline() -> None:
        for i, (images, batch_counts) in enumerate(loader):
            if i == n_batches:
                break
            step(images, batch_counts)

    fixed_images, fixed_counts = ShardVoteDataset(reader, positions[:batch_size], counts[:batch_size]).__getitems__(list(range(batch_size)))

    def model_alone() -> None:
        for _ in range(n_batches):
            step(fixed_images, fixed_counts)

    def augment_only() -> None:
        for i, (images, _) in enumerate(loader):
            if i == n_batches:
                break

    n_images = n_batches * batch_size
    with_data = n_images / timed(pipeline)
    alone = n_images / timed(model_alone)
    loading = n_images / timed(augment_only)
    batch_images = fixed_images.clone()
    batched = batch_size / timed(lambda: GalaxyAugmentation(reader.size)(batch_images), 3)
    per_galaxy = batch_size / timed(lambda: GalaxyAugmentation(reader.size, batched=False)(batch_images), 3)
    rows = [
        (f"train {architecture} {reader.size}px batch {batch_size}: pipeline vs model alone", with_data, alone),
        ("train: shard loading + augmentations alone", loading, float("nan")),
        ("augment: batched affine vs v2 per galaxy", batched, per_galaxy),
    ]
    print(f"  {rows[0][0]}: {with_data:8.1f} vs {alone:8.1f} images/s ({with_data / alone:.2f}x)", flush=True)
    print(f"  {rows[1][0]}: {loading:8.1f}", flush=True)
    print(f"  {rows[2][0]}: {batched:8.1f} vs {per_galaxy:8.1f} images/s ({batched / per_galaxy:.2f}x)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-galaxies", type=int, default=64, help="Galaxies scored per measurement.")
    parser.add_argument("--full-pass-galaxies", type=int, default=64, help="Galaxies for the (slow) full passes; keep it >= --score-batch-size so both paths run the same batch size.")
    parser.add_argument("--score-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for the pipeline.")
    parser.add_argument("--repeats", type=int, default=2, help="Repeats of the fast measurements (best kept).")
    parser.add_argument("--shard-dir", type=Path, default=None, help="Existing shards (else synthetic).")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.architecture} at {args.size} px", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        n_needed = max(args.n_galaxies, args.train_batch_size * args.train_steps) + 8
        shard_dir = args.shard_dir or make_shards(Path(tmp), n_needed, args.size)
        reader = ShardReader(shard_dir)
        if reader.size != args.size:
            raise SystemExit(f"--shard-dir holds {reader.size} px images; pass --size {reader.size}")
        positions = np.concatenate([reader.split_positions(s) for s in SPLITS])[: args.n_galaxies]
        images = torch.as_tensor(reader.images(positions))
        torch.manual_seed(0)
        model = create_model(args.architecture, DECALS_DR5, channels=reader.channels, image_size=args.size)
        print("scoring (galaxies/s):", flush=True)
        rows = bench_scoring(model, images, args.score_batch_size, args.repeats, min(args.full_pass_galaxies, len(images)))
        print("training (images/s):", flush=True)
        rows += bench_training(args.architecture, shard_dir, args.train_batch_size, args.train_steps, args.num_workers)

    print()
    print(f"| {'measurement':<66} | {'A':>9} | {'B':>9} | {'A / B':>6} |")
    print(f"|{'-' * 68}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    for name, a, b in rows:
        ratio = "" if np.isnan(b) else f"{a / b:.2f}"
        b_text = "" if np.isnan(b) else f"{b:.1f}"
        print(f"| {name:<66} | {a:>9.1f} | {b_text:>9} | {ratio:>6} |")


if __name__ == "__main__":
    main()
