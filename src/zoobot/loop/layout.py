"""Where an experiment keeps its files, and which iterations are complete.

Light on imports on purpose: reports and the CLI read experiments without loading PyTorch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from zoobot.files import atomic_path

FINAL_STATE = "final_state.json"
INSTRUCTIONS_DIR = "instructions"
LEDGER = "ledger.sqlite"


def iteration_dir(experiment_dir: Path, iteration: int) -> Path:
    return Path(experiment_dir) / "iterations" / f"iteration_{iteration:03d}"


def partial_dir(experiment_dir: Path, iteration: int) -> Path:
    return Path(experiment_dir) / "iterations" / f".iteration_{iteration:03d}.partial"


def is_complete(folder: Path) -> bool:
    return (folder / FINAL_STATE).exists()


def completed_iterations(experiment_dir: Path) -> list[int]:
    folder = Path(experiment_dir) / "iterations"
    if not folder.exists():
        return []
    return sorted(
        int(p.name.split("_")[1]) for p in folder.glob("iteration_*") if is_complete(p)
    )


def next_iteration(experiment_dir: Path) -> int:
    done = completed_iterations(experiment_dir)
    return done[-1] + 1 if done else 1


def metrics_table(experiment_dir: Path) -> pd.DataFrame:
    """One row per complete iteration, from the iterations' own metrics.json files."""
    rows = []
    for n in completed_iterations(experiment_dir):
        metrics = json.loads((iteration_dir(experiment_dir, n) / "metrics.json").read_text())
        rows.append({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
    return pd.DataFrame(rows)


def write_metrics_table(experiment_dir: Path) -> Path:
    """Rebuild metrics.csv from the complete iterations (a convenience copy; never the source)."""
    path = Path(experiment_dir) / "metrics.csv"
    with atomic_path(path) as tmp:
        metrics_table(experiment_dir).to_csv(tmp, index=False)
    return path
