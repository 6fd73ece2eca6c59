import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from zoobot.cli import app
from zoobot.loop.layout import INSTRUCTIONS_DIR
from zoobot.reports import label_savings, learning_curve, plot_learning_curves

runner = CliRunner()


def curve(labels, losses):
    return pd.DataFrame({"n_labelled": labels, "test_loss": losses})


def test_label_savings_interpolates_between_iterations():
    baseline = curve([100, 200, 300, 400], [1.0, 0.8, 0.7, 0.6])
    active = curve([100, 200, 300, 400], [1.0, 0.7, 0.5, 0.4])
    savings = label_savings(active, baseline)
    assert savings.target == 0.6
    assert savings.active_labels == pytest.approx(250.0)
    assert savings.fraction_saved == pytest.approx(1 - 250 / 400)


def test_label_savings_when_never_reached_or_reached_at_once(tmp_path):
    baseline = curve([100, 200], [1.0, 0.5])
    assert label_savings(curve([100, 200], [1.0, 0.9]), baseline).fraction_saved is None
    assert label_savings(curve([100, 200], [0.4, 0.3]), baseline).active_labels == 100
    out = plot_learning_curves({"a": baseline}, tmp_path / "c.png")
    assert out.stat().st_size > 1000


def test_label_savings_names_an_unknown_metric():
    with pytest.raises(KeyError, match="no metric 'eval_auc'"):
        label_savings(curve([1], [1.0]), curve([1], [1.0]), metric="eval_auc")


def write_iterations(experiment: Path, losses) -> Path:
    """Complete iteration folders with their metrics.json, as the loop leaves them."""
    for n, loss in enumerate(losses, start=1):
        folder = experiment / "iterations" / f"iteration_{n:03d}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"iteration": n, "n_labelled": 100 * n, "test_loss": loss}))
        (folder / "final_state.json").write_text("{}")
    return experiment


def test_learning_curve_reads_the_iteration_folders(tmp_path):
    """Complete iterations count even when metrics.csv was never refreshed."""
    write_iterations(tmp_path, [0.9, 0.7])
    (tmp_path / "iterations" / ".iteration_003.partial").mkdir()
    assert learning_curve(tmp_path)["test_loss"].tolist() == [0.9, 0.7]


def test_learning_curve_says_what_the_folder_is(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"experiment folder .*missing does not exist"):
        learning_curve(tmp_path / "missing")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "galaxy.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"photos holds no experiment; expected .*instructions/, ledger.sqlite"):
        learning_curve(tmp_path / "photos")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(NotADirectoryError, match=r"notes.txt is a file; expected an experiment folder"):
        learning_curve(tmp_path / "notes.txt")
    (tmp_path / "fresh" / INSTRUCTIONS_DIR).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="fresh has no complete iteration yet"):
        learning_curve(tmp_path / "fresh")


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing", "error: experiment folder {} does not exist"),
        ("photos", "error: {} holds no experiment"),
        ("fresh", "error: {} has no complete iteration yet"),
    ],
)
def test_report_cli_refuses_what_is_not_a_finished_experiment(tmp_path, name, message):
    (tmp_path / "photos").mkdir()
    (tmp_path / "fresh" / INSTRUCTIONS_DIR).mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["report", str(tmp_path / name), "--out", str(tmp_path / "curve.png")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert message.format(tmp_path / name) in result.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_report_cli_checks_the_metric_before_printing_or_plotting(tmp_path):
    write_iterations(tmp_path / "active", [0.9, 0.7])
    write_iterations(tmp_path / "random", [0.9, 0.8])
    plot = tmp_path / "plots" / "curve.png"
    bad = runner.invoke(app, ["report", str(tmp_path / "active"), "--metric", "eval_auc", "--out", str(plot)])
    assert bad.exit_code == 1 and "no metric 'eval_auc'" in bad.output
    assert "learning curve: active" not in bad.output and not plot.exists()
    good = runner.invoke(app, ["report", str(tmp_path / "active"), "--baseline", str(tmp_path / "random"),
                               "--out", str(plot)])
    assert good.exit_code == 0, good.output
    assert "active learning reached it at 150 labels" in good.output and plot.stat().st_size > 1000
