"""One self-contained HTML page about finished active-learning runs, and its numbers as JSON.

The page opens offline: figures are embedded PNGs (base64), styles are inline, there is no
script. Sections:

1. learning curves: test loss and test vote-fraction MAE against labelled galaxies and votes;
   one colour per acquisition, each seed thin, the mean over seeds bold with a min-max band;
2. label savings at matched quality (``zoobot.savings.paired_savings``) per paired seed, with
   the mean, its 90% interval, the verdict and ``zoobot.savings.DEFINITION``;
3. the galaxies acquired in each iteration (shard images) for the first seed of each acquisition;
4. what was acquired over iterations: histograms of the acquired galaxies' predicted fraction of
   the schema's first answer, and optionally of a column of the pool catalog;
5. coverage of the posterior predictive intervals on the test split at the last iteration of
   each run (``zoobot.uncertainty.coverage``, each galaxy's own vote counts), with a reliability plot.

The caller (``zoobot report``) reads the learning curves and checks that the runs can be
compared; this module reads the rest from the experiment folders and their shards.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from zoobot import __version__
from zoobot.catalog import read_table
from zoobot.files import atomic_path
from zoobot.loop.instructions import load_instructions
from zoobot.loop.layout import INSTRUCTIONS_DIR, TEST_PREDICTIONS, completed_iterations, iteration_dir
from zoobot.savings import AXES, DEFINITION, INTERVAL, SavingsEstimate, paired_savings
from zoobot.schema import Schema, get_schema
from zoobot.shards import ShardReader
from zoobot.uncertainty import INTERVAL_DEFINITION, LEVELS, coverage

GRID_GALAXIES = 12  # acquired galaxies shown per iteration in the grid (highest scores first)
THUMBNAIL_PX = 72  # displayed size of a grid image
HISTOGRAM_BINS = 20
PANELS_PER_ROW = 5  # iterations per row of the histogram figures
HEADLINE_LEVEL = 0.9
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]  # Okabe-Ito, colour-blind safe
BASELINE_COLOUR = "#555555"  # random / baseline: always grey
BAND = "min to max over seeds"
CURVE_AXES = {"n_labelled": "labelled galaxies", "votes_used": "volunteer votes used"}
CURVE_METRICS = {"test_loss": "test loss (predictive NLL per galaxy, nats)", "test_mae": "test vote-fraction MAE"}


class ReportError(ValueError):
    """An experiment folder lacks what the page needs, or an option does not fit the experiment."""


@dataclass(frozen=True)
class Run:
    """One experiment, as `zoobot report` names and reads it."""

    name: str  # as the printed tables name it, e.g. "bald (bald_seed42)"
    acquisition: str  # colour and group: "bald", "random", or "active" / "baseline" for folders given one by one
    folder: Path
    curve: pd.DataFrame  # one row per complete iteration (zoobot.reports.learning_curve)


@dataclass(frozen=True)
class Comparison:
    """Active runs against baseline runs, paired by seed."""

    active: str
    baseline: str
    pairs: tuple[tuple[Run, Run], ...]


# ---------------------------------------------------------------- numbers


def savings_by_axis(pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]], metric: str) -> dict[str, SavingsEstimate | str]:
    """``paired_savings`` on each label axis (``savings.AXES``), or why there is none: the curves
    that lack the axis. Raises ValueError for unusable curves, KeyError for a missing metric."""
    results: dict[str, SavingsEstimate | str] = {}
    for axis in AXES:
        lacking = [f"{role} {n}" for n, pair in enumerate(pairs, start=1)
                   for role, curve in zip(("active", "baseline"), pair) if axis not in curve.columns]
        if lacking:
            results[axis] = f"not recorded ({axis} missing from {', '.join(lacking)})"
        else:
            results[axis] = paired_savings(pairs, metric=metric, axis=axis)
    return results


def curve_summary(runs: Sequence[Run]) -> list[dict]:
    """Per iteration that every run completed: seeds, the mean label counts, and the mean, min and
    max over runs of each metric (what the bold line and band draw)."""
    shared = set.intersection(*(set(run.curve["iteration"].astype(int)) for run in runs))
    rows = []
    for iteration in sorted(shared):
        points = [run.curve[run.curve["iteration"] == iteration].iloc[0] for run in runs]
        row: dict[str, Any] = {"iteration": iteration, "n_seeds": len(points)}
        for column in ("n_labelled", "votes_used"):
            values = [p.get(column, np.nan) for p in points]
            row[column] = float(np.mean(values)) if np.isfinite(values).all() else None
        for column in CURVE_METRICS:
            values = np.array([p.get(column, np.nan) for p in points], dtype=float)
            ok = np.isfinite(values).all()
            row[column] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
                           "sd": float(values.std(ddof=1)) if len(values) > 1 else None} if ok else None
        rows.append(row)
    return rows


def run_seed(run: Run) -> int:
    return int(_plan(run).instructions.seed)


def _plan(run: Run):
    try:
        return load_instructions(run.folder / INSTRUCTIONS_DIR)
    except FileNotFoundError as error:
        raise ReportError(f"{run.folder}: {error}; the HTML report reads each run's instructions") from None


class _Shards:
    """Open each shard folder once."""

    def __init__(self) -> None:
        self.readers: dict[str, ShardReader] = {}

    def __call__(self, run: Run) -> ShardReader:
        shard_dir = _plan(run).instructions.shard_dir
        if shard_dir not in self.readers:
            if not Path(shard_dir).is_dir():
                raise ReportError(
                    f"{run.folder}: its shard folder {shard_dir} (instructions.json) does not exist; the HTML report "
                    "needs it for the galaxy images and the test votes"
                )
            self.readers[shard_dir] = ShardReader(shard_dir)
        return self.readers[shard_dir]


def read_acquired(run: Run, iteration: int) -> pd.DataFrame:
    """The iteration's acquired.csv: id_str, and where recorded score and {answer}_fraction."""
    path = iteration_dir(run.folder, iteration) / "acquired.csv"
    if not path.is_file():
        raise ReportError(f"{path} is missing; a complete iteration records the galaxies it acquired there")
    return pd.read_csv(path, dtype={"id_str": str})


