"""Memory and time of an iteration's pool steps at 100k to 2M galaxies (tiny images).

For each pool size, in its own process: ledger creation (every pool id registered), candidate
selection (``loop.iteration.candidate_positions``), scoring (``pool_scoring.score_shards``: the
loop's scoring step, BALD at T = 15, streaming into ``scores.parquet``), acquisition (the merged
top-k written as ``acquired.csv``) and requests (``Ledger.mark_requested``). A thread samples
``/proc/self/status`` every 10 ms; the table gives each step's seconds and the run's peak
anonymous RSS (``RssAnon``: the process's own memory) separately from its peak file-backed RSS
(``RssFile``: memory-mapped shard pages and libraries, which the kernel can drop at will).

The shards are written first (not timed): 8x8 px, 1 channel, random uint8, in the shard format
(``shards.format``), with 100 train / val / test galaxies; the model is timm's ``test_resnet``
with zoobot's binomial head (random weights). One thread (``--threads``).

    PYTHONPATH=src python benchmarks/pool_memory.py --sizes 100000 500000 1000000 2000000 --work /tmp/pool_memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

SIZE, CHANNELS, SHARD_ROWS, N_LABELLED = 8, 1, 65_536, 100
SCHEMA = "smooth-or-featured"


def write_tiny_shards(folder: Path, n_pool: int, seed: int = 0) -> None:
    """Shards of random 8x8 images: N_LABELLED each of train / val / test, then n_pool pool galaxies."""
    from zoobot.files import write_json_atomic
    from zoobot.schema import get_schema
    from zoobot.shards.format import CONFIG_NAME, FORMAT_VERSION, MANIFEST_NAME, SPLITS, file_sha256, shard_name

    schema = get_schema(SCHEMA)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    counts = {"train": N_LABELLED, "val": N_LABELLED, "test": N_LABELLED, "pool": n_pool}
    columns = {name: [] for name in ("id_str", "split", "shard", "row")}
    files, index = {}, 0
    for split in SPLITS:
        files[split] = []
        for start in range(0, counts[split], SHARD_ROWS):
            rows = min(SHARD_ROWS, counts[split] - start)
            name = f"{split}_{shard_name(index)}"
            images = rng.integers(0, 256, (rows, CHANNELS, SIZE, SIZE), dtype=np.uint8)
            np.save(folder / name, images)
            files[split].append(name)
            index += 1
            columns["id_str"].append(np.char.add(f"{split}-", np.arange(start, start + rows).astype(str)))
            columns["split"].append(np.full(rows, split, dtype=object))
            columns["shard"].append(np.full(rows, name, dtype=object))
            columns["row"].append(np.arange(rows, dtype=np.int64))
    manifest = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    manifest["file_loc"] = ""
    for column in schema.answer_columns:
        manifest[column] = rng.integers(0, 20, len(manifest))
    manifest.to_parquet(folder / MANIFEST_NAME, index=False)
    names = [MANIFEST_NAME, *(n for split in SPLITS for n in files[split])]
    write_json_atomic(folder / CONFIG_NAME, {
        "format_version": FORMAT_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": SIZE, "channels": CHANNELS, "crop_fraction": 1.0, "shard_size": SHARD_ROWS,
        "n_galaxies": len(manifest), "splits": {s: {"count": counts[s], "shards": files[s]} for s in SPLITS},
        "val_size": N_LABELLED, "test_size": N_LABELLED, "max_labelled": None, "max_unlabelled": None,
        "schema": SCHEMA, "vote_columns": list(schema.answer_columns), "sources": {"benchmark": "random"},
        "skip_bad": False, "n_bad_images": 0, "decode": {}, "checksums": {"sha256": {n: file_sha256(folder / n) for n in names}},
    })


class MemorySampler(threading.Thread):
    """Peak RssAnon and RssFile (MiB) of this process, sampled every 10 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self.running = True

    def sample(self) -> None:
        with open("/proc/self/status") as handle:
            for line in handle:
                key = line.split(":")[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(0.01)


def child(shards: Path, work: Path, k: int) -> None:
    import torch

    from zoobot.loop.iteration import candidate_positions
    from zoobot.loop.ledger import Ledger
    from zoobot.models import create_model
    from zoobot.pool_scoring import ScoringJob, score_shards
    from zoobot.shards import ShardReader

    sampler = MemorySampler()
    sampler.start()
    seconds = {}

    def step(name, function):
        started = time.perf_counter()
        value = function()
        seconds[name] = time.perf_counter() - started
        return value

    reader = step("open_shards", lambda: ShardReader(shards))
    ledger = Ledger(work / "ledger.sqlite", 2, create=True)
    step("ledger", lambda: ledger.add_galaxies(reader.ids("pool")))
    _, positions = step("candidates", lambda: candidate_positions(ledger, reader, None, np.random.default_rng(0)))
    torch.manual_seed(0)
    model = create_model("test_resnet", SCHEMA, channels=CHANNELS, image_size=SIZE).eval()
    job = ScoringJob(n_samples=15, batch_size=4096, precision="auto", seed=1, unit_size=65_536, catalog=False,
                     acquisition="bald", top_k=k)
    result = step("scoring", lambda: score_shards(model, reader, positions, job, work / "scoring"))

    def acquire():
        pd.DataFrame({"id_str": result.selection.ids, "score": result.selection.scores}).to_csv(work / "acquired.csv", index=False)
        return list(result.selection.ids)

    acquired = step("acquisition", acquire)
    step("requests", lambda: ledger.mark_requested(acquired, 1))
    sampler.running = False
    sampler.join()
    sampler.sample()
    print(json.dumps({"n": len(positions), "seconds": seconds, "peak_mib": sampler.peak,
                      "scores_rows": int(pd.read_parquet(result.scores, columns=["score"]).shape[0])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 1_000_000, 2_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoobot_pool_memory"))
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        child(args.child[0], args.child[1], args.k)
        return
    steps = ("ledger", "candidates", "scoring", "acquisition", "requests")
    print(f"| pool | {' | '.join(f'{s} s' for s in steps)} | total s | s per 100k | peak RssAnon MiB | peak RssFile MiB |")
    print("|---" * (len(steps) + 5) + "|")
    for n in args.sizes:
        folder = args.work / f"pool_{n}"
        shutil.rmtree(folder, ignore_errors=True)
        write_tiny_shards(folder / "shards", n)
        (folder / "work").mkdir()
        command = [sys.executable, __file__, "--child", str(folder / "shards"), str(folder / "work"),
                   "--k", str(args.k), "--threads", str(args.threads)]
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["n"] == n and r["scores_rows"] == n, r
        total = sum(r["seconds"][s] for s in steps)
        cells = " | ".join(f"{r['seconds'][s]:.1f}" for s in steps)
        print(f"| {n:,} | {cells} | {total:.1f} | "
              f"{total / n * 1e5:.2f} | {r['peak_mib']['RssAnon']:.0f} | {r['peak_mib']['RssFile']:.0f} |", flush=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
