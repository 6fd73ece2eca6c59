import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from zoobot.cli import app
from zoobot.loop.layout import INSTRUCTIONS_DIR
from zoobot.reports import learning_curve, plot_learning_curves
from zoobot.savings import curve_savings, monotone_fit, paired_savings

runner = CliRunner()


def curve(labels, losses, votes=None):
    table = pd.DataFrame({"n_labelled": labels, "test_loss": losses})
    if votes is not None:
        table["votes_used"] = votes
    return table


LABELS = [100, 200, 300, 400, 500]


def straight(labels, offset=0.0):
    """A loss falling linearly in labels, so interpolation between its points is exact."""
    return [1.0 - n / 2000 + offset for n in labels]


def test_a_noisy_dip_is_not_a_saving():
    """The old end-point rule called this 61% saved; active is worse at every point but one."""
    active, baseline = [1.0, 0.79, 0.95, 0.90, 0.88], [1.0, 0.9, 0.85, 0.82, 0.80]
    assert list(monotone_fit(active)) == pytest.approx([1.0, 0.88, 0.88, 0.88, 0.88])  # the dip is pooled away
    result = curve_savings(LABELS, active, LABELS, baseline)
    # the baseline reaches 0.88 at 240 labels; the active fit reaches 0.9 at 100 + 100 * 0.1 / 0.12 labels
    forward = np.log(240 / np.array([200, 300, 400, 500]))
    reverse = [np.log((100 + 100 * 0.1 / 0.12) / 200)]  # 0.85, 0.82, 0.80 beat the active's best
    assert result.ratios == pytest.approx(list(1 - np.exp(-forward)))
    assert result.log_ratio == pytest.approx((np.median(forward) - np.median(reverse)) / 2)
    assert (result.n_below, result.n_above, result.n_shared_start) == (0, 0, 1)
    estimate = paired_savings([(curve(LABELS, active), curve(LABELS, baseline))])
    assert estimate.estimate == pytest.approx(result.saving) and estimate.estimate < -0.1 and estimate.interval is None
    assert estimate.verdict.startswith(f"one seed: no interval; saving {estimate.estimate:+.0%} (active needed")
    assert "61%" not in estimate.verdict
    # trapezoids over 100..500 of the fitted curves: baseline minus active
    assert estimate.loss_gap == pytest.approx(((0 + 0.02) / 2 + (0.02 - 0.03) / 2 + (-0.03 - 0.06) / 2 + (-0.06 - 0.08) / 2) / 4)


def test_identical_curves_save_nothing():
    losses = [1.0, 0.9, 0.85, 0.82, 0.80]
    result = curve_savings(LABELS, losses, LABELS, losses)
    assert result.ratios == (0.0, 0.0, 0.0, 0.0) and result.log_ratio == 0.0 and result.n_shared_start == 1
    assert result.loss_gap == 0.0
    estimate = paired_savings([(curve(LABELS, losses), curve(LABELS, losses))] * 3)
    assert estimate.estimate == 0.0 and estimate.interval == (0.0, 0.0)
    assert estimate.verdict.startswith("no significant difference: mean saving +0%")


