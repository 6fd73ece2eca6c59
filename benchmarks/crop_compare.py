"""Compare shard sets made with different `make-shards --crop-fraction`: a picture and a table.

    .venv/bin/python benchmarks/crop_compare.py grid SHARDS_A SHARDS_B ... --out grid.png [--n 8]
    .venv/bin/python benchmarks/crop_compare.py table RUN_FOLDER ... [--baseline-crop 1.0]

``grid`` draws the same eval galaxies (the first ``--n`` of the val split, which every shard set
made from the same catalogs shares) from each shard set: one row per shard set, labelled with
its crop, each 48 px image enlarged 2x with nearest-neighbour so the pixels stay visible.

``table`` reads the ``metrics.json`` that `zoobot train --out RUN` writes. Each run's crop comes
from its shards' ``shard_config.json`` and its seed from the recorded settings. It prints, per
crop, the mean and sample standard deviation over seeds of the MC-dropout val metrics of the
best checkpoint (loss, vote-fraction MAE and RMSE, accuracy of the majority answer) and of the
best val loss seen in training, then the difference to ``--baseline-crop`` paired by seed
(mean, sample standard deviation, 95% t-interval over seeds, and every seed's value).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import stats

from zoobot.shards import ShardReader
from zoobot.shards.format import crop_fraction_of

LABEL_WIDTH = 90
ZOOM = 2


def grid(shard_dirs: list[Path], out: Path, n: int) -> None:
    readers = [ShardReader(d) for d in shard_dirs]
    ids = readers[0].ids("val")[:n]
    rows = []
    for reader in readers:
        if list(reader.ids("val")[:n]) != list(ids):
            raise SystemExit(f"{reader.shard_dir}: its val split holds other galaxies than {readers[0].shard_dir}")
        images = reader.images(reader.positions(ids))  # (n, C, H, W)
        tiles = [np.kron(image.transpose(1, 2, 0), np.ones((ZOOM, ZOOM, 1), np.uint8)) for image in images]
        strip = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
        label = Image.new("RGB", (LABEL_WIDTH, strip.shape[0]), "white")
        ImageDraw.Draw(label).text((6, strip.shape[0] // 2 - 6), f"crop {crop_fraction_of(reader.config):g}", fill="black")
        rows.append(np.concatenate([np.asarray(label), strip], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    print(f"wrote {out}: {len(readers)} rows x {len(ids)} galaxies")


def table(run_dirs: list[Path], baseline_crop: float) -> None:
    runs: dict[float, dict[int, dict]] = defaultdict(dict)
    for run in run_dirs:
        record = json.loads((run / "metrics.json").read_text())
        crop = crop_fraction_of(json.loads((Path(record["shard_dir"]) / "shard_config.json").read_text()))
        metrics = record["metrics"]
        accuracies = [q["accuracy_all"] for q in metrics["questions"].values() if q.get("accuracy_all") is not None]
        runs[crop][record["settings"]["seed"]] = {
            "val loss (MC)": metrics["loss"],
            "MAE": metrics["mae"],
            "RMSE": metrics["rmse"],
            "accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
            "best val loss (training)": record["best_val_loss"],
            "epochs": record["epochs_trained"],
        }
    names = list(next(iter(next(iter(runs.values())).values())))
    print("| crop | seeds | " + " | ".join(names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for crop in sorted(runs, reverse=True):
        seeds = sorted(runs[crop])
        cells = [mean_sd([runs[crop][s][name] for s in seeds]) for name in names]
        print(f"| {crop:g} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    base = runs[baseline_crop]
    print(f"\npaired by seed, crop minus crop {baseline_crop:g} (mean ± sd; per seed):")
    for crop in sorted(runs, reverse=True):
        if crop == baseline_crop:
            continue
        seeds = sorted(set(runs[crop]) & set(base))
        for name in names:
            diffs = np.array([runs[crop][s][name] - base[s][name] for s in seeds])
            half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs))
            low, high = diffs.mean() - half, diffs.mean() + half
            verdict = "includes 0: no significant difference" if low <= 0 <= high else "excludes 0"
            print(
                f"  crop {crop:g} {name}: {mean_sd(diffs)}, 95% t-interval [{low:+.4f}, {high:+.4f}] ({verdict}); "
                f"per seed {', '.join(f'{d:+.4f}' for d in diffs)}"
            )


def mean_sd(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drawing = commands.add_parser("grid")
    drawing.add_argument("shard_dirs", nargs="+", type=Path)
    drawing.add_argument("--out", type=Path, required=True)
    drawing.add_argument("--n", type=int, default=8)
    tabling = commands.add_parser("table")
    tabling.add_argument("run_dirs", nargs="+", type=Path)
    tabling.add_argument("--baseline-crop", type=float, default=1.0)
    args = parser.parse_args()
    if args.command == "grid":
        grid(args.shard_dirs, args.out, args.n)
    else:
        table(args.run_dirs, args.baseline_crop)


if __name__ == "__main__":
    main()
