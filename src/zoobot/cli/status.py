"""zoobot status: where an experiment stands (the ledger), read without loading PyTorch."""

import json
from pathlib import Path

import typer

from zoobot.cli.app import app, fail
from zoobot.loop.instructions import load_instructions
from zoobot.loop.layout import INSTRUCTIONS_DIR, LEDGER, completed_iterations, iteration_dir, next_iteration, partial_dir
from zoobot.loop.ledger import REQUESTED, Ledger, votes_per_galaxy
from zoobot.oracles import oracle_class
from zoobot.schema import get_schema

N_GALAXIES_SHOWN = 30
PARTIAL_STEPS = (  # file in the partial folder -> step done
    ("collected.json", "collect"),
    ("train_result.json", "train"),
    ("test_metrics.json", "evaluate"),
    ("acquired.csv", "acquire"),
    ("metrics.json", "request"),
)


def progress(experiment_dir: Path) -> dict:
    """The steps done in the iteration in progress, its scoring work units, and the last test loss."""
    done = completed_iterations(experiment_dir)
    work = partial_dir(experiment_dir, next_iteration(experiment_dir))
    steps = [step for name, step in PARTIAL_STEPS if (work / name).exists()] if work.is_dir() else []
    units = len(list((work / "scoring" / "parts").glob("unit_*_topk.parquet"))) if work.is_dir() else 0
    last = json.loads((iteration_dir(experiment_dir, done[-1]) / "metrics.json").read_text()) if done else {}
    return {"steps_done": steps, "scoring_units_done": units,
            "last_test_loss": last.get("test_loss"), "last_n_labelled": last.get("n_labelled")}


def experiment_status(experiment_dir: Path) -> dict:
    """The ledger's galaxies per state, each requested galaxy's votes, the last collection."""
    plan = load_instructions(experiment_dir / INSTRUCTIONS_DIR)
    schema = get_schema(plan.instructions.schema)
    oracle = plan.instructions.oracle
    settings = oracle_class(oracle.kind).Settings(**oracle.settings)
    ledger = Ledger(experiment_dir / LEDGER, schema.n_answers)
    try:
        requests = ledger.requests()
        votes = votes_per_galaxy(ledger.summed_votes([i for i, _, _ in requests]), schema.answer_groups)
        status = {
            "experiment": str(experiment_dir),
            "oracle": oracle.kind,
            "live": bool(getattr(oracle_class(oracle.kind), "live", False)),
            "votes_needed": getattr(settings, "votes_per_galaxy", lambda: None)(),
            "iterations_complete": len(completed_iterations(experiment_dir)),
            "next_iteration": next_iteration(experiment_dir),
            "in_progress": partial_dir(experiment_dir, next_iteration(experiment_dir)).exists(),
            "galaxies": ledger.counts(),
            "requested": [
                {"id_str": i, "iteration": n, "state": state, "votes": int(v)}
                for (i, state, n), v in zip(requests, votes)
            ],
            "last_collection": ledger.last_collection(),
            **progress(experiment_dir),
        }
    finally:
        ledger.close()
    return status


def describe(status: dict) -> list[str]:
    """The status as lines of text: states, then per request iteration, then the open galaxies."""
    galaxies = status["galaxies"]
    lines = [
        f"{status['experiment']}: oracle {status['oracle']}{' (live)' if status['live'] else ''}, "
        f"{status['iterations_complete']} iteration{'' if status['iterations_complete'] == 1 else 's'} complete, "
        f"next {status['next_iteration']}{' (started)' if status['in_progress'] else ''}",
        "galaxies: " + ", ".join(f"{galaxies[state]} {state}" for state in ("labelled", REQUESTED, "unlabelled")),
    ]
    if status["in_progress"]:
        units = status["scoring_units_done"]
        scoring = f"; scoring: {units} work units done" if units and "acquire" not in status["steps_done"] else ""
        lines.append(f"iteration {status['next_iteration']} in progress: done {', '.join(status['steps_done']) or 'nothing yet'}{scoring}")
    if status["last_test_loss"] is not None:
        lines.append(f"last test loss {status['last_test_loss']:.4f} with {status['last_n_labelled']} labelled galaxies")
    needed = status["votes_needed"]
    by_iteration: dict[int, list[dict]] = {}
    for row in status["requested"]:
        by_iteration.setdefault(row["iteration"], []).append(row)
    for iteration, rows in by_iteration.items():
        open_rows = [r for r in rows if r["state"] == REQUESTED]
        histogram: dict[int, int] = {}
        for row in open_rows:
            histogram[row["votes"]] = histogram.get(row["votes"], 0) + 1
        spread = ", ".join(f"{n} with {v} vote{'' if v == 1 else 's'}" for v, n in sorted(histogram.items()))
        lines.append(
            f"requested in iteration {iteration}: {len(rows)} galaxies, {len(rows) - len(open_rows)} labelled"
            + (f", {len(open_rows)} waiting ({spread})" if open_rows else "")
        )
    waiting = [r for r in status["requested"] if r["state"] == REQUESTED]
    if waiting:
        lines.append(f"votes per waiting galaxy{f' (of {needed} needed)' if needed else ''}:")
        lines += [f"  {r['id_str']}  iteration {r['iteration']}  {r['votes']} votes" for r in waiting[:N_GALAXIES_SHOWN]]
        if len(waiting) > N_GALAXIES_SHOWN:
            lines.append(f"  ... and {len(waiting) - N_GALAXIES_SHOWN} more (--json lists every galaxy)")
    last = status["last_collection"]
    lines.append(
        "last collection: never" if last is None else
        f"last collection: {last['collected_at']} (iteration {last['iteration']}: "
        f"{last['n_handed_over']} deliveries, {last['n_new']} new)"
    )
    return lines


@app.command("status")
def status_command(
    experiment_dir: Path = typer.Argument(..., help="An experiment made by create-instructions or simulate."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON, every requested galaxy included."),
) -> None:
    """Show the ledger: galaxies per state, votes per requested galaxy, the last collection time."""
    if not (experiment_dir / LEDGER).is_file():
        fail(f"{experiment_dir}: no {LEDGER}; expected an experiment folder made by `zoobot create-instructions` or `simulate`")
    try:
        status = experiment_status(experiment_dir)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(json.dumps(status, indent=2) if as_json else "\n".join(describe(status)))