def acquired_rows(run: Run, schema: Schema, reader: ShardReader, n_shown: int = GRID_GALAXIES) -> list[dict]:
    """Per complete iteration: how many were acquired and the ``n_shown`` with the highest scores
    (file order when scores were not recorded), with their images (C, H, W) uint8."""
    rows = []
    fraction_columns = [f"{a}_fraction" for a in schema.answer_columns]
    for iteration in completed_iterations(run.folder):
        table = read_acquired(run, iteration)
        has_scores = "score" in table.columns
        shown = table.sort_values("score", ascending=False, kind="stable") if has_scores else table
        shown = shown.head(n_shown)
        try:
            images = reader.images(reader.positions(shown["id_str"].to_numpy()))
        except KeyError as error:
            raise ReportError(f"{run.folder} iteration {iteration}: {error.args[0]}") from None
        galaxies = []
        for (_, galaxy), image in zip(shown.iterrows(), images):
            fractions = {c[: -len("_fraction")]: float(galaxy[c]) for c in fraction_columns if c in table.columns}
            galaxies.append({"id_str": galaxy["id_str"], "score": float(galaxy["score"]) if has_scores else None,
                             "fractions": fractions, "image": image})
        rows.append({"iteration": iteration, "n_acquired": len(table), "has_scores": has_scores,
                     "has_fractions": all(c in table.columns for c in fraction_columns),
                     "mean_score": float(table["score"].mean()) if has_scores and len(table) else None,
                     "galaxies": galaxies})
    return rows


def pool_catalog_path(run: Run) -> Path:
    """The experiment's pool catalog: simulation_context/unlabelled_catalog.parquet for a simulation."""
    catalog_dir = Path(_plan(run).instructions.catalog_dir)
    simulated = catalog_dir / "simulation_context" / "unlabelled_catalog.parquet"
    return simulated if simulated.is_file() else catalog_dir / "unlabelled_catalog.parquet"


