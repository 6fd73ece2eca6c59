"""`zoobot status`: where an experiment stands, read without PyTorch or Lightning (fast on a login node)."""

import json
import sqlite3
from pathlib import Path

import typer

from zoobot.cli.app import app, fail
from zoobot.loop.layout import LEDGER, completed_iterations, iteration_dir, next_iteration, partial_dir

PARTIAL_STEPS = (  # file in the partial folder -> step done
    ("collected.json", "collect"),
    ("train_result.json", "train"),
    ("test_metrics.json", "evaluate"),
    ("acquired.csv", "acquire"),
    ("metrics.json", "request"),
)


def ledger_counts(path: Path) -> dict[str, int]:
    """Galaxies per state, read-only (a running iteration keeps writing)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM galaxies GROUP BY state").fetchall())


@app.command("status")
def status_command(
    experiment: Path = typer.Argument(..., help="An experiment folder (create-instructions or simulate)."),
) -> None:
    """Complete iterations, the steps done in the one in progress, and the ledger's galaxy counts."""
    ledger = experiment / LEDGER
    if not ledger.is_file():
        fail(f"{experiment}: no {LEDGER}; expected an experiment folder made by `zoobot create-instructions` or `simulate`")
    done = completed_iterations(experiment)
    typer.echo(f"{experiment}: {len(done)} complete iterations{f' (last {done[-1]})' if done else ''}")
    work = partial_dir(experiment, next_iteration(experiment))
    if work.is_dir():
        steps = [step for name, step in PARTIAL_STEPS if (work / name).exists()]
        units = len(list((work / "scoring" / "parts").glob("unit_*_topk.parquet")))
        scoring = f"; scoring: {units} work units done" if units and "acquire" not in steps else ""
        typer.echo(f"iteration {next_iteration(experiment)} in progress: done {', '.join(steps) or 'nothing yet'}{scoring}")
    last = json.loads((iteration_dir(experiment, done[-1]) / "metrics.json").read_text()) if done else {}
    if "test_loss" in last:
        typer.echo(f"last test loss {last['test_loss']:.4f} with {last.get('n_labelled', '?')} labelled galaxies")
    counts = ledger_counts(ledger)
    typer.echo("ledger: " + ", ".join(f"{state} {counts.get(state, 0)}" for state in ("unlabelled", "requested", "labelled")))
