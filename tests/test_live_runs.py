"""Live runs: `zoobot run` on a web-oracle experiment collects, waits (exit 0) until the previous
request is complete or --deadline passed, and loses or double-counts no vote across crashes;
`zoobot status` shows the ledger without loading PyTorch."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from web_experiment import SCHEMA, make_catalogs, make_web_experiment
from zoobot.cli import app
from zoobot.cli.loop import parse_duration
from zoobot.loop import iteration as iteration_module
from zoobot.loop.iteration import Waiting, run_iteration
from zoobot.loop.layout import completed_iterations, iteration_dir
from zoobot.loop.ledger import LABELLED, REQUESTED, Ledger
from zoobot.oracles import open_oracle

SMOOTH = SCHEMA.answer_columns[0]


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    return make_catalogs(tmp_path_factory.mktemp("live"))


def oracle_of(experiment):
    return open_oracle("web", {"votes_needed": 2}, experiment, SCHEMA)


def ledger_of(experiment):
    return Ledger(experiment / "ledger.sqlite", SCHEMA.n_answers)


def vote(experiment, ids, labeller):
    oracle = oracle_of(experiment)
    for id_str in ids:
        oracle.add_vote(id_str, labeller, [SMOOTH])


def test_a_live_iteration_waits_for_votes_then_for_the_deadline(catalogs, tmp_path):
    experiment = make_web_experiment(catalogs, tmp_path / "exp", votes_needed=2, subjects_per_iteration=4)
    first = run_iteration(experiment)  # nothing requested before: the gate is open
    assert first["live_gate"] == "nothing requested" and first["n_acquired"] == 4
    requested = ledger_of(experiment).requested_in(1)
    assert json.loads((iteration_dir(experiment, 1) / "final_state.json").read_text())["requested_at"]

    waiting = run_iteration(experiment)
    assert isinstance(waiting, Waiting)
    assert (waiting.iteration, waiting.n_requested, waiting.n_pending, waiting.votes_so_far) == (2, 4, 4, 0)
    assert "4 of the 4 galaxies" in waiting.describe() and "0 votes so far of 8 needed" in waiting.describe()

    vote(experiment, requested, "ada")
    vote(experiment, requested[:2], "ben")
    waiting = run_iteration(experiment, deadline=timedelta(hours=24))
    assert (waiting.n_pending, waiting.votes_so_far) == (2, 2)  # 2 complete, 2 with one vote of 2
    assert waiting.deadline_at is not None
    ledger = ledger_of(experiment)
    assert set(requested[:2]) <= set(ledger.ids(LABELLED))
    assert set(requested[2:]) <= set(ledger.ids(REQUESTED))
    assert ledger.n_collected_in(2) == 6  # every vote recorded while waiting, once
    ledger.close()
    assert completed_iterations(experiment) == [1]

    second = run_iteration(experiment, deadline=timedelta(0))  # the deadline has passed
    assert second["live_gate"] == "deadline" and second["deliveries_collected"] == 6
    ledger = ledger_of(experiment)
    assert set(requested[2:]) <= set(ledger.ids(REQUESTED))  # still open, never requested again
    assert not set(requested) & set(ledger.requested_in(2))
    ledger.close()
    vote(experiment, requested[2:], "ben")  # late votes complete them in iteration 3's collection
    vote(experiment, ledger_of(experiment).requested_in(2), "ada")
    vote(experiment, ledger_of(experiment).requested_in(2), "cy")
    third = run_iteration(experiment)
    assert third["live_gate"] == "complete" and third["deliveries_collected"] == 2 + 8
    ledger = ledger_of(experiment)
    assert set(requested) <= set(ledger.ids(LABELLED))
    ledger.close()


class Crash(Exception):
    """A process dying between two steps."""


def test_a_crash_while_waiting_counts_no_vote_twice(catalogs, tmp_path, monkeypatch):
    experiment = make_web_experiment(catalogs, tmp_path / "exp", votes_needed=2, subjects_per_iteration=4)
    run_iteration(experiment)
    requested = ledger_of(experiment).requested_in(1)
    vote(experiment, requested, "ada")

    def dies(*args, **kwargs):
        raise Crash()

    with monkeypatch.context() as patch:  # the oracle handed the votes over; the ledger never saw them
        patch.setattr(Ledger, "record", dies)
        with pytest.raises(Crash):
            run_iteration(experiment)
    with monkeypatch.context() as patch:  # recorded, then died before deciding to wait
        patch.setattr(iteration_module, "_waiting_for_votes", dies)
        with pytest.raises(Crash):
            run_iteration(experiment)
    vote(experiment, requested, "ben")
    result = run_iteration(experiment)
    assert result["live_gate"] == "complete" and result["deliveries_collected"] == 8
    ledger = ledger_of(experiment)
    ids, votes = ledger.labelled_votes()
    by_id = dict(zip(ids, votes.tolist()))
    assert all(by_id[i][0] == 2 and sum(by_id[i]) == 2 for i in requested)  # 2 votes each: smooth, smooth
    ledger.close()


def test_parse_duration():
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    for bad in ("", "24", "h", "1.5h", "24 hours", "-1h", "2026-01-01T00:00"):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(bad)


def test_cli_run_says_what_it_waits_for_and_status_shows_the_ledger(catalogs, tmp_path):
    experiment = make_web_experiment(catalogs, tmp_path / "exp", votes_needed=2, subjects_per_iteration=4)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(experiment), "--iterations", "3", "--deadline", "24h"])
    assert result.exit_code == 0, result.output
    assert completed_iterations(experiment) == [1]  # the second of 3 iterations waits
    bad = runner.invoke(app, ["run", str(experiment), "--deadline", "tomorrow"])
    assert bad.exit_code == 1 and "--deadline: expected a duration" in bad.output
    requested = ledger_of(experiment).requested_in(1)
    vote(experiment, requested[:1], "ada")
    waits = runner.invoke(app, ["run", str(experiment)])
    assert waits.exit_code == 0
    status = runner.invoke(app, ["status", str(experiment)])
    assert status.exit_code == 0, status.output
    assert "oracle web (live), 1 iteration complete, next 2 (started)" in status.output
    assert "galaxies: 18 labelled, 4 requested, 26 unlabelled" in status.output
    assert "requested in iteration 1: 4 galaxies, 0 labelled, 4 waiting (3 with 0 votes, 1 with 1 vote)" in status.output
    assert f"{requested[0]}  iteration 1  1 votes" in status.output
    assert "last collection: 20" in status.output and "(iteration 2: 1 deliveries, 1 new)" in status.output
    record = json.loads(runner.invoke(app, ["status", str(experiment), "--json"]).output)
    assert record["votes_needed"] == 2 and len(record["requested"]) == 4
    assert {r["id_str"]: r["votes"] for r in record["requested"]}[requested[0]] == 1


def test_status_does_not_load_pytorch(catalogs, tmp_path):
    experiment = make_web_experiment(catalogs, tmp_path / "exp")
    code = (
        "import sys; from zoobot.cli import main; sys.argv = ['zoobot', 'status', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'lightning', 'flask') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code, str(experiment)], capture_output=True, text=True, check=True)
    assert "loaded: []" in output.stdout, output.stdout + output.stderr
    assert "oracle web (live)" in output.stdout


def test_votes_needed_is_checked_and_only_for_the_web_oracle(catalogs, tmp_path):
    base = ["create-instructions", str(catalogs[0]), str(catalogs[1]), str(tmp_path / "e")]
    result = CliRunner().invoke(app, base + ["--oracle", "web", "--votes-needed", "0"])
    assert result.exit_code == 1 and "web oracle.votes_needed: expected an integer >= 1, got 0" in result.output
    result = CliRunner().invoke(app, base + ["--oracle", "web", "--reveal-votes", "3"])
    assert result.exit_code == 1 and "--reveal-votes does not apply to --oracle web" in result.output
    assert not (tmp_path / "e").exists()
    result = CliRunner().invoke(app, base + ["--oracle", "web", "--votes-needed", "5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "e" / "instructions" / "instructions.json").read_text())["oracle"]
    acquisition = json.loads((tmp_path / "e" / "instructions" / "acquisition_spec.json").read_text())
    assert saved == {"kind": "web", "settings": {"votes_needed": 5}} and acquisition["expected_votes"] == 5