def test_swapping_the_arms_flips_the_sign():
    """Antisymmetric by construction: noise in either curve cannot favour one arm."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        a, b = rng.normal(0, 0.02, 5) + straight(LABELS), rng.normal(0, 0.02, 5) + straight(LABELS)
        one, other = curve_savings(LABELS, a, LABELS, b), curve_savings(LABELS, b, LABELS, a)
        if one.log_ratio is not None:
            assert one.log_ratio == pytest.approx(-other.log_ratio)
            assert one.loss_gap == pytest.approx(-other.loss_gap)


def test_identical_arms_are_called_different_about_as_often_as_the_interval_allows():
    """Identical arms with noisy test loss, 3 paired seeds: the 90% interval should exclude 0 in about
    10% of triples, and the estimate average about 0 (the first estimator read -20% here)."""
    rng = np.random.default_rng(1)
    labels = [100, 200, 300, 400, 500, 600]
    truth = 0.30 + 1.9 / np.sqrt(np.array(labels))
    estimates, called = [], 0
    for _ in range(300):
        pairs = []
        for _ in range(3):
            a, b = truth + rng.normal(0, 0.02, 6), truth + rng.normal(0, 0.02, 6)
            a[0] = b[0] = truth[0] + rng.normal(0, 0.02)  # the shared starting set
            pairs.append((curve(labels, a), curve(labels, b)))
        estimate = paired_savings(pairs)
        if estimate.interval is not None:
            estimates.append(np.log(1 - estimate.estimate))
            called += not estimate.interval[0] <= 0 <= estimate.interval[1]
    assert len(estimates) > 250
    assert abs(np.mean(estimates)) < 0.03
    assert 0.04 < called / len(estimates) < 0.17


def test_a_rise_in_a_curve_is_pooled_with_its_neighbours():
    """A curve against itself saves nothing, rise or not: both are fitted the same way."""
    losses = [1.0, 0.9, 0.95, 0.8]
    assert list(monotone_fit(losses)) == pytest.approx([1.0, 0.925, 0.925, 0.8])
    assert curve_savings(LABELS[:4], losses, LABELS[:4], losses).log_ratio == pytest.approx(0.0)


def test_active_twice_as_fast_saves_half():
    """Active at n labels has the baseline's loss at 2n labels, on a curved and a straight curve."""
    baseline_labels = [100 * k for k in range(1, 11)]
    curved = [1 / np.sqrt(n) for n in baseline_labels]
    result = curve_savings(LABELS, [1 / np.sqrt(2 * n) for n in LABELS], baseline_labels, curved)
    assert result.ratios == pytest.approx([0.5] * 5) and result.n_shared_start == 0
    assert result.saving == pytest.approx(0.5, abs=0.01)  # the reverse reading uses interpolation between points
    between = [130, 260, 410]  # off the baseline's points: linear interpolation is exact on a straight curve
    result = curve_savings(between, straight([2 * n for n in between]), baseline_labels, straight(baseline_labels))
    assert result.ratios == pytest.approx([0.5] * 3)


def test_unrelated_curves_have_no_matched_points():
    below = paired_savings([(curve(LABELS, [0.5, 0.4, 0.3, 0.2, 0.1]), curve(LABELS, [1.0, 0.9, 0.8, 0.7, 0.6]))])
    assert below.estimate is None and below.n_matched == 0 and below.n_below == 5 and below.n_pairs_unmatched == 1
    assert below.verdict.startswith("no matched points: no saving can be read") and "%" not in below.verdict
    above = paired_savings([(curve(LABELS, [3.0, 2.5, 2.0, 1.5, 1.2]), curve(LABELS, [1.0, 0.9, 0.8, 0.7, 0.6]))])
    assert above.estimate is None and above.n_above == 5


def test_the_loss_gap_is_the_mean_vertical_distance_over_the_shared_labels():
    baseline = curve(LABELS, straight(LABELS))
    active = curve([200, 300, 400, 500, 600], straight([200, 300, 400, 500, 600], offset=-0.1))
    assert paired_savings([(active, baseline)]).loss_gap == pytest.approx(0.1)  # over 200..500 only


def seeded_pairs(savings, noise, seed=0):
    """One (active, baseline) pair per saving: active reaches the baseline's loss at (1 - saving) of its labels."""
    rng = np.random.default_rng(seed)
    baseline_labels = [100 * k for k in range(1, 11)]
    active_labels = [150, 250, 350, 450, 550, 650]
    pairs = []
    for saving in savings:
        baseline = straight(baseline_labels) + rng.normal(0, noise, len(baseline_labels))
        active = straight([n / (1 - saving) for n in active_labels]) + rng.normal(0, noise, len(active_labels))
        pairs.append((curve(active_labels, active), curve(baseline_labels, baseline)))
    return pairs


