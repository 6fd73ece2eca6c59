"""Recalibration of the predictive intervals: fitted on one split, judged on another (zoobot.recalibration)."""

import json

import numpy as np
import pandas as pd
import pytest

from zoobot.recalibration import GRID, check_disjoint, fit_levels, used_levels
from zoobot.schema import SMOOTH_OR_FEATURED, Question, Schema
from zoobot.uncertainty import coverage

QUESTION = "smooth-or-featured"


def binomial_model(rng, n_galaxies, spread, votes=40, n_samples=20):
    """Votes drawn from rho ~ Beta around each galaxy's centre; returns (model samples, counts).

    ``spread`` scales the model's own spread across samples against the truth's: 1 is honest,
    0 reports the mean only (overconfident), and the truth's own concentration is fixed.
    """
    centre = rng.beta(2, 2, n_galaxies)
    truth = rng.beta(10 * centre[:, None] + 1, 10 * (1 - centre[:, None]) + 1, size=(n_galaxies, n_samples))
    k = rng.binomial(votes, truth[np.arange(n_galaxies), rng.integers(0, n_samples, n_galaxies)])
    mean = truth.mean(axis=1, keepdims=True)
    rho = np.clip(mean + spread * (truth - mean), 1e-4, 1 - 1e-4)[..., None]  # (galaxy, sample, 1)
    return rho, np.stack([k, votes - k], axis=1)


def intervals(report):
    return report["questions"][QUESTION]["intervals"]


def test_an_overconfident_model_gets_wider_intervals_that_hold_on_other_galaxies():
    rng = np.random.default_rng(11)
    rho, counts = binomial_model(rng, 4000, spread=0.4)
    fit = fit_levels(rho[:2000], counts[:2000], SMOOTH_OR_FEATURED)
    used = fit["questions"][QUESTION]["used_levels"]
    assert all(u > nominal + 0.02 for u, nominal in zip(used, fit["levels"]))  # wider than nominal
    assert fit["questions"][QUESTION]["reached"] == [True] * 4
    before = coverage(rho[2000:], counts[2000:], SMOOTH_OR_FEATURED)
    after = coverage(rho[2000:], counts[2000:], SMOOTH_OR_FEATURED, used_levels=used_levels(fit))
    for old, new in zip(intervals(before), intervals(after)):
        assert old["observed"] < old["level"] - 0.05  # under-covers before
        assert new["observed"] > new["level"] - 4 * new["stderr"]  # at least nominal after, on held-out galaxies
        assert abs(new["observed"] - new["level"]) < abs(old["observed"] - old["level"]) / 2
        assert new["used_level"] in GRID and "used_level" not in old


def test_an_underconfident_model_gets_narrower_intervals():
    rng = np.random.default_rng(12)
    rho, counts = binomial_model(rng, 4000, spread=2.5)
    fit = fit_levels(rho[:2000], counts[:2000], SMOOTH_OR_FEATURED)
    used = fit["questions"][QUESTION]["used_levels"]
    assert all(u < nominal for u, nominal in zip(used, fit["levels"]))
    before = coverage(rho[2000:], counts[2000:], SMOOTH_OR_FEATURED)
    after = coverage(rho[2000:], counts[2000:], SMOOTH_OR_FEATURED, used_levels=used_levels(fit))
    for old, new in zip(intervals(before), intervals(after)):
        assert old["observed"] > old["level"] + 0.03  # over-covers before
        assert old["observed"] > new["observed"] > new["level"] - 4 * new["stderr"]


def test_a_calibrated_model_keeps_about_its_levels():
    rng = np.random.default_rng(13)
    rho, counts = binomial_model(rng, 3000, spread=1.0)
    fit = fit_levels(rho, counts, SMOOTH_OR_FEATURED, levels=(0.5, 0.9))
    observed = {r["level"]: r["observed"] for r in intervals(coverage(rho, counts, SMOOTH_OR_FEATURED, (0.5, 0.9)))}
    for nominal, used in zip(fit["levels"], fit["questions"][QUESTION]["used_levels"]):
        # the discrete intervals hold a little more than L, so L' sits at or below L, never far
        assert nominal - 0.15 < used <= nominal + 0.01, (nominal, used, observed)


