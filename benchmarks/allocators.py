"""glibc (default, tuned by zoobot) against tcmalloc and jemalloc for zoobot's scoring, alternating.

Each configuration runs in its own process (an allocator is chosen at process start, via
``LD_PRELOAD``); configurations alternate, ``--repeats`` rounds, so each round compares runs made
seconds apart. Each process scores the first ``--n-galaxies`` pool galaxies of a shard folder
(efficientnet_b0, bf16 where the CPU has it, T = 15, Parquet written) after one warm-up run,
and prints wall and CPU seconds, kernel (sys) seconds and minor page faults of the timed run.

    PYTHONPATH=src python benchmarks/allocators.py /tmp/shards64 --n-galaxies 768 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIBRARIES = {
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
}


def child(shards: Path, n_galaxies: int, batch_size: int, precision: str, compile_: bool) -> None:
    import torch

    from zoobot.models import create_model
    from zoobot.prediction_writer import predict_to_parquet
    from zoobot.shards import ShardReader

    torch.set_num_threads(1)
    reader = ShardReader(shards)
    ids = list(reader.ids("pool")[:n_galaxies])
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", "smooth-or-featured", channels=reader.channels, image_size=reader.size).eval()
    with tempfile.TemporaryDirectory() as folder:
        def run():
            predict_to_parquet(model, reader, ids, Path(folder) / "p.parquet", n_samples=15, batch_size=batch_size,
                               precision=precision, compile=compile_)
        run()
        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        run()
        wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "galaxies_per_s": n_galaxies / wall, "wall": wall, "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime, "minflt": after.ru_minflt - before.ru_minflt,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path)
    parser.add_argument("--n-galaxies", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.shards, args.n_galaxies, args.batch_size, args.precision, args.compile)
        return
    configs = {"glibc": {"ZOOBOT_MALLOC_TUNING": "0"}, "glibc tuned": {}}
    configs.update({name: {"LD_PRELOAD": path} for name, path in LIBRARIES.items() if Path(path).exists()})
    command = [sys.executable, __file__, str(args.shards), "--child", "--n-galaxies", str(args.n_galaxies),
               "--batch-size", str(args.batch_size), "--precision", args.precision] + ["--compile"] * args.compile
    print(f"{args.n_galaxies} galaxies, batch {args.batch_size}, precision {args.precision}, compile {args.compile}")
    for repeat in range(args.repeats):
        for name, env in configs.items():
            result = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"repeat {repeat + 1}  {name:<12} {r['galaxies_per_s']:7.1f} galaxies/s  wall {r['wall']:5.1f} s  "
                  f"user {r['user']:5.1f} s  sys {r['sys']:5.2f} s  minor faults {r['minflt']:>9,}")


if __name__ == "__main__":
    main()
