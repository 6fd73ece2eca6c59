"""Reports on finished experiments: learning curves and their plots (savings: zoobot.savings)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from zoobot.loop.layout import INSTRUCTIONS_DIR, LEDGER, metrics_table

CURVE_COLUMNS = ["iteration", "n_labelled", "votes_used", "test_loss", "test_mae"]
EXPERIMENT_MARKERS = (INSTRUCTIONS_DIR, LEDGER, "iterations")  # what only an experiment folder holds


def learning_curve(experiment_dir: str | Path) -> pd.DataFrame:
    """One row per complete iteration: labels used and eval metrics (all numeric columns).

    Read from the iteration folders themselves, so it is right even if a run was killed
    before metrics.csv was refreshed. Raises FileNotFoundError (NotADirectoryError for a file)
    saying whether the folder is missing, holds no experiment, or has no complete iteration.
    """
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.exists():
        raise FileNotFoundError(f"experiment folder {experiment_dir} does not exist")
    expected = (
        f"expected an experiment folder made by `zoobot create-instructions` (with instructions/, "
        f"{LEDGER} or iterations/ in it)"
    )
    if not experiment_dir.is_dir():
        raise NotADirectoryError(f"{experiment_dir} is a file; {expected}")
    if not any((experiment_dir / name).exists() for name in EXPERIMENT_MARKERS):
        raise FileNotFoundError(f"{experiment_dir} holds no experiment; {expected}")
    table = metrics_table(experiment_dir)
    if table.empty:
        raise FileNotFoundError(f"{experiment_dir} has no complete iteration yet; run one with `zoobot run`")
    first = [c for c in CURVE_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def require_metric(curves: dict[str, pd.DataFrame], metric: str) -> None:
    """Raise KeyError naming the first learning curve that lacks ``metric``, and what it has."""
    for name, curve in curves.items():
        if metric not in curve.columns:
            raise KeyError(f"the {name} learning curve has no metric {metric!r}; it has {list(curve.columns)}")


def plot_learning_curves(curves: dict[str, pd.DataFrame], out_path: str | Path, metric: str = "test_loss") -> Path:
    """Save a PNG of metric against labelled galaxies, one line per named experiment.

    Creates the PNG's folder if needed.
    """
    require_metric(curves, metric)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        axis.plot(curve["n_labelled"], curve[metric], marker="o", label=name)
    axis.set_xlabel("labelled galaxies")
    axis.set_ylabel(metric.replace("_", " "))
    axis.legend()
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    return out_path