def test_unreachable_levels_and_questions_without_votes_are_reported():
    rng = np.random.default_rng(14)
    tree = Schema("pair", (Question("a", ("x", "y")), Question("b", ("u", "v", "w"), ("a_x",))))
    alpha = np.full((50, 4, tree.n_answers), 1000.0)
    alpha[:, :, 0] *= 50  # answer x near-certain for every galaxy in every sample
    counts = np.zeros((50, tree.n_answers), np.int64)
    counts[:, 1] = 30  # ...but every vote says y
    fit = fit_levels(alpha, counts, tree, levels=(0.5, 0.9))
    assert fit["questions"]["a"]["reached"] == [False, False]
    assert fit["questions"]["a"]["used_levels"] == [max(GRID)] * 2
    assert fit["questions"]["b"] == {"used_levels": [0.5, 0.9], "reached": [False, False], "n_galaxies": 0}
    json.dumps(fit, allow_nan=False)


def test_bad_used_levels_and_shared_galaxies_are_refused():
    rho, counts = binomial_model(np.random.default_rng(15), 20, spread=1.0)
    with pytest.raises(ValueError, match="expected questions of schema 'smooth-or-featured', got \\['bar'\\]"):
        coverage(rho, counts, SMOOTH_OR_FEATURED, used_levels={"bar": [0.5, 0.6, 0.9, 0.95]})
    with pytest.raises(ValueError, match="expected 4 levels"):
        coverage(rho, counts, SMOOTH_OR_FEATURED, used_levels={QUESTION: [0.9]})
    with pytest.raises(ValueError, match="2 galaxies are in both .*: g1, g2"):
        check_disjoint(["g0", "g1", "g2"], ["g1", "g2", "g3"])


def test_cli_recalibrates_on_val_and_reports_test_before_and_after(tmp_path):
    from typer.testing import CliRunner

    from zoobot.cli import app
    from zoobot.prediction_writer import write_predictions

    rho, counts = binomial_model(np.random.default_rng(16), 1200, spread=0.0)
    ids = np.array([f"g{i}" for i in range(1200)])
    for name, rows in [("val", slice(0, 600)), ("test", slice(600, 1200))]:
        write_predictions(iter([(ids[rows], rho[rows].astype(np.float32))]), tmp_path / f"{name}.parquet",
                          SMOOTH_OR_FEATURED, n_galaxies=600, save_samples=True)
    catalog = pd.DataFrame(counts, columns=SMOOTH_OR_FEATURED.answer_columns)
    catalog.insert(0, "id_str", ids)
    catalog.to_csv(tmp_path / "votes.csv", index=False)
    run = CliRunner().invoke(app, ["coverage", str(tmp_path / "test.parquet"), str(tmp_path / "votes.csv"),
                                   "--out", str(tmp_path / "cov"), "--ignore-extra",
                                   "--recalibrate-on", str(tmp_path / "val.parquet")])
    assert run.exit_code == 0, run.output
    assert "after recalibration fitted on 600 galaxies" in run.output
    report = json.loads((tmp_path / "cov" / "coverage.json").read_text())
    fit = json.loads((tmp_path / "cov" / "recalibration.json").read_text())
    assert fit["fitted_on"].endswith("val.parquet")
    before, after = report["all"]["intervals"][2], report["recalibrated"]["all"]["intervals"][2]
    assert before["level"] == after["level"] == 0.9
    assert before["observed"] < 0.85 and abs(after["observed"] - 0.9) < 0.05
    table = pd.read_csv(tmp_path / "cov" / "coverage.csv")
    assert set(table.kind) == {"interval", "within", "recalibrated"}
    same = CliRunner().invoke(app, ["coverage", str(tmp_path / "test.parquet"), str(tmp_path / "votes.csv"),
                                    "--out", str(tmp_path / "cov2"), "--ignore-extra",
                                    "--recalibrate-on", str(tmp_path / "test.parquet")])
    assert same.exit_code == 1 and "600 galaxies are in both" in same.output
    assert not (tmp_path / "cov2").exists()
