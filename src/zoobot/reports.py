"""Reports on finished experiments: learning curves and label savings against a baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


@dataclass
class LabelSavings:
    """How many labels active learning needed to match the baseline's final metric."""

    metric: str
    target: float  # the baseline's final value of the metric
    baseline_labels: int
    active_labels: float | None  # interpolated; None if active learning never reached the target

    @property
    def fraction_saved(self) -> float | None:
        if self.active_labels is None:
            return None
        return 1.0 - self.active_labels / self.baseline_labels


def require_metric(curves: dict[str, pd.DataFrame], metric: str) -> None:
    """Raise KeyError naming the first learning curve that lacks ``metric``, and what it has."""
    for name, curve in curves.items():
        if metric not in curve.columns:
            raise KeyError(f"the {name} learning curve has no metric {metric!r}; it has {list(curve.columns)}")


def label_savings(active: pd.DataFrame, baseline: pd.DataFrame, metric: str = "test_loss") -> LabelSavings:
    """Labels the active run needed to reach the baseline's final ``metric`` (lower is better).

    The active curve is interpolated linearly in n_labelled between iterations.
    """
    require_metric({"active": active, "baseline": baseline}, metric)
    target = float(baseline[metric].iloc[-1])
    baseline_labels = int(baseline["n_labelled"].iloc[-1])
    labels = active["n_labelled"].to_numpy(dtype=float)
    values = active[metric].to_numpy(dtype=float)
    reached = np.flatnonzero(values <= target)
    if not len(reached):
        return LabelSavings(metric, target, baseline_labels, None)
    first = reached[0]
    if first == 0:
        return LabelSavings(metric, target, baseline_labels, float(labels[0]))
    x0, x1, y0, y1 = labels[first - 1], labels[first], values[first - 1], values[first]
    needed = x0 + (x1 - x0) * (y0 - target) / (y0 - y1)
    return LabelSavings(metric, target, baseline_labels, float(needed))


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
