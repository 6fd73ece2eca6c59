"""Pool scoring against the model's own speed, side by side in one run on the same images.

Prints galaxies/s, and ratios, for:
- zoobot: ``predict_to_parquet`` at T MC samples (the same ``BatchScorer`` and Parquet writer that
  ``zoobot predict`` runs on each rank), end to end: shard reads, one backbone pass, T head
  samples, summaries and intervals, Parquet written; compiled (its compile done once, before the
  repeats, as a pool of many batches amortises it) and eager;
- one pass, eager: the same model over the same images, preloaded in memory, backbone + head once;
- one pass, compiled: the same with ``torch.compile`` (inductor, freezing; compile time printed);
- naive: T full passes (backbone and head T times), on the first ``--naive-galaxies`` of them.

Every measurement runs ``--repeats`` times, in turn, so each repeat's ratios compare runs made
seconds apart (the development machine is shared). Wall time and process CPU time are both
given; ratios use wall time. Defaults: efficientnet_b0 (random weights, seeded), binomial
smooth-or-featured head, bf16 autocast where the CPU has bf16 units, batch 128.

    # 64 px GZ1 shards (docs/scale.md), then:
    PYTHONPATH=src python benchmarks/scoring.py /tmp/shards64 --n-galaxies 1024 --repeats 3 --threads 1
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 PYTHONPATH=src python benchmarks/scoring.py ...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoobot.allocator import allocator_name, tune_glibc_malloc
from zoobot.models import create_model
from zoobot.predict import resolve_precision
from zoobot.prediction_writer import predict_to_parquet
from zoobot.shards import ShardReader


def timed(function) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def passes(forward, images: torch.Tensor, batch_size: int, n_passes: int) -> None:
    """n_passes x forward over images, batch by batch (the last batch padded to batch_size)."""
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if len(batch) < batch_size:
                batch = torch.cat([batch, batch.new_zeros((batch_size - len(batch), *batch.shape[1:]))])
            for _ in range(n_passes):
                forward(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path, help="a shard folder; its pool split is scored")
    parser.add_argument("--n-galaxies", type=int, default=1024)
    parser.add_argument("--naive-galaxies", type=int, default=256)
    parser.add_argument("--n-samples", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = tune_glibc_malloc()  # what zoobot's scoring does; the bare passes get it too

    reader = ShardReader(args.shards)
    positions = reader.split_positions("pool")[: args.n_galaxies]
    ids = list(reader.ids("pool")[: args.n_galaxies])
    images = torch.from_numpy(reader.images(positions))  # (galaxy, C, H, W) uint8, preloaded
    torch.manual_seed(0)
    model = create_model(args.architecture, "smooth-or-featured", channels=reader.channels, image_size=reader.size).eval()
    precision = resolve_precision(args.precision, "cpu")
    print(
        f"{len(ids)} pool galaxies of {args.shards} at {reader.size} px, {args.architecture}, precision {precision}, "
        f"batch {args.batch_size}, T = {args.n_samples}, {torch.get_num_threads()} threads, allocator "
        f"{allocator_name()}{' (tuned)' if tuned else ''}"
    )

    def one_pass(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model.forward_head(model.forward_features(batch).float(), 1)

    compiled = torch.compile(one_pass, dynamic=False, options={"freezing": True})
    compile_seconds, _ = timed(lambda: passes(compiled, images[: args.batch_size], args.batch_size, 1))
    print(f"compile (first batch, inductor cache as found): {compile_seconds:.1f} s")
    naive_images = images[: args.naive_galaxies]

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "pool.parquet"

        def zoobot(compile_: bool):
            return lambda: predict_to_parquet(
                model, reader, ids, out, n_samples=args.n_samples, batch_size=args.batch_size,
                precision=precision, compile=compile_,
            )

        zoobot_compiled, zoobot_eager = f"zoobot T={args.n_samples} compiled", f"zoobot T={args.n_samples} eager"
        naive = f"naive {args.n_samples} passes"
        runs = {
            zoobot_compiled: (zoobot(True), len(ids)),
            zoobot_eager: (zoobot(False), len(ids)),
            "one pass, compiled": (lambda: passes(compiled, images, args.batch_size, 1), len(ids)),
            "one pass, eager": (lambda: passes(one_pass, images, args.batch_size, 1), len(ids)),
            naive: (lambda: passes(one_pass, naive_images, args.batch_size, args.n_samples), len(naive_images)),
        }
        zoobot(False)()  # warm-up: first touch of the shard pages, oneDNN primitives
        zoobot_compile, _ = timed(zoobot(True))  # zoobot compiles its backbone pass once per model
        print(f"zoobot's first compiled run (compile included): {zoobot_compile:.1f} s")
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, (run, n) in runs.items():
                seconds, cpu_seconds = timed(run)
                wall[name].append(n / seconds)
                cpu[name].append(n / cpu_seconds)
                print(f"repeat {repeat + 1}  {name:<24} {n / seconds:8.1f} galaxies/s  (wall {seconds:6.1f} s, cpu {cpu_seconds:6.1f} s)")

    ratios = {
        "zoobot compiled / one pass compiled (target >= 0.8)": (zoobot_compiled, "one pass, compiled"),
        "zoobot compiled / naive (target >= 10)": (zoobot_compiled, naive),
        "zoobot eager / one pass eager": (zoobot_eager, "one pass, eager"),
        "zoobot eager / naive": (zoobot_eager, naive),
    }
    print("\nratios of galaxies/s per repeat (each from runs seconds apart), mean and spread (max - min);")
    print("by wall time, then by process CPU time (steadier when other jobs share the cores):")
    for clock, rates in (("wall", wall), ("cpu", cpu)):
        for label, (a, b) in ratios.items():
            values = [x / y for x, y in zip(rates[a], rates[b])]
            spread = max(values) - min(values)
            print(f"{clock:<4} {label:<52} {'  '.join(f'{v:6.2f}' for v in values)}   "
                  f"mean {statistics.mean(values):.2f}  spread {spread:.2f}")
    print("median galaxies/s (wall): " + ", ".join(f"{name} {np.median(v):.0f}" for name, v in wall.items()))


if __name__ == "__main__":
    main()
