"""Score a pool of up to 1,000,000 galaxies through the loop's streaming path; report memory.

The images are tiny random uint8 arrays made on the fly (no shards on disk), so the run measures
the scoring pipeline itself: MC-dropout prediction (one backbone pass, n_samples head passes),
binomial BALD over 40 expected votes, streaming top-k, and the scores Parquet file. With
``--features-only`` the backbone is skipped: random pooled features go straight to the MC head,
which makes a 1M-galaxy run take seconds on a CPU. Peak RSS is printed after each milestone;
bounded memory means it stays flat as the pool grows.

    .venv/bin/python benchmarks/bench_pool_scoring.py --n-galaxies 1000000 --features-only
    .venv/bin/python benchmarks/bench_pool_scoring.py --n-galaxies 100000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoobot import acquisition
from zoobot.models import create_model
from zoobot.predict import predict_image_batches
from zoobot.schema import SMOOTH_OR_FEATURED


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_batches(n_galaxies: int, batch_size: int, shape: tuple, milestones: dict, started: float):
    """Yield (ids, random arrays (B, *shape)) and record (seconds, peak RSS) at each milestone."""
    rng = np.random.default_rng(0)
    marks = sorted(m for m in (10_000, 100_000, 300_000, 1_000_000, 2_000_000) if m < n_galaxies) + [n_galaxies]
    for start in range(0, n_galaxies, batch_size):
        stop = min(start + batch_size, n_galaxies)
        ids = np.array([f"galaxy-{i:07d}" for i in range(start, stop)])
        if len(shape) == 3:  # images
            yield ids, rng.integers(0, 256, (stop - start, *shape), dtype=np.uint8)
        else:  # pooled features
            yield ids, torch.from_numpy(rng.standard_normal((stop - start, *shape), dtype=np.float32))
        for mark in marks:
            if start < mark <= stop:
                milestones[mark] = (time.perf_counter() - started, peak_rss_mib())


def head_predictions(model, feature_batches, n_samples: int):
    """(ids, features) -> (ids, MC predictions (B, n_samples, n_outputs)) through the head alone."""
    with torch.inference_mode():
        for ids, features in feature_batches:
            yield ids, model.forward_head(features, n_samples).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-galaxies", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--n-samples", type=int, default=15)
    parser.add_argument("--architecture", default="zoobot-2019")
    parser.add_argument("--features-only", action="store_true", help="Skip the backbone (random features).")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(args.architecture, schema=SMOOTH_OR_FEATURED, channels=3, image_size=args.size)
    selector = acquisition.TopK(1000)
    milestones: dict[int, tuple[float, float]] = {}
    print(f"peak RSS before scoring: {peak_rss_mib():.0f} MiB")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        if args.features_only:
            features = random_batches(args.n_galaxies, args.batch_size, (model.n_features,), milestones, started)
            batches = head_predictions(model, features, args.n_samples)
        else:
            images = random_batches(args.n_galaxies, args.batch_size, (3, args.size, args.size), milestones, started)
            batches = predict_image_batches(model, images, args.n_samples)
        n_scored = acquisition.score_stream(
            batches, acquisition.get_acquisition("bald"), selector, Path(folder) / "scores.parquet",
            SMOOTH_OR_FEATURED, 40, np.random.default_rng(0),
        )
        seconds = time.perf_counter() - started
        scores_mib = (Path(folder) / "scores.parquet").stat().st_size / 2**20
    source = "random features, head only" if args.features_only else f"{args.size} px images"
    print(f"{args.architecture}, {source}, n_samples={args.n_samples}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'galaxies scored':>16} {'seconds':>9} {'galaxies/s':>11} {'peak RSS MiB':>13}")
    for mark, (elapsed, rss) in sorted(milestones.items()):
        print(f"{mark:>16,} {elapsed:>9.1f} {mark / elapsed:>11,.0f} {rss:>13.0f}")
    print(f"scored {n_scored:,} in {seconds:.1f} s ({n_scored / seconds:,.0f} galaxies/s); "
          f"kept top {len(selector.result())}; scores file {scores_mib:.1f} MiB")


if __name__ == "__main__":
    main()
