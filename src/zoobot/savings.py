"""Label savings of active learning against a baseline, read across the whole learning curve.

DEFINITION (printed by `zoobot report` and `zoobot demo`): both learning curves are first fitted
by the closest non-increasing curve (least squares); for each point of one curve, r = log(labels
the other curve needed to reach the same loss, linearly interpolated / its own labels). A pair's
saving is 1 - exp(-R), with R half the difference of the two curves' median r (active against
baseline, minus baseline against active); over paired seeds, R is averaged and given a Student-t
90% interval; the loss gap is the baseline's fitted loss minus the active's, averaged over the
label range both curves cover (positive: active is better).

Why this form (measured on simulated pairs of identical arms, 3 seeds, test-loss noise 0.01-0.03,
learning curves like GZ1's; docs/gz1_active_learning.md, "The estimator under the null"):
- Reading the baseline on its best-so-far curve and the active run point by point, as the first
  version did, read noise as a loss for active learning: identical arms came out at -6% (noise
  0.01) to -20% (noise 0.02) on average. Fitting both curves the same way and averaging the two
  directions makes the estimate antisymmetric (swapping the arms flips its sign), so identical
  arms average 0, and log ratios do not favour either direction (1 - n_a / n_b does).
- A percentile bootstrap over 3 pairs called identical arms different in 43-68% of simulated
  triples at the 90% level; the Student-t interval over pairs did so in 9-11%.
- An active point better than the baseline's best fitted loss, or worse than its first, has no
  matching label count; it is counted (``n_below``, ``n_above``), never extrapolated. The same
  holds the other way round.
- When both curves begin at the same label count with the same loss (the shared starting set,
  before any acquisition), that point says nothing about acquisition and is left out
  (``n_shared_start``).
- With fewer than 3 pairs there is no interval. When the interval includes zero the verdict is
  "no significant difference".
The label axis is a column of the learning curve: ``n_labelled`` (galaxies) or ``votes_used``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

DEFINITION = (
    "saving = 1 - exp(-R): both curves fitted by the closest non-increasing curve; R = half the "
    "difference between the median log(labels the baseline needed for the active loss / active labels) "
    "and the same read the other way round; mean R over paired seeds with a Student-t 90% interval; "
    "loss gap = baseline fitted loss minus active fitted loss over the shared label range (positive: "
    "active is better)"
)
AXES = {"n_labelled": "galaxies", "votes_used": "votes"}
MIN_PAIRS_FOR_INTERVAL = 3
INTERVAL = 0.90


@dataclass(frozen=True)
class CurveSavings:
    """One (active, baseline) pair on one label axis."""

    ratios: tuple[float, ...]  # (matched active point,) 1 - n_active / n_baseline, on the fitted curves
    reverse_ratios: tuple[float, ...]  # (matched baseline point,) 1 - n_baseline / n_active
    log_ratio: float | None  # R: (median forward r - median reverse r) / 2; None without matched points
    loss_gap: float | None  # mean baseline-fit loss minus active-fit loss; None if no shared label range
    n_below: int  # active points better than the baseline's best fitted loss
    n_above: int  # active points worse than the baseline's first fitted loss
    n_shared_start: int  # 0 or 1

    @property
    def saving(self) -> float | None:
        return None if self.log_ratio is None else float(1.0 - np.exp(-self.log_ratio))


@dataclass(frozen=True)
class SavingsEstimate:
    """Savings over paired seeds on one label axis, with the verdict to print."""

    axis: str  # "n_labelled" or "votes_used"
    metric: str
    estimate: float | None  # 1 - exp(-mean R over pairs)
    interval: tuple[float, float] | None  # Student-t 90% interval of the mean R, as savings
    interval_note: str  # why there is no interval ("" when there is one)
    loss_gap: float | None  # mean over pairs
    loss_gap_interval: tuple[float, float] | None
    n_pairs: int  # pairs with at least one matched point (the ones the estimate uses)
    n_pairs_unmatched: int  # pairs with none, left out of the estimate
    n_matched: int  # matched points of both curves (read against the other) over all pairs
    n_below: int
    n_above: int
    n_shared_start: int
    pairs: tuple[CurveSavings, ...]
    verdict: str

    @property
    def unit(self) -> str:
        return AXES.get(self.axis, self.axis)


def monotone_fit(losses: np.ndarray) -> np.ndarray:
    """The closest non-increasing curve in least squares (pool adjacent violators). (point,) -> (point,)"""
    values: list[float] = []  # block means
    weights: list[int] = []
    for loss in np.asarray(losses, dtype=float):
        values.append(float(loss))
        weights.append(1)
        while len(values) > 1 and values[-2] < values[-1]:  # a rise: pool the two blocks
            value, weight = values.pop(), weights.pop()
            values[-1] = (values[-1] * weights[-1] + value * weight) / (weights[-1] + weight)
            weights[-1] += weight
    return np.repeat(values, weights)


def labels_to_reach(loss: float, labels: np.ndarray, fitted: np.ndarray) -> float | None:
    """Labels at which the piecewise-linear non-increasing ``fitted`` curve first reaches ``loss``;
    None outside its range."""
    if not fitted[-1] <= loss <= fitted[0]:
        return None
    j = int(np.argmax(fitted <= loss))  # first point at or below the loss
    if j == 0:
        return float(labels[0])
    before, after = fitted[j - 1], fitted[j]  # before > loss >= after
    return float(labels[j - 1] + (labels[j] - labels[j - 1]) * (before - loss) / (before - after))


def mean_over(labels: np.ndarray, values: np.ndarray, low: float, high: float) -> float:
    """Mean of the piecewise-linear curve over [low, high] (repeated label counts allowed)."""
    area = 0.0
    for k in range(len(labels) - 1):
        a, b = max(labels[k], low), min(labels[k + 1], high)
        if b <= a:
            continue
        slope = (values[k + 1] - values[k]) / (labels[k + 1] - labels[k])
        value_a, value_b = values[k] + slope * (a - labels[k]), values[k] + slope * (b - labels[k])
        area += (b - a) * (value_a + value_b) / 2
    return area / (high - low)


def _read_against(labels, fitted, other_labels, other_fitted, skip_first: bool) -> tuple[list[float], int, int]:
    """log(labels the other curve needed / own labels) per point; and the points below / above its range."""
    logs, below, above = [], 0, 0
    for n, loss in list(zip(labels, fitted))[int(skip_first):]:
        needed = labels_to_reach(loss, other_labels, other_fitted)
        if needed is not None:
            logs.append(float(np.log(needed / n)))
        elif loss < other_fitted[-1]:
            below += 1
        else:
            above += 1
    return logs, below, above


def curve_savings(
    active_labels: Sequence[float], active_loss: Sequence[float],
    baseline_labels: Sequence[float], baseline_loss: Sequence[float],
) -> CurveSavings:
    """Savings at matched loss of one active curve against one baseline (lower loss is better).

    Labels must be positive and never decrease along a curve; losses must be finite.
    """
    curves = {}
    for name, labels, loss in (("active", active_labels, active_loss), ("baseline", baseline_labels, baseline_loss)):
        labels, loss = np.asarray(labels, dtype=float), np.asarray(loss, dtype=float)  # (point,)
        check_curve(name, labels, loss)
        curves[name] = labels, monotone_fit(loss)
    (a_labels, a_fit), (b_labels, b_fit) = curves["active"], curves["baseline"]
    shared_start = bool(a_labels[0] == b_labels[0] and np.isclose(a_fit[0], b_fit[0], rtol=1e-9, atol=0))
    forward, n_below, n_above = _read_against(a_labels, a_fit, b_labels, b_fit, shared_start)
    reverse, _, _ = _read_against(b_labels, b_fit, a_labels, a_fit, shared_start)
    if forward and reverse:
        log_ratio = (float(np.median(forward)) - float(np.median(reverse))) / 2
    elif forward or reverse:
        log_ratio = float(np.median(forward)) if forward else -float(np.median(reverse))
    else:
        log_ratio = None
    low, high = max(a_labels[0], b_labels[0]), min(a_labels[-1], b_labels[-1])
    gap = float(mean_over(b_labels, b_fit, low, high) - mean_over(a_labels, a_fit, low, high)) if high > low else None
    ratios = tuple(float(1.0 - np.exp(-r)) for r in forward)
    reverse_ratios = tuple(float(1.0 - np.exp(-r)) for r in reverse)
    return CurveSavings(ratios, reverse_ratios, log_ratio, gap, n_below, n_above, int(shared_start))


def check_curve(name: str, labels: np.ndarray, loss: np.ndarray) -> None:
    """Raise ValueError saying which points of the ``name`` curve are unusable."""
    if len(labels) == 0:
        raise ValueError(f"the {name} learning curve has no points")
    bad = np.flatnonzero(~np.isfinite(labels) | ~np.isfinite(loss))
    if len(bad):
        raise ValueError(f"the {name} learning curve has missing or infinite values at points {bad.tolist()}")
    if labels[0] <= 0:
        raise ValueError(f"the {name} learning curve starts at {labels[0]:g} labels; expected a positive count")
    falling = np.flatnonzero(np.diff(labels) < 0)
    if len(falling):
        k = int(falling[0])
        raise ValueError(
            f"the {name} learning curve's labels fall from {labels[k]:g} to {labels[k + 1]:g} at point {k + 1}; "
            "expected them in the order the iterations ran"
        )


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    """Student-t ``INTERVAL`` interval of the mean of (pair,) values."""
    mean, spread = float(values.mean()), float(values.std(ddof=1)) / np.sqrt(len(values))
    half = float(stats.t.ppf((1 + INTERVAL) / 2, len(values) - 1)) * spread
    return mean - half, mean + half


def paired_savings(
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]], metric: str = "test_loss", axis: str = "n_labelled"
) -> SavingsEstimate:
    """Savings of active learning over (active, baseline) learning curves that share seeds.

    ``axis`` is the label column ("n_labelled" for galaxies, "votes_used" for votes); ``metric``
    a lower-is-better column.
    """
    if not pairs:
        raise ValueError("expected at least one (active, baseline) pair of learning curves, got none")
    results = []
    for n, (active, baseline) in enumerate(pairs, start=1):
        for role, curve in (("active", active), ("baseline", baseline)):
            missing = [c for c in (axis, metric) if c not in curve.columns]
            if missing:
                raise KeyError(f"the {role} learning curve of pair {n} has no column {missing}; it has {list(curve.columns)}")
        results.append(curve_savings(active[axis], active[metric], baseline[axis], baseline[metric]))
    used = [r for r in results if r.log_ratio is not None]
    logs = np.array([r.log_ratio for r in used])  # (usable pair,)
    gaps = np.array([np.nan if r.loss_gap is None else r.loss_gap for r in used])
    counts = dict(
        n_pairs=len(used), n_pairs_unmatched=len(results) - len(used),
        n_matched=sum(len(r.ratios) + len(r.reverse_ratios) for r in results), n_below=sum(r.n_below for r in results),
        n_above=sum(r.n_above for r in results), n_shared_start=sum(r.n_shared_start for r in results),
    )
    interval = gap_interval = None
    if len(used) >= MIN_PAIRS_FOR_INTERVAL:
        note = ""
        interval = tuple(float(1.0 - np.exp(-v)) for v in _t_interval(logs))
        if not np.isnan(gaps).any():
            gap_interval = _t_interval(gaps)
    elif len(used) == 1 and len(results) == 1:
        note = "one seed: no interval"
    else:
        seeds = "paired seed" if len(used) == 1 else "paired seeds"
        note = f"{len(used)} usable {seeds}: no interval (needs at least {MIN_PAIRS_FOR_INTERVAL})"
    estimate = float(1.0 - np.exp(-logs.mean())) if len(used) else None
    gap = float(np.nanmean(gaps)) if len(gaps) and not np.isnan(gaps).all() else None
    verdict = describe(estimate, interval, note, axis, counts)
    return SavingsEstimate(axis, metric, estimate, interval, note, gap, gap_interval, **counts,
                           pairs=tuple(results), verdict=verdict)


def describe(estimate: float | None, interval, note: str, axis: str, counts: dict) -> str:
    """The verdict in one line: the saving in words, its interval or why there is none, and the counts."""
    unit = AXES.get(axis, axis)
    outside = (
        f"active points outside the baseline's range: {counts['n_below']} better than its best, "
        f"{counts['n_above']} worse than its first point"
    )
    if estimate is None:
        return f"no matched points: no saving can be read ({outside})"
    points = f"{counts['n_matched']} matched points; {outside}"
    if counts["n_pairs_unmatched"]:
        points += f"; {counts['n_pairs_unmatched']} pairs with no matched point left out"
    direction = "fewer" if estimate >= 0 else "more"
    if interval is None:
        return f"{note}; saving {estimate:+.0%} (active needed {abs(estimate):.0%} {direction} {unit}) at {points}"
    span = f"mean saving {estimate:+.0%}, {INTERVAL:.0%} interval {interval[0]:+.0%} to {interval[1]:+.0%} over {counts['n_pairs']} paired seeds"
    if interval[0] <= 0 <= interval[1]:
        return f"no significant difference: {span}; {points}"
    return f"active needed {abs(estimate):.0%} {direction} {unit}: {span}; {points}"