def pool_column(run: Run, column: str) -> pd.Series:
    """``column`` of the pool catalog, indexed by id_str; ReportError listing the columns if absent."""
    path = pool_catalog_path(run)
    table = read_table(path)
    if column not in table.columns:
        raise ReportError(f"--column {column!r} is not in the pool catalog {path}; it has {list(table.columns)}")
    values = table[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ReportError(f"--column {column!r} of {path}: expected numbers to histogram, got dtype {values.dtype}")
    return pd.Series(values.to_numpy(dtype=float), index=table["id_str"].astype(str), name=column)


def acquired_values(runs: Sequence[Run], schema: Schema, column: pd.Series | None) -> dict:
    """Per acquisition and iteration, the acquired galaxies' predicted fraction of the first answer
    (runs that recorded it) and, with ``column``, the column's values; over all seeds."""
    fraction = f"{schema.answer_columns[0]}_fraction"
    out: dict[str, dict[int, dict]] = {}
    for run in runs:
        for iteration in completed_iterations(run.folder):
            table = read_acquired(run, iteration)
            entry = out.setdefault(run.acquisition, {}).setdefault(
                iteration, {"fraction": [], "fraction_runs": 0, "column": [], "runs": 0, "missing_column": 0,
                            "runs_without_fraction": []})
            entry["runs"] += 1
            if fraction in table.columns:
                entry["fraction"].extend(table[fraction].astype(float).tolist())
                entry["fraction_runs"] += 1
            else:
                entry["runs_without_fraction"].append(run.name)
            if column is not None:
                absent = table.loc[~table["id_str"].isin(column.index), "id_str"]
                if len(absent):
                    raise ReportError(
                        f"{run.folder} iteration {iteration} acquired {len(absent)} galaxies that the pool catalog "
                        f"lacks (e.g. {absent.iloc[0]}); is the catalog folder in instructions.json this experiment's?"
                    )
                values = column.loc[table["id_str"]].to_numpy()
                entry["missing_column"] += int(np.isnan(values).sum())
                entry["column"].extend(values[np.isfinite(values)].tolist())
    return out


def run_coverage(run: Run, schema: Schema, reader: ShardReader) -> dict | None:
    """Coverage at ``uncertainty.LEVELS`` of the last iteration's test predictions against the test
    galaxies' own votes; None when that iteration kept no test predictions."""
    last = completed_iterations(run.folder)[-1]
    path = iteration_dir(run.folder, last) / TEST_PREDICTIONS
    if not path.is_file():
        return None
    predictions = np.load(path, mmap_mode="r")  # (galaxy, sample, output), in the shards' test order
    positions = reader.split_positions("test")
    if predictions.ndim != 3 or len(predictions) != len(positions):
        raise ReportError(
            f"{path}: expected (galaxy, sample, output) predictions for the {len(positions)} test galaxies of "
            f"{reader.shard_dir}, got shape {predictions.shape}; were these runs made on other shards?"
        )
    if reader.vote_columns != schema.answer_columns:
        raise ReportError(
            f"{reader.shard_dir} holds votes {reader.vote_columns}; the runs' schema {schema.name!r} expects "
            f"{schema.answer_columns}"
        )
    return {"iteration": last, **coverage(predictions, reader.votes(positions), schema, levels=LEVELS)}


# ---------------------------------------------------------------- figures


def colours(acquisitions: Sequence[str]) -> dict[str, str]:
    """One colour per acquisition, in order of appearance; random and baseline grey."""
    others = [a for a in dict.fromkeys(acquisitions) if a not in ("random", "baseline")]
    found = {a: PALETTE[n % len(PALETTE)] for n, a in enumerate(others)}
    return {a: found.get(a, BASELINE_COLOUR) for a in acquisitions}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(figure) -> str:
    """The figure as an <img> at its natural size (drawn at twice the resolution, for sharp text)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=200)
    width = int(figure.get_figwidth() * 100)
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" style="width:{width}px" src="data:image/png;base64,{data}" alt="figure">'


def _by_acquisition(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.acquisition, []).append(run)
    return groups


def learning_curves_figure(runs: Sequence[Run]) -> str:
    """2 x 2 panels: (test loss, MAE) against (galaxies, votes); seeds thin, mean bold, min-max band."""
    plt = _pyplot()
    colour = colours([run.acquisition for run in runs])
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.4))
    for row, (metric, metric_label) in enumerate(CURVE_METRICS.items()):
        for col, (axis, axis_label) in enumerate(CURVE_AXES.items()):
            panel = axes[row, col]
            drawn = False
            for acquisition, group in _by_acquisition(runs).items():
                usable = [r for r in group if {axis, metric} <= set(r.curve.columns)]
                for run in usable:
                    panel.plot(run.curve[axis], run.curve[metric], color=colour[acquisition], lw=0.8, alpha=0.45,
                               marker=".", ms=3)
                    drawn = True
                if len(usable) > 1:
                    summary = [s for s in curve_summary(usable) if s[axis] is not None and s[metric] is not None]
                    x = [s[axis] for s in summary]
                    panel.fill_between(x, [s[metric]["min"] for s in summary], [s[metric]["max"] for s in summary],
                                       color=colour[acquisition], alpha=0.15, lw=0)
                    panel.plot(x, [s[metric]["mean"] for s in summary], color=colour[acquisition], lw=2.4,
                               label=f"{acquisition}: mean of {len(usable)} seeds")
                elif usable:
                    panel.lines[-1].set(lw=2.4, alpha=1.0, label=f"{acquisition}: 1 run")
            if not drawn:
                panel.text(0.5, 0.5, f"{axis} or {metric} not recorded", ha="center", va="center",
                           transform=panel.transAxes, color="0.4")
            panel.set(xlabel=axis_label, ylabel=metric_label, title=f"{metric_label.split(' (')[0]} vs {axis_label}")
            panel.grid(alpha=0.3)
            if drawn:
                panel.legend(loc="upper right")
    figure.tight_layout()
    return _png(figure)


def savings_figure(estimates: list[tuple[Comparison, dict[str, SavingsEstimate | str]]]) -> str:
    """One panel per label axis: each pair's saving (dots), the mean and its 90% interval."""
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    n = len(estimates)
    figure, axes = plt.subplots(1, len(AXES), figsize=(11, 1.7 + 0.9 * n), squeeze=False)
    colour = colours([c.active for c, _ in estimates])
    seen: set[str] = set()

    def once(label: str) -> str | None:  # each legend entry once
        first = label not in seen
        seen.add(label)
        return label if first else None

    for col, (axis, unit) in enumerate(AXES.items()):
        panel = axes[0, col]
        panel.axvline(0, color="0.3", lw=1)
        for row, (comparison, results) in enumerate(estimates):
            y = n - 1 - row
            result = results[axis]
            if isinstance(result, str) or result.estimate is None:
                panel.text(0, y, "no matched points" if not isinstance(result, str) else "not recorded",
                           ha="center", va="center", color="0.4", fontsize=9)
                continue
            savings = [p.saving for p in result.pairs if p.saving is not None]
            jitter = np.linspace(-0.12, 0.12, len(savings)) if len(savings) > 1 else [0.0]
            panel.scatter(savings, y + np.asarray(jitter), s=22, color=colour[comparison.active], alpha=0.6,
                          label=once("one paired seed"), zorder=3)
            if result.interval is not None:
                low, high = result.interval
                panel.plot([low, high], [y, y], color="black", lw=2, zorder=2,
                           label=once(f"{INTERVAL:.0%} interval of the mean (Student t)"))
            panel.scatter([result.estimate], [y], marker="D", s=60, color="black", zorder=4,
                          label=once("mean over paired seeds"))
        panel.set_yticks(range(n), [f"{c.active}\nvs {c.baseline}" for c, _ in reversed(estimates)])
        panel.set_ylim(-0.6, n - 0.4)
        panel.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        panel.set(xlabel=f"{unit} saved at matched quality (> 0: active needed fewer)", title=f"saving in {unit}")
        panel.grid(axis="x", alpha=0.3)
        low, high = panel.get_xlim()
        panel.set_xlim(min(low, -0.05), max(high, 0.05))  # 0 always in view
    handles = [h for panel in axes[0] for h in panel.get_legend_handles_labels()[0]]
    labels = [t for panel in axes[0] for t in panel.get_legend_handles_labels()[1]]
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    figure.tight_layout(rect=(0, 0.1 if n == 1 else 0.06, 1, 1))
    return _png(figure)


def histogram_figure(values: dict, key: str, xlabel: str, bins: np.ndarray, pool: np.ndarray | None = None) -> str:
    """Small multiples, one panel per iteration: the acquired galaxies' ``key`` values per acquisition
    (step histograms, as fractions of that acquisition's acquired galaxies); the pool in grey."""
    plt = _pyplot()
    iterations = sorted({i for by_iteration in values.values() for i in by_iteration})
    n_cols = min(PANELS_PER_ROW, len(iterations))
    n_rows = math.ceil(len(iterations) / n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(2.25 * n_cols + 0.6, 2.2 * n_rows + 0.5), squeeze=False,
                                sharex=True, sharey=True)
    colour = colours(list(values))
    for k, iteration in enumerate(iterations):
        panel = axes[k // n_cols, k % n_cols]
        if pool is not None and len(pool):
            panel.hist(pool, bins=bins, weights=np.full(len(pool), 1 / len(pool)), color="0.85",
                       label="whole pool" if k == 0 else None)
        for acquisition, by_iteration in values.items():
            chosen = np.asarray(by_iteration.get(iteration, {}).get(key, []), dtype=float)
            if len(chosen):
                panel.hist(chosen, bins=bins, weights=np.full(len(chosen), 1 / len(chosen)), histtype="step", lw=1.8,
                           color=colour[acquisition], label=acquisition if k == 0 else None)
        panel.set_title(f"iteration {iteration}")
        if k % n_cols == 0:
            panel.set_ylabel("fraction of acquired")
        panel.xaxis.set_tick_params(labelbottom=True)
    for k in range(len(iterations), n_rows * n_cols):
        axes[k // n_cols, k % n_cols].set_visible(False)
    figure.legend(loc="upper center", ncol=len(values) + 1, frameon=False, bbox_to_anchor=(0.5, 1.0))
    figure.supxlabel(xlabel, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.9 if n_rows == 1 else 0.95))
    return _png(figure)


def coverage_figure(runs: Sequence[Run], reports: dict[str, dict]) -> str:
    """Two panels, one line per run, all questions pooled: reliability (observed against expected
    coverage of the predictive interval at each level) and the 2019 paper's +-w coverage."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    colour = colours([run.acquisition for run in runs])
    left.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="calibrated (observed = expected)")
    labelled: set[str] = set()
    for run in runs:
        report = reports.get(run.name)
        if report is None or not report["all"]["n_galaxies"]:
            continue
        rows, within = report["all"]["intervals"], report["all"]["within"]
        label = run.acquisition if run.acquisition not in labelled else None
        labelled.add(run.acquisition)
        left.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], color=colour[run.acquisition],
                  marker="o", ms=4, lw=1.2, alpha=0.8, label=label)
        if len(labelled) == 1 and label is not None:  # the levels, once
            for r in rows:
                left.annotate(f"{r['level']:.0%}", (r["predicted"], r["observed"]), textcoords="offset points",
                              xytext=(4, -10), fontsize=7, color="0.35")
        widths = [r["max_error"] for r in within]
        right.plot(widths, [r["predicted"] for r in within], color=colour[run.acquisition], ls="--", lw=1, alpha=0.8,
                   label=f"{run.acquisition}: expected" if label else None)
        right.plot(widths, [r["observed"] for r in within], color=colour[run.acquisition], marker="o", ms=3, lw=1.2,
                   alpha=0.8, label=f"{run.acquisition}: observed" if label else None)
    shown = [v for report in reports.values() for r in report["all"]["intervals"] for v in (r["predicted"], r["observed"])
             if v is not None]
    low = max(0.0, math.floor(min([0.4, *shown]) * 10) / 10)  # whole tenths, so every point is in view
    left.set(xlabel="expected coverage (predictive mass of the interval)", ylabel="observed coverage of test votes",
             xlim=(low, 1.01), ylim=(low, 1.01), title="reliability of the predictive intervals")
    left.set_aspect("equal")
    left.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize=8)
    right.set(xlabel="w (votes)", ylabel="P(|k − round(E[k])| ≤ w)", ylim=(0, 1.02),
              title="vote counts within ±w of the expected count")
    right.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def question_coverage_figure(runs: Sequence[Run], reports: dict[str, dict], schema: Schema) -> str:
    """The observed coverage of the headline-level interval for each question, one dot per run."""
    plt = _pyplot()
    figure, panel = plt.subplots(figsize=(8, 0.9 + 0.35 * schema.n_questions))
    colour = colours([run.acquisition for run in runs])
    index = LEVELS.index(HEADLINE_LEVEL)
    labelled: set[str] = set()
    for n_run, run in enumerate(runs):
        report = reports.get(run.name)
        if report is None:
            continue
        for q, name in enumerate(schema.question_names):
            part = report["questions"][name]
            if part["n_galaxies"]:
                label = run.acquisition if run.acquisition not in labelled else None
                labelled.add(run.acquisition)
                panel.scatter(part["intervals"][index]["observed"], q + (n_run - len(runs) / 2) * 0.04,
                              color=colour[run.acquisition], s=14, label=label)
    panel.axvline(HEADLINE_LEVEL, color="0.5", ls="--", lw=1)
    panel.set_yticks(range(schema.n_questions), schema.question_names)
    panel.invert_yaxis()
    panel.set(xlabel=f"observed coverage of the {HEADLINE_LEVEL:.0%} predictive interval (dashed: nominal)",
              title="each question, each run", xlim=(-0.02, 1.02))
    panel.grid(axis="x", alpha=0.3)
    panel.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _thumbnail(image: np.ndarray) -> str:
    """(C, H, W) uint8 -> a PNG data URI, shrunk to THUMBNAIL_PX if larger (small ones are enlarged by the page)."""
    from PIL import Image

    pixels = image[0] if image.shape[0] == 1 else np.transpose(image[:3], (1, 2, 0))
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if max(picture.size) > THUMBNAIL_PX:
        picture = picture.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------- page


def build_report(runs: Sequence[Run], comparisons: Sequence[Comparison], metric: str = "test_loss",
                 column: str | None = None, source: str = "") -> tuple[str, dict]:
    """The page (HTML text) and its numbers (a strict-JSON dict)."""
    if not runs:
        raise ReportError("expected at least one run to report, got none")
    runs = list(runs)
    schema = get_schema(_plan(runs[0]).instructions.schema)
    pool = pool_column(runs[0], column) if column is not None else None  # a bad column fails before any drawing
    seeds = {run.name: run_seed(run) for run in runs}
    data: dict[str, Any] = {
        "zoobot_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source, "metric": metric, "column": column, "schema": schema.name, "band": BAND,
        "runs": [{"name": r.name, "acquisition": r.acquisition, "seed": seeds[r.name], "folder": str(r.folder),
                  "curve": r.curve.to_dict(orient="records")} for r in runs],
        "notes": [],
    }
    shards = _Shards()
    sections = [
        _curves_section(runs, data),
        _savings_section(comparisons, metric, seeds, data),
        _grid_section(runs, schema, shards, seeds, data),
        _distributions_section(runs, schema, pool, data),
        _coverage_section(runs, schema, shards, seeds, data),
    ]
    return _page(runs, seeds, schema, source, sections), _plain(data)


def _curves_section(runs: list[Run], data: dict) -> str:
    data["curve_summary"] = {a: curve_summary(g) for a, g in _by_acquisition(runs).items()}
    return _section("curves", "Learning curves", [
        f"<p>Measured on the held-out test split after each iteration. Thin lines: single seeds; bold: the mean over "
        f"seeds at each iteration all of them completed; band: {BAND}.</p>",
        learning_curves_figure(runs), _summary_table(data["curve_summary"]),
    ])


def _savings_section(comparisons: Sequence[Comparison], metric: str, seeds: dict[str, int], data: dict) -> str:
    estimates = [(c, savings_by_axis([(a.curve, b.curve) for a, b in c.pairs], metric)) for c in comparisons]
    data["savings"] = [
        {"active": c.active, "baseline": c.baseline, "metric": metric, "definition": DEFINITION,
         "seeds": [seeds[a.name] for a, _ in c.pairs], "axes": {axis: _savings_json(r) for axis, r in results.items()}}
        for c, results in estimates
    ]
    if not estimates:
        return _section("savings", "Label savings", [
            "<p>No baseline to compare with: give random-acquisition runs (a <code>zoobot compare</code> folder "
            "with random, or <code>--baseline</code>).</p>"])
    return _section("savings", "Label savings", [
        f"<p>Labels that active learning saved at matched {html.escape(metric)}, per paired seed, in galaxies and "
        "in volunteer votes.</p>", savings_figure(estimates), _savings_table(estimates),
        f'<p class="definition"><b>Definition.</b> {html.escape(DEFINITION)}.</p>'])


def _grid_section(runs: list[Run], schema: Schema, shards: _Shards, seeds: dict[str, int], data: dict) -> str:
    grids, data["acquired"] = [], []
    for acquisition, group in _by_acquisition(runs).items():
        run = group[0]
        rows = acquired_rows(run, schema, shards(run))
        grids.append(_grid_html(run, rows, schema))
        iterations = [{k: v for k, v in row.items() if k != "galaxies"}
                      | {"shown": [{k: v for k, v in g.items() if k != "image"} for g in row["galaxies"]]} for row in rows]
        data["acquired"].append({"run": run.name, "acquisition": acquisition, "seed": seeds[run.name],
                                 "iterations": iterations})
    return _section("acquired", "Acquired galaxies", [
        f"<p>The first seed of each acquisition; one row per iteration, the {GRID_GALAXIES} acquired galaxies with "
        f"the highest acquisition scores (in file order where scores were not recorded). Under each image: its "
        f"acquisition score, then the predicted vote fractions of {html.escape(schema.question_names[0])} "
        f"({html.escape('/'.join(a.removeprefix(schema.question_names[0] + '_') for a in _first_question_answers(schema)))})."
        " Hover over an image for its id_str.</p>", *grids])


def _distributions_section(runs: list[Run], schema: Schema, pool: pd.Series | None, data: dict) -> str:
    values = acquired_values(runs, schema, pool)
    first = schema.answer_columns[0]
    fraction_bins = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    column = None if pool is None else str(pool.name)
    data["acquired_distributions"] = _distributions_json(values, first, fraction_bins, pool)
    body = ["<p>Over all seeds of each acquisition, as fractions of the galaxies it acquired in that iteration.</p>"]
    if any(entry["fraction"] for by_iteration in values.values() for entry in by_iteration.values()):
        body.append(histogram_figure(values, "fraction", f"predicted fraction {first}", fraction_bins))
    missing = list(dict.fromkeys(
        name for by_iteration in values.values() for entry in by_iteration.values() for name in entry["runs_without_fraction"]
    ))
    if missing:
        body.append(f"<p class='note'>Predicted fractions were not recorded in some iterations of "
                    f"{html.escape(', '.join(missing))} (made before acquired.csv kept them); those iterations are left "
                    "out of the first figure.</p>")
        data["notes"].append(f"predicted fractions of the acquired galaxies missing in some iterations of: {', '.join(missing)}")
    if pool is not None:
        finite = pool.to_numpy()[np.isfinite(pool.to_numpy())]
        body.append(f"<p>{html.escape(column)} from the pool catalog {html.escape(str(pool_catalog_path(runs[0])))}; "
                    f"grey: the whole pool ({len(finite)} galaxies).</p>")
        body.append(histogram_figure(values, "column", column, data["acquired_distributions"]["column"]["bins"], finite))
        n_missing = sum(e["missing_column"] for by_iteration in values.values() for e in by_iteration.values())
        if n_missing:
            body.append(f"<p class='note'>{n_missing} acquired galaxies have no {html.escape(column)} (NaN) and are "
                        "not drawn.</p>")
    return _section("distributions", "What was acquired over iterations", body)


def _coverage_section(runs: list[Run], schema: Schema, shards: _Shards, seeds: dict[str, int], data: dict) -> str:
    reports = {}
    for run in runs:
        report = run_coverage(run, schema, shards(run))
        if report is None:
            data["notes"].append(f"{run.name}: its last iteration kept no {TEST_PREDICTIONS}; no coverage")
        else:
            reports[run.name] = report
    data["coverage"] = [{"run": r.name, "acquisition": r.acquisition, "seed": seeds[r.name], **reports[r.name]}
                        for r in runs if r.name in reports]
    if not reports:
        return _section("coverage", "Coverage of the predictive intervals", [
            f"<p>No run kept {TEST_PREDICTIONS} in its last iteration (made before iterations kept them).</p>"])
    body = ["<p>Posterior predictive intervals of each test galaxy's vote count on each question, from the last "
            "iteration's MC predictions, against the votes it really got (N = its own count). Expected coverage "
            "is the interval's predictive mass (at least the nominal level; more for few votes). Right: how often "
            "the observed count k lies within ±w votes of the predicted mean count, against the predicted probability "
            "(the coverage plot of Walmsley et al. 2019).</p>",
            coverage_figure(runs, reports),
            *([question_coverage_figure(runs, reports, schema)] if schema.n_questions > 1 else []),
            _coverage_table(runs, reports, schema),
            f'<p class="definition"><b>Interval.</b> {html.escape(INTERVAL_DEFINITION)}.</p>']
    lacking = [r.name for r in runs if r.name not in reports]
    if lacking:
        body.append(f"<p class='note'>No {TEST_PREDICTIONS} in the last iteration of: "
                    f"{html.escape(', '.join(lacking))} (made before iterations kept them).</p>")
    return _section("coverage", "Coverage of the predictive intervals", body)


def write_report(path: str | Path, runs: Sequence[Run], comparisons: Sequence[Comparison], metric: str = "test_loss",
                 column: str | None = None, source: str = "") -> tuple[Path, Path]:
    """Write the page to ``path`` (.html) and its numbers beside it (.json), each atomically."""
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise ReportError(f"expected an .html path for the report, got {path}")
    page, data = build_report(runs, comparisons, metric, column, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path = path.with_suffix(".json")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path, json_path


# ---------------------------------------------------------------- html pieces

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       max-width: 1180px; margin: 0 auto; padding: 16px 28px 48px; line-height: 1.45; font-size: 15px; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 21px; margin-top: 36px; border-bottom: 2px solid #ddd; }
h3 { font-size: 16px; margin: 20px 0 6px; }
.meta { color: #555; font-size: 13px; } nav a { margin-right: 14px; }
img.figure { max-width: 100%; display: block; margin: 10px 0; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; white-space: nowrap; }
.definition, .note { font-size: 13px; color: #444; } .note { color: #8a4b00; }
.verdict { text-align: left; max-width: 520px; }
table.grid td { border: none; padding: 2px; text-align: center; font-size: 11px; line-height: 1.25; white-space: nowrap; }
table.grid th { background: none; border: none; text-align: left; font-weight: normal; font-size: 12px;
                min-width: 112px; padding-right: 8px; white-space: nowrap; }
table.grid img { width: THUMBpx; height: THUMBpx; image-rendering: pixelated; display: block; margin: 0 auto 2px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
""".replace("THUMB", str(THUMBNAIL_PX))


def _section(anchor: str, title: str, body: list[str]) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n' + "\n".join(body) + "</section>"


def _page(runs: Sequence[Run], seeds: dict[str, int], schema: Schema, source: str, sections: list[str]) -> str:
    colour = colours([run.acquisition for run in runs])
    rows = "".join(
        f"<tr><td class='text'><span class='swatch' style='background:{colour[r.acquisition]}'></span>"
        f"{html.escape(r.acquisition)}</td><td>{seeds[r.name]}</td><td class='text'>{html.escape(str(r.folder))}</td>"
        f"<td>{len(r.curve)}</td><td>{_number(r.curve['n_labelled'].iloc[-1], 0)}</td>"
        f"<td>{_number(r.curve['votes_used'].iloc[-1] if 'votes_used' in r.curve else None, 0)}</td></tr>"
        for r in runs
    )
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in [
        ("curves", "learning curves"), ("savings", "label savings"), ("acquired", "acquired galaxies"),
        ("distributions", "what was acquired"), ("coverage", "coverage")])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zoobot report: {html.escape(source or 'active learning')}</title>
<style>{STYLE}</style></head><body>
<h1>Active learning report</h1>
<p class="meta">{html.escape(source)} &middot; schema {html.escape(schema.name)} &middot; zoobot {__version__} &middot; {created}</p>
<nav>{nav}</nav>
<table><tr><th class="text">acquisition</th><th>seed</th><th class="text">folder</th><th>iterations</th>
<th>labelled galaxies</th><th>votes used</th></tr>{rows}</table>
{''.join(sections)}
</body></html>
"""


def _summary_table(summary: dict[str, list[dict]]) -> str:
    """The last iteration every seed of an acquisition completed: mean (min to max)."""
    cells = []
    for acquisition, rows in summary.items():
        if not rows:
            continue
        last = rows[-1]
        metrics = "".join(
            f"<td>{_spread(last[m])}</td>" for m in CURVE_METRICS
        )
        cells.append(f"<tr><td class='text'>{html.escape(acquisition)}</td><td>{last['n_seeds']}</td>"
                     f"<td>{last['iteration']}</td><td>{_number(last['n_labelled'], 0)}</td>"
                     f"<td>{_number(last['votes_used'], 0)}</td>{metrics}</tr>")
    return ("<table><tr><th class='text'>acquisition</th><th>seeds</th><th>iteration</th><th>labelled galaxies</th>"
            "<th>votes used</th><th>test loss: mean (min to max)</th><th>test MAE: mean (min to max)</th></tr>"
            + "".join(cells) + "</table>")


def _savings_table(estimates) -> str:
    rows = []
    for comparison, results in estimates:
        for axis, result in results.items():
            if isinstance(result, str):
                rows.append(f"<tr><td class='text'>{html.escape(comparison.active)} vs {html.escape(comparison.baseline)}"
                            f"</td><td class='text'>{AXES[axis]}</td><td>-</td><td>-</td><td>-</td>"
                            f"<td class='verdict'>{html.escape(result)}</td></tr>")
                continue
            interval = "-" if result.interval is None else f"{result.interval[0]:+.0%} to {result.interval[1]:+.0%}"
            gap = "-" if result.loss_gap is None else f"{result.loss_gap:+.4f}"
            estimate = "-" if result.estimate is None else f"{result.estimate:+.0%}"
            rows.append(f"<tr><td class='text'>{html.escape(comparison.active)} vs {html.escape(comparison.baseline)}</td>"
                        f"<td class='text'>{result.unit}</td><td>{estimate}</td><td>{interval}</td><td>{gap}</td>"
                        f"<td class='verdict'>{html.escape(result.verdict)}</td></tr>")
    return ("<table><tr><th class='text'>comparison</th><th class='text'>labels</th><th>mean saving</th>"
            f"<th>{INTERVAL:.0%} interval</th><th>mean loss gap</th><th class='text'>verdict</th></tr>"
            + "".join(rows) + "</table>")


def _first_question_answers(schema: Schema) -> list[str]:
    start, stop = schema.answer_groups[0]
    return schema.answer_columns[start:stop]


def _grid_html(run: Run, rows: list[dict], schema: Schema) -> str:
    answers = _first_question_answers(schema)
    out = [f"<h3>{html.escape(run.acquisition)}: {html.escape(run.folder.name)}</h3><table class='grid'>"]
    for row in rows:
        score = ("<br><span class='note'>scores and fractions<br>not recorded</span>" if row["mean_score"] is None
                 else f"<br>mean score {row['mean_score']:.3g}")
        header = f"<th><b>iteration {row['iteration']}</b><br>{row['n_acquired']} acquired{score}</th>"
        cells = []
        for galaxy in row["galaxies"]:
            lines = [] if galaxy["score"] is None else [f"score {galaxy['score']:.3g}"]
            fractions = [f"{galaxy['fractions'][a]:.2f}" for a in answers if a in galaxy["fractions"]]
            if fractions:
                lines.append("/".join(fractions))
            cells.append(f"<td><img src='{_thumbnail(galaxy['image'])}' alt='{html.escape(galaxy['id_str'])}' "
                         f"title='{html.escape(galaxy['id_str'])}'>{'<br>'.join(lines)}</td>")
        out.append(f"<tr>{header}{''.join(cells)}</tr>")
    return "".join(out) + "</table>"


def _coverage_table(runs: Sequence[Run], reports: dict[str, dict], schema: Schema) -> str:
    """Per acquisition and question: observed / expected coverage at each level, mean over seeds."""
    questions = [*schema.question_names, "all"] if schema.n_questions > 1 else ["all"]
    head = "".join(f"<th>{level:.0%}: observed / expected</th>" for level in LEVELS)
    rows = []
    for acquisition, group in _by_acquisition(runs).items():
        parts = [reports[r.name] for r in group if r.name in reports]
        if not parts:
            continue
        for question in questions:
            pieces = [p["all"] if question == "all" else p["questions"][question] for p in parts]
            pieces = [p for p in pieces if p["n_galaxies"]]
            if not pieces:
                continue
            cells = "".join(
                f"<td>{np.mean([p['intervals'][i]['observed'] for p in pieces]):.3f} / "
                f"{np.mean([p['intervals'][i]['predicted'] for p in pieces]):.3f}</td>" for i in range(len(LEVELS))
            )
            credible = np.mean([p["intervals"][LEVELS.index(HEADLINE_LEVEL)]["credible_observed"] for p in pieces])
            label = "all questions" if question == "all" else question
            rows.append(f"<tr><td class='text'>{html.escape(acquisition)}</td><td class='text'>{html.escape(label)}</td>"
                        f"<td>{len(pieces)}</td><td>{pieces[0]['n_galaxies']}</td>{cells}<td>{credible:.3f}</td></tr>")
    return ("<table><tr><th class='text'>acquisition</th><th class='text'>question</th><th>runs</th><th>test galaxies with votes</th>"
            f"{head}<th>credible {HEADLINE_LEVEL:.0%} interval of the mean fraction: observed</th></tr>"
            + "".join(rows) + "</table><p class='definition'>Means over the runs of each acquisition. The credible "
            "interval of the expected fraction ignores the scatter of N volunteers' votes, so it covers the observed "
            "fractions less often; it is shown for contrast.</p>")


def _savings_json(result: SavingsEstimate | str) -> dict:
    if isinstance(result, str):
        return {"not_recorded": result}
    return {
        "estimate": result.estimate, "interval": result.interval, "interval_note": result.interval_note,
        "loss_gap": result.loss_gap, "loss_gap_interval": result.loss_gap_interval, "n_pairs": result.n_pairs,
        "n_pairs_unmatched": result.n_pairs_unmatched, "n_matched": result.n_matched, "n_below": result.n_below,
        "n_above": result.n_above, "n_shared_start": result.n_shared_start, "verdict": result.verdict,
        "pair_savings": [p.saving for p in result.pairs], "pair_loss_gaps": [p.loss_gap for p in result.pairs],
    }


def _distributions_json(values: dict, first: str, fraction_bins: np.ndarray, pool: pd.Series | None) -> dict:
    """Histogram counts per acquisition and iteration, as drawn."""
    out: dict[str, Any] = {"fraction": {"quantity": f"{first}_fraction", "bins": fraction_bins.tolist(), "counts": {}}}
    parts = [("fraction", fraction_bins)]
    if pool is not None:
        finite = pool.to_numpy()[np.isfinite(pool.to_numpy())]
        bins = np.histogram_bin_edges(finite if len(finite) else [0.0, 1.0], bins=HISTOGRAM_BINS)
        out["column"] = {"quantity": str(pool.name), "bins": bins.tolist(), "counts": {},
                         "pool_counts": np.histogram(finite, bins=bins)[0].tolist()}
        parts.append(("column", bins))
    for key, bins in parts:
        for acquisition, by_iteration in values.items():
            out[key]["counts"][acquisition] = [
                {"iteration": i, "n": len(e[key]), "counts": np.histogram(e[key], bins=bins)[0].tolist()}
                | ({"n_missing": e["missing_column"]} if key == "column" else {"n_runs": e["fraction_runs"]})
                for i, e in sorted(by_iteration.items())
            ]
    return out


def _spread(stats: dict | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.4f} ({stats['min']:.4f} to {stats['max']:.4f})"


def _number(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _plain(value):
    """numpy scalars, tuples and NaN -> plain JSON values (NaN and inf -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value
