"""`zoobot report`: learning curves of finished experiments and label savings over paired seeds."""

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from zoobot.cli.app import app, fail, old_spelling, renamed
from zoobot.html_report import Comparison, ReportError, Run, savings_by_axis, write_report
from zoobot.loop.layout import comparison_runs, identity, identity_differences
from zoobot.reports import CURVE_COLUMNS, learning_curve, plot_learning_curves, require_metric
from zoobot.savings import AXES, DEFINITION


def print_curve(console: Console, name: str, curve) -> None:
    """The learning curve's main columns as a table."""
    curve = curve[[c for c in CURVE_COLUMNS if c in curve.columns]]
    table = Table(title=f"learning curve: {name}")
    for column in curve.columns:
        table.add_column(column, justify="right")
    for row in curve.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def savings_lines(pairs: list, metric: str, active: str = "active", baseline: str = "baseline") -> list[str]:
    """Savings at matched ``metric`` in galaxies and in votes: one verdict line each, and the definition.

    ``pairs`` are (active, baseline) learning curves sharing seeds. Everything is computed before
    a line is returned, so an unusable curve (ValueError) leaves nothing half printed.
    """
    seeds = "1 paired seed" if len(pairs) == 1 else f"{len(pairs)} paired seeds"
    lines = [f"label savings of {active} against {baseline} at matched {metric} ({seeds}):"]
    for axis, result in savings_by_axis(pairs, metric).items():
        if isinstance(result, str):
            lines.append(f"  {AXES[axis]}: {result}")
            continue
        gap = ""
        if result.loss_gap is not None:
            gap = f"; mean {metric} gap {result.loss_gap:+.4f}"
            if result.loss_gap_interval is not None:
                gap += f" (90% interval {result.loss_gap_interval[0]:+.4f} to {result.loss_gap_interval[1]:+.4f})"
        lines.append(f"  {AXES[axis]}: {result.verdict}{gap}")
    return lines + [f"  definition: {DEFINITION}"]


def expand_comparison(experiment_dirs: list[Path], baselines: list[Path]) -> list[tuple[str, list[Path], list[Path]]]:
    """(label, active runs, baseline runs paired by seed) for each comparison to report.

    A single `zoobot compare` folder expands to each acquisition against random, paired by seed;
    otherwise the folders given are the one comparison.
    """
    runs = comparison_runs(experiment_dirs[0]) if len(experiment_dirs) == 1 and not baselines else None
    if runs is None:
        return [("active", experiment_dirs, baselines)]
    if "random" not in runs or len(runs) < 2:
        return [(name, list(by_seed.values()), []) for name, by_seed in runs.items()]
    groups = []
    for name, by_seed in runs.items():
        if name != "random":
            seeds = sorted(set(by_seed) & set(runs["random"]))
            groups.append((name, [by_seed[s] for s in seeds], [runs["random"][s] for s in seeds]))
    return groups


@app.command("report")
def report_command(
    experiment_dirs: list[Path] = typer.Argument(
        ..., help="Active-learning experiments with complete iterations, one per seed, or one `zoobot compare` "
        "folder.", metavar="ACTIVE"
    ),
    baseline: Optional[list[Path]] = typer.Option(
        None, help="A random-acquisition experiment to compare with; repeat it, one per ACTIVE, paired in order."
    ),
    metric: str = typer.Option("test_loss", help="Lower-is-better metric for label savings."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="R.html: one self-contained page (curves, savings, acquired galaxies, coverage) and "
        "its numbers in R.json; any other name: the learning curves as a PNG."
    ),
    column: Optional[str] = typer.Option(
        None, help="With --out R.html: also histogram this pool-catalog column (e.g. a magnitude) of the acquired galaxies."
    ),
    old_plot: Optional[Path] = old_spelling("--plot"),
) -> None:
    """Print learning curves and, with baselines, the labels active learning saved at matched quality.

    Runs are compared only if they share the schema, the test galaxies, the starting labelled set
    and the oracle settings (each iteration records them); otherwise the differences are listed.
    With --out R.html, also one self-contained page and its numbers (R.json).
    """
    out = renamed(out, old_plot, "--plot", "--out")
    is_page = out is not None and out.suffix.lower() == ".html"
    if column is not None and not is_page:
        fail(f"--column {column!r} goes into the HTML report; expected --out R.html, got {out}")
    report_runs(Console(soft_wrap=True), experiment_dirs, list(baseline or []), metric,
                None if is_page else out, page=out if is_page else None, column=column)


