import pandas as pd
import pytest

from zoobot.reports import label_savings, plot_learning_curves


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
