import pandas as pd
import pytest

from zoobot.reports import label_savings, learning_curve, plot_learning_curves


def curve(labels, losses):
    return pd.DataFrame({"n_labelled": labels, "eval_loss": losses})


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


def test_learning_curve_reads_the_iteration_folders(tmp_path):
    """Complete iterations count even when metrics.csv was never refreshed."""
    import json

    for n, loss in ((1, 0.9), (2, 0.7)):
        folder = tmp_path / "iterations" / f"iteration_{n:03d}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"iteration": n, "n_labelled": 100 * n, "eval_loss": loss}))
        (folder / "final_state.json").write_text("{}")
    (tmp_path / "iterations" / ".iteration_003.partial").mkdir()
    assert learning_curve(tmp_path)["eval_loss"].tolist() == [0.9, 0.7]
    with pytest.raises(FileNotFoundError, match="no complete iteration"):
        learning_curve(tmp_path / "empty")