def report_runs(console: Console, experiment_dirs: list[Path], baselines: list[Path], metric: str,
                plot: Optional[Path], page: Optional[Path] = None, column: Optional[str] = None) -> None:
    """Print the learning curves and the savings of active runs against paired baselines (or of a
    `zoobot compare` folder), after checking that the runs can be compared; exits 1 if not.

    ``plot``: save the learning curves as this PNG; ``page``: write the HTML report there (and
    its numbers beside it as .json), with ``column`` of the pool catalog histogrammed."""
    if baselines and len(baselines) != len(experiment_dirs):
        fail(
            f"expected one --baseline per active experiment, paired in order (same seeds); got "
            f"{len(experiment_dirs)} active and {len(baselines)} baseline experiments"
        )
    groups = expand_comparison(experiment_dirs, baselines)
    curves, pairs_by_group, runs = {}, [], []
    try:
        for label, actives, paired in groups:
            names = [_name(label, n, path, len(actives)) for n, path in enumerate(actives, start=1)]
            baseline_label = "baseline" if label == "active" else "random"
            names += [_name(baseline_label, n, path, len(paired)) for n, path in enumerate(paired, start=1)]
            group = {name: learning_curve(path) for name, path in zip(names, actives + paired)}
            curves.update(group)
            roles = [label] * len(actives) + [baseline_label] * len(paired)
            runs.append([Run(name, role, path, group[name]) for name, role, path in zip(names, roles, actives + paired)])
            table = list(group.values())
            pairs_by_group.append((label, list(zip(table[:len(actives)], table[len(actives):]))))
        if any(pairs for _, pairs in pairs_by_group) or plot is not None or page is not None:
            require_metric(curves, metric)
    except (FileNotFoundError, NotADirectoryError) as error:
        fail(str(error))
    except KeyError as error:
        fail(str(error.args[0]))
    compared = [path for _, actives, paired in groups if paired for path in actives + paired]
    differences = identity_differences({str(path): identity(path) for path in compared})
    if differences:
        fail("these runs cannot be compared: " + "; ".join(differences))
    for name, curve in curves.items():
        print_curve(console, name, curve)
    for label, pairs in pairs_by_group:
        if not pairs:
            continue
        try:
            lines = savings_lines(pairs, metric, active=label, baseline="random" if label != "active" else "baseline")
        except ValueError as error:
            fail(str(error))
        for line in lines:
            console.print(line, markup=False)
    if plot is not None:
        console.print(f"plot saved to {plot_learning_curves(curves, plot, metric)}")
    if page is not None:
        try:
            page_path, json_path = write_report(page, _unique(runs), _comparisons(groups, runs), metric, column,
                                                source=", ".join(str(path) for path in experiment_dirs))
        except (ReportError, OSError, KeyError, ValueError) as error:
            fail(str(error.args[0]) if isinstance(error, KeyError) else str(error))
        console.print(f"report saved to {page_path} (numbers in {json_path})")


def _unique(runs: list[list[Run]]) -> list[Run]:
    """Each run once (a `zoobot compare` folder pairs random with every other acquisition), baselines last."""
    unique = {run.name: run for group in runs for run in group}.values()
    return sorted(unique, key=lambda run: run.acquisition in ("random", "baseline"))


def _comparisons(groups, runs: list[list[Run]]) -> list[Comparison]:
    """The groups with baselines, as (active, baseline) runs paired in order."""
    comparisons = []
    for (label, actives, paired), group in zip(groups, runs):
        if paired:
            pairs = tuple(zip(group[: len(actives)], group[len(actives):]))
            comparisons.append(Comparison(label, "baseline" if label == "active" else "random", pairs))
    return comparisons


def _name(label: str, n: int, path: Path, n_runs: int) -> str:
    """'active', 'active 2 (bald2)' for folders given one by one; 'bald (bald_seed42)' from a comparison."""
    if label not in ("active", "baseline"):
        return f"{label} ({path.name})"
    return f"{label} {n} ({path.name})" if n_runs > 1 else label