def test_three_seeds_around_a_true_saving_of_30_percent():
    estimate = paired_savings(seeded_pairs([0.3, 0.3, 0.3], noise=0.002))
    assert estimate.n_pairs == 3 and estimate.interval_note == ""
    low, high = estimate.interval
    assert 0 < low <= 0.3 <= high < 0.4, estimate.interval
    assert estimate.verdict.startswith(f"active needed {estimate.estimate:.0%} fewer galaxies: mean saving")
    assert estimate.loss_gap_interval[0] > 0
    assert paired_savings(seeded_pairs([0.3, 0.3, 0.3], noise=0.002)).interval == estimate.interval  # no randomness


def test_pairs_that_disagree_in_sign_are_no_significant_difference():
    estimate = paired_savings(seeded_pairs([0.3, -0.3, 0.1], noise=0.0))
    assert [p.saving for p in estimate.pairs] == pytest.approx([0.3, -0.3, 0.1], abs=0.01)
    assert estimate.interval[0] < 0 < estimate.interval[1]
    assert estimate.verdict.startswith("no significant difference: mean saving")


def test_fewer_than_three_pairs_give_no_interval():
    two = paired_savings(seeded_pairs([0.3, 0.3], noise=0.002))
    assert two.interval is None and two.estimate == pytest.approx(0.3, abs=0.02)
    assert two.verdict.startswith("2 usable paired seeds: no interval (needs at least 3)")


def test_savings_in_votes_count_the_votes_each_galaxy_took():
    """Active needs half the galaxies, but each of them took twice the votes: no saving in votes."""
    baseline_labels = [100 * k for k in range(1, 11)]
    baseline = curve(baseline_labels, straight(baseline_labels), votes=[10 * n for n in baseline_labels])
    active = curve(LABELS, straight([2 * n for n in LABELS]), votes=[20 * n for n in LABELS])
    assert paired_savings([(active, baseline)], axis="n_labelled").estimate == pytest.approx(0.5)
    votes = paired_savings([(active, baseline)], axis="votes_used")
    assert votes.estimate == pytest.approx(0.0, abs=1e-12) and votes.unit == "votes"
    assert "active needed 0% fewer votes" in votes.verdict


def test_unusable_curves_are_refused():
    good = curve(LABELS, straight(LABELS))
    with pytest.raises(ValueError, match=r"active learning curve has missing or infinite values at points \[2\]"):
        paired_savings([(curve(LABELS, [1.0, 0.9, np.nan, 0.8, 0.7]), good)])
    with pytest.raises(ValueError, match="baseline learning curve's labels fall from 300 to 200 at point 3"):
        curve_savings(LABELS, straight(LABELS), [100, 200, 300, 200], [1.0, 0.9, 0.8, 0.7])
    with pytest.raises(KeyError, match=r"active learning curve of pair 1 has no column \['votes_used'\]"):
        paired_savings([(good, good)], axis="votes_used")
    with pytest.raises(ValueError, match="expected at least one"):
        paired_savings([])


def test_plot_learning_curves(tmp_path):
    out = plot_learning_curves({"a": curve(LABELS, straight(LABELS))}, tmp_path / "c.png")
    assert out.stat().st_size > 1000


IDENTITY = {"schema": "smooth-or-featured", "test_ids_sha256": "t", "start_labelled_ids_sha256": "s",
            "oracle": {"kind": "simulated", "delay": 0}}


def write_iterations(experiment: Path, losses, votes=None, identity=IDENTITY) -> Path:
    """Complete iteration folders with their metrics.json, as the loop leaves them."""
    for n, loss in enumerate(losses, start=1):
        folder = experiment / "iterations" / f"iteration_{n:03d}"
        folder.mkdir(parents=True)
        metrics = {"iteration": n, "n_labelled": 100 * n, "test_loss": loss, "identity": identity}
        if votes is not None:
            metrics["votes_used"] = votes[n - 1]
        (folder / "metrics.json").write_text(json.dumps(metrics))
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
    # active's 0.7 beats random's best; random's 0.8 is where the active fit is at 150 labels
    assert "galaxies: one seed: no interval; saving +25% (active needed 25% fewer galaxies) at 1 matched points" in good.output
    assert plot.stat().st_size > 1000
    assert "votes: not recorded (votes_used missing from active 1, baseline 1)" in good.output


