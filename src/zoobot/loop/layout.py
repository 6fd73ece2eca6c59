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
TEST_PREDICTIONS = "test_predictions.npy"  # (galaxy, sample, output) on the test split, in test order
COMPARISON_FILE = "comparison.json"  # written by `zoobot compare`: its runs, by acquisition and seed
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


def identity(experiment_dir: Path) -> dict | None:
    """What the experiment's runs must share to be compared (recorded by each iteration), from
    its last complete iteration; None for experiments made before it was recorded."""
    done = completed_iterations(experiment_dir)
    if not done:
        return None
    return json.loads((iteration_dir(experiment_dir, done[-1]) / "metrics.json").read_text()).get("identity")


def identity_differences(identities: dict[str, dict | None]) -> list[str]:
    """'key: run a has X, run b has Y' for every field in which the named runs differ."""
    named = {name: ident for name, ident in identities.items() if ident is not None}
    missing = sorted(set(identities) - set(named))
    differences = [f"{name} records no identity (made before test splits); rerun it" for name in missing]
    if len(named) < 2:
        return differences
    first_name, first = next(iter(named.items()))
    for name, ident in named.items():
        for key in sorted(set(first) | set(ident)):
            if first.get(key) != ident.get(key):
                differences.append(f"{key}: {first_name} has {first.get(key)!r}, {name} has {ident.get(key)!r}")
    return differences


def comparison_runs(folder: Path) -> dict[str, dict[int, Path]] | None:
    """{acquisition: {seed: experiment folder}} of a `zoobot compare` folder; None if it is not one."""
    path = Path(folder) / COMPARISON_FILE
    if not path.is_file():
        return None
    runs: dict[str, dict[int, Path]] = {}
    for run in json.loads(path.read_text())["runs"]:
        runs.setdefault(run["acquisition"], {})[int(run["seed"])] = Path(folder) / run["folder"]
    return runs
