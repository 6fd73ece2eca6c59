"""Label savings of active learning against a baseline, read across the whole learning curve.

DEFINITION (printed by `zoobot report` and `zoobot demo`): for each active point, the saving is
1 - (its labels) / (labels the baseline needed to reach the same loss on its best-so-far curve,
linearly interpolated), summarised by the median over the points whose loss the baseline also
reached; the loss gap is the baseline's best-so-far loss minus the active loss, averaged over
the label range both curves cover (positive: active is better).

Details:
- The baseline is read on its monotone envelope: the running minimum of the loss over
  increasing labels, the best it reached with at most n labels. The active run is read as
  measured, point by point. Both choices lean towards the baseline: a lucky dip in the active
  curve counts once, a lucky dip in the baseline counts from then on. A curve compared with
  itself scores 0 where it falls and below 0 where it rises again.
- An active loss better than the baseline's best (``n_below``) or worse than its first point
  (``n_above``) has no matching baseline label count; it is counted, never extrapolated.
- When both curves begin at the same label count with the same loss (the shared starting set,
  before any acquisition), that point says nothing about acquisition and is left out
  (``n_shared_start``).
- Paired seeds: each (active, baseline) pair gives a median saving; the estimate is their mean,
  with a bootstrap 90% interval over pairs (pairs resampled with replacement). With fewer than
  3 pairs there is no interval. When the interval includes zero the verdict is "no significant
  difference".
The label axis is a column of the learning curve: ``n_labelled`` (galaxies) or ``votes_used``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

DEFINITION = (
    "saving = 1 - (active labels) / (labels the baseline needed to reach the same loss on its "
    "best-so-far curve, linearly interpolated), median over the active points whose loss the baseline "
    "also reached; loss gap = baseline best-so-far loss minus active loss, averaged over the shared label "
    "range (positive: active is better)"
)
AXES = {"n_labelled": "galaxies", "votes_used": "votes"}
MIN_PAIRS_FOR_INTERVAL = 3
INTERVAL = 0.90


@dataclass(frozen=True)
class CurveSavings:
    """One (active, baseline) pair on one label axis."""

    ratios: tuple[float, ...]  # (matched point,) 1 - n_active / n_baseline
    loss_gap: float | None  # mean baseline-envelope loss minus active loss; None if no shared label range
    n_below: int  # active points better than the baseline's best
    n_above: int  # active points worse than the baseline's first point
    n_shared_start: int  # 0 or 1

    @property
    def median(self) -> float | None:
        return float(np.median(self.ratios)) if self.ratios else None


@dataclass(frozen=True)
class SavingsEstimate:
    """Savings over paired seeds on one label axis, with the verdict to print."""

    axis: str  # "n_labelled" or "votes_used"
    metric: str
    estimate: float | None  # mean over pairs of the per-pair median saving
    interval: tuple[float, float] | None  # bootstrap 90% interval of that mean
    interval_note: str  # why there is no interval ("" when there is one)
    loss_gap: float | None  # mean over pairs
    loss_gap_interval: tuple[float, float] | None
    n_pairs: int  # pairs with at least one matched point (the ones the estimate uses)
    n_pairs_unmatched: int  # pairs with none, left out of the estimate
    n_matched: int  # matched points over all pairs
    n_below: int
    n_above: int
    n_shared_start: int
    pairs: tuple[CurveSavings, ...]
    verdict: str

    @property
    def unit(self) -> str:
        return AXES.get(self.axis, self.axis)


def baseline_envelope(losses: np.ndarray) -> np.ndarray:
    """Running minimum: the best loss reached with at most this many labels. (point,) -> (point,)"""
    return np.minimum.accumulate(losses)


def labels_to_reach(loss: float, labels: np.ndarray, envelope: np.ndarray) -> float | None:
    """Labels at which the piecewise-linear ``envelope`` first reaches ``loss``; None outside its range."""
    if not envelope[-1] <= loss <= envelope[0]:
        return None
    j = int(np.argmax(envelope <= loss))  # first point at or below the loss
    if j == 0:
        return float(labels[0])
    before, after = envelope[j - 1], envelope[j]  # before > loss >= after
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
        curves[name] = labels, loss
    (a_labels, a_loss), (b_labels, b_loss) = curves["active"], curves["baseline"]
    envelope = baseline_envelope(b_loss)
    shared_start = a_labels[0] == b_labels[0] and np.isclose(a_loss[0], b_loss[0], rtol=1e-9, atol=0)
    ratios, n_below, n_above = [], 0, 0
    for labels, loss in list(zip(a_labels, a_loss))[int(shared_start):]:
        needed = labels_to_reach(loss, b_labels, envelope)
        if needed is not None:
            ratios.append(float(1.0 - labels / needed))
        elif loss < envelope[-1]:
            n_below += 1
        else:
            n_above += 1
    low, high = max(a_labels[0], b_labels[0]), min(a_labels[-1], b_labels[-1])
    gap = float(mean_over(b_labels, envelope, low, high) - mean_over(a_labels, a_loss, low, high)) if high > low else None
    return CurveSavings(tuple(ratios), gap, n_below, n_above, int(shared_start))


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


def paired_savings(
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    metric: str = "test_loss",
    axis: str = "n_labelled",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> SavingsEstimate:
    """Savings of active learning over (active, baseline) learning curves that share seeds.

    ``axis`` is the label column ("n_labelled" for galaxies, "votes_used" for votes); ``metric``
    a lower-is-better column. The interval resamples the pairs ``n_resamples`` times with a
    fixed ``seed``, so the same curves always give the same interval.
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
    medians = np.array([r.median for r in results if r.median is not None])  # (usable pair,)
    gaps = np.array([np.nan if r.loss_gap is None else r.loss_gap for r in results if r.median is not None])
    counts = dict(
        n_pairs=len(medians), n_pairs_unmatched=len(results) - len(medians),
        n_matched=sum(len(r.ratios) for r in results), n_below=sum(r.n_below for r in results),
        n_above=sum(r.n_above for r in results), n_shared_start=sum(r.n_shared_start for r in results),
    )
    interval = gap_interval = None
    if len(medians) >= MIN_PAIRS_FOR_INTERVAL:
        note = ""
        picks = np.random.default_rng(seed).integers(0, len(medians), size=(n_resamples, len(medians)))
        tails = [50 * (1 - INTERVAL), 50 * (1 + INTERVAL)]
        interval = tuple(float(v) for v in np.percentile(medians[picks].mean(axis=1), tails))
        if not np.isnan(gaps).any():
            gap_interval = tuple(float(v) for v in np.percentile(gaps[picks].mean(axis=1), tails))
    elif len(medians) == 1 and len(results) == 1:
        note = "one seed: no interval"
    else:
        seeds = "paired seed" if len(medians) == 1 else "paired seeds"
        note = f"{len(medians)} usable {seeds}: no interval (needs at least {MIN_PAIRS_FOR_INTERVAL})"
    estimate = float(medians.mean()) if len(medians) else None
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
