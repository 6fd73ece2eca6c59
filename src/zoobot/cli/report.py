"""`zoobot report`: learning curves and label savings of finished experiments."""

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from zoobot.cli.app import app, fail, old_spelling, renamed
from zoobot.reports import (
    CURVE_COLUMNS,
    label_savings,
    learning_curve,
    plot_learning_curves,
    require_metric,
)


def print_curve(console: Console, name: str, curve) -> None:
    """The learning curve's main columns as a table."""
    curve = curve[[c for c in CURVE_COLUMNS if c in curve.columns]]
    table = Table(title=f"learning curve: {name}")
    for column in curve.columns:
        table.add_column(column, justify="right")
    for row in curve.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@app.command("report")
def report_command(
    experiment_dir: Path = typer.Argument(..., help="An experiment with complete iterations."),
    baseline: Optional[Path] = typer.Option(None, help="A random-acquisition experiment to compare with."),
    metric: str = typer.Option("test_loss", help="Lower-is-better metric for label savings."),
    out: Optional[Path] = typer.Option(None, "--out", help="Save the learning curves as this PNG."),
    old_plot: Optional[Path] = old_spelling("--plot"),
) -> None:
    """Print learning curves and, with --baseline, the labels active learning saved."""
    plot = renamed(out, old_plot, "--plot", "--out")
    console = Console(soft_wrap=True)  # long lines stay whole in files, pipes and CI logs
    try:
        curves = {"active": learning_curve(experiment_dir)}
        if baseline is not None:
            curves["baseline"] = learning_curve(baseline)
        if baseline is not None or plot is not None:
            require_metric(curves, metric)
    except (FileNotFoundError, NotADirectoryError) as error:
        fail(str(error))
    except KeyError as error:
        fail(str(error.args[0]))
    for name, curve in curves.items():
        print_curve(console, name, curve)
    if baseline is not None:
        savings = label_savings(curves["active"], curves["baseline"], metric)
        if savings.active_labels is None:
            console.print(
                f"active learning never reached the baseline's final {metric} of {savings.target:.4f} "
                f"(baseline used {savings.baseline_labels} labels)"
            )
        else:
            console.print(
                f"baseline's final {metric} {savings.target:.4f} at {savings.baseline_labels} labels; "
                f"active learning reached it at {savings.active_labels:.0f} labels: "
                f"{100 * savings.fraction_saved:.0f}% fewer labels"
            )
    if plot is not None:
        console.print(f"plot saved to {plot_learning_curves(curves, plot, metric)}")
