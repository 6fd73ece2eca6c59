"""`zoobot demo` end to end, shrunk: synthesize, define, shard, BALD and random runs, report."""

import pytest
from typer.testing import CliRunner

from zoobot.cli import app


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path), "--n-galaxies", "120", "--initial-labelled", "20",
         "--val-size", "15", "--test-size", "15", "--iterations", "2", "--subjects-per-iteration", "10", "--epochs", "1",
         "--seeds", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "learning curve: bald (bald_seed43)" in result.output
    assert "label savings of bald against random at matched test_loss (2 paired seeds)" in result.output
    for run in ("bald_seed42", "random_seed42", "bald_seed43", "random_seed43"):
        metrics = (tmp_path / "runs" / run / "metrics.csv").read_text().splitlines()
        assert len(metrics) == 3  # header + 2 iterations
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert "Label savings" in (tmp_path / "report.html").read_text()


def test_demo_refuses_impossible_sizes_and_used_folders(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--n-galaxies", "100", "--initial-labelled", "50", "--val-size", "25", "--test-size", "25"])
    assert result.exit_code == 1
    assert "must exceed --initial-labelled + --val-size + --test-size" in result.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "used")])
    assert result.exit_code == 1
    assert "not empty" in result.output
