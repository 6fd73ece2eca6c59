"""Recalibration of the posterior predictive intervals: fitted on one labelled split, judged on another.

A model's 90% predictive intervals may hold more or fewer than 90% of the real votes. Per
question, the fit finds on a calibration split (val) the smallest interval level L' (on the grid
``GRID``) whose intervals held at least L of the observed counts there, for each nominal level
L; the intervals drawn at L' are the recalibrated L intervals. Central intervals are nested, so
observed coverage never falls as L' grows and the smallest such L' is well defined. This is the
quantile recalibration of Kuleshov et al. (2018) read at the levels asked for. Judge it only on
galaxies it was not fitted on (:func:`check_disjoint`): on its own split it fits by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoobot.ids import describe_ids
from zoobot.schema import Schema
from zoobot.uncertainty import LEVELS, check_levels, coverage

GRID = (*np.round(np.arange(0.01, 0.99, 0.01), 2).tolist(), *np.round(np.arange(0.99, 0.9995, 0.001), 3).tolist())  # levels tried


def fit_levels(predictions, counts, schema: Schema, levels: Sequence[float] = LEVELS, grid: Sequence[float] = GRID) -> dict:
    """Per question, the interval level to draw for each nominal level, from (galaxy, sample, output)
    predictions and (galaxy, answer) observed counts of the calibration split.

    Returns ``{"levels": [...], "grid": [...], "questions": {name: {"used_levels": [...],
    "reached": [...], "n_galaxies": n}}}``. ``reached`` is False where even the grid's widest
    interval held less than the level (``used_levels`` is then the widest); a question without
    votes on the calibration split keeps the nominal levels.
    """
    levels, grid = check_levels(levels), check_levels(sorted(grid))
    report = coverage(predictions, counts, schema, grid, max_error=0)
    questions = {}
    for name, part in report["questions"].items():
        if not part["n_galaxies"]:
            questions[name] = {"used_levels": list(levels), "reached": [False] * len(levels), "n_galaxies": 0}
            continue
        observed = np.array([row["observed"] for row in part["intervals"]])  # (grid,), non-decreasing
        first = np.searchsorted(observed, np.array(levels) - 1e-12, side="left")  # first grid level holding L
        questions[name] = {
            "used_levels": [grid[min(i, len(grid) - 1)] for i in first],
            "reached": [bool(i < len(grid)) for i in first],
            "n_galaxies": part["n_galaxies"],
        }
    return {"levels": list(levels), "grid": list(grid), "questions": questions}


def used_levels(fit: dict) -> dict[str, list[float]]:
    """What :func:`zoobot.uncertainty.coverage` takes as ``used_levels``."""
    return {name: part["used_levels"] for name, part in fit["questions"].items()}


def check_disjoint(fit_ids: Sequence[str], judged_ids: Sequence[str]) -> None:
    """ValueError naming the galaxies in both the calibration split and the judged one."""
    shared = sorted(set(map(str, fit_ids)) & set(map(str, judged_ids)))
    if shared:
        raise ValueError(
            f"{len(shared)} galaxies are in both the recalibration split and the predictions it is judged on: "
            f"{describe_ids(shared)}; fit on val predictions and judge on test predictions"
        )