def test_report_cli_prints_savings_in_galaxies_and_votes_for_one_seed(tmp_path):
    write_iterations(tmp_path / "bald", [0.9, 0.8, 0.7], votes=[4000, 12000, 16000])
    write_iterations(tmp_path / "random", [0.9, 0.85, 0.8], votes=[4000, 8000, 12000])
    result = runner.invoke(app, ["report", str(tmp_path / "bald"), "--baseline", str(tmp_path / "random")])
    assert result.exit_code == 0, result.output
    # BALD's 0.8 at 200 galaxies and 12,000 votes, random's at 300 galaxies and 12,000 votes; read the
    # other way, random's 0.85 and 0.8 at 200 and 300 galaxies, BALD's at 150 and 200: log ratios
    # log(3/2) forward, median(log(3/4), log(2/3)) reverse, R = their half difference
    saving = 1 - np.exp(-(np.log(1.5) - (np.log(0.75) + np.log(2 / 3)) / 2) / 2)
    assert f"galaxies: one seed: no interval; saving {saving:+.0%} (active needed {saving:.0%} fewer galaxies) at 3 matched points" in result.output
    assert "votes: one seed: no interval; saving +0% (active needed 0% fewer votes) at 3 matched points" in result.output
    assert "definition: saving = 1 - exp(-R)" in result.output


def test_report_cli_pairs_seeds_in_order(tmp_path):
    for seed, loss in enumerate([0.75, 0.7, 0.8]):  # per-pair savings 0.224, 0.272, 0.150
        write_iterations(tmp_path / f"bald{seed}", [0.9, loss, 0.6, 0.55])
        write_iterations(tmp_path / f"random{seed}", [0.9, 0.8, 0.7, 0.6])
    actives = [str(tmp_path / f"bald{seed}") for seed in range(3)]
    baselines = [a for seed in range(3) for a in ("--baseline", str(tmp_path / f"random{seed}"))]
    result = runner.invoke(app, ["report", *actives, *baselines])
    assert result.exit_code == 0, result.output
    assert "learning curve: active 3 (bald2)" in result.output and "learning curve: baseline 1 (random0)" in result.output
    assert "(3 paired seeds)" in result.output
    assert "galaxies: active needed 22% fewer galaxies: mean saving +22%, 90% interval +11% to +31%" in result.output
    assert "votes: not recorded" in result.output
    mismatched = runner.invoke(app, ["report", *actives, *baselines[:2]])
    assert mismatched.exit_code == 1
    assert "expected one --baseline per active experiment, paired in order (same seeds); got 3 active and 1 baseline" in (
        mismatched.output)


def test_report_cli_refuses_runs_that_do_not_share_splits_or_oracle(tmp_path):
    write_iterations(tmp_path / "bald", [0.9, 0.8, 0.7])
    write_iterations(tmp_path / "random", [0.9, 0.85, 0.8], identity={**IDENTITY, "test_ids_sha256": "other"})
    result = runner.invoke(app, ["report", str(tmp_path / "bald"), "--baseline", str(tmp_path / "random")])
    assert result.exit_code == 1
    assert "these runs cannot be compared: test_ids_sha256:" in result.output
    assert "has 't'," in result.output and "has 'other'" in result.output


def test_report_cli_reads_a_comparison_folder(tmp_path):
    runs = []
    for seed, loss in zip((1, 2, 3), (0.75, 0.7, 0.8)):
        write_iterations(tmp_path / f"bald_seed{seed}", [0.9, loss, 0.6, 0.55])
        write_iterations(tmp_path / f"random_seed{seed}", [0.9, 0.8, 0.7, 0.6])
        runs += [{"acquisition": a, "seed": seed, "folder": f"{a}_seed{seed}"} for a in ("bald", "random")]
    (tmp_path / "comparison.json").write_text(json.dumps({"runs": runs}))
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "learning curve: bald (bald_seed3)" in result.output and "learning curve: random (random_seed1)" in result.output
    assert "label savings of bald against random at matched test_loss (3 paired seeds)" in result.output
    assert "galaxies: active needed 22% fewer galaxies: mean saving +22%, 90% interval +11% to +31%" in result.output
