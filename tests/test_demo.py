"""`zoobot demo` end to end, shrunk: synthesize, define, shard, BALD and random runs, report."""

from typer.testing import CliRunner

from zoobot.cli import app


def test_demo_runs_the_whole_pipeline(tmp_path):
    result = CliRunner().invoke(
        app,
        ["demo", "--out-dir", str(tmp_path), "--n-galaxies", "120", "--initial-labelled", "20",
         "--eval-size", "30", "--iterations", "2", "--subjects-per-iteration", "10", "--epochs", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "learning curve: active" in result.output
    assert "learning curve: baseline" in result.output
    for run in ("active", "baseline"):
        metrics = (tmp_path / run / "metrics.csv").read_text().splitlines()
        assert len(metrics) == 3  # header + 2 iterations
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
