"""Credible and posterior predictive intervals, and their coverage (zoobot.uncertainty)."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import zoobot.uncertainty as uncertainty
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED, Question, Schema
from zoobot.uncertainty import (
    coverage,
    credible_interval,
    predictive_intervals,
    predictive_pmf,
    question_votes,
)

# a small tree: a root with three answers, and a two-answer question asked after one of them
TREE = Schema("tree", (Question("shape", ("round", "disk", "odd")), Question("bar", ("yes", "no"), ("shape_disk",))))


def binomial_mixture(rho, n):
    """(sample,) rho -> pmf of k = 0..n of the mixture of Binomial(n, rho_t), by scipy."""
    return stats.binom.pmf(np.arange(n + 1)[None], n, np.asarray(rho)[:, None]).mean(axis=0)


def sample_truth_binomial(rho, n, rng):
    """Votes drawn from the model itself: a random dropout sample t per galaxy, then Binomial(n, rho_t)."""
    t = rng.integers(0, rho.shape[1], len(rho))
    return rng.binomial(n, rho[np.arange(len(rho)), t, 0])


def sample_truth_dirichlet(alpha, votes, schema, rng):
    """Votes drawn from the model: per galaxy a sample t, per question p ~ Dirichlet(alpha_t), k ~ Multinomial(N, p)."""
    counts = np.zeros((len(alpha), schema.n_answers), dtype=np.int64)
    for g in range(len(alpha)):
        t = rng.integers(0, alpha.shape[1])
        for q, (start, stop) in enumerate(schema.answer_groups):
            p = rng.dirichlet(alpha[g, t, start:stop])
            counts[g, start:stop] = rng.multinomial(votes[g, q], p)
    return counts


def assert_same_report(report, expected):
    """Equal up to the summation order of floats."""
    if isinstance(expected, dict):
        assert report.keys() == expected.keys()
        for key in expected:
            assert_same_report(report[key], expected[key])
    elif isinstance(expected, list):
        assert len(report) == len(expected)
        for got, want in zip(report, expected):
            assert_same_report(got, want)
    elif isinstance(expected, float):
        assert report == pytest.approx(expected, abs=2e-6)
    else:
        assert report == expected


# ---------------------------------------------------------------- the pmf


def test_binomial_pmf_is_the_mixture_of_binomials_and_matches_monte_carlo():
    rng = np.random.default_rng(0)
    rho = rng.uniform(0, 1, size=(4, 7, 1))
    rho[0, 0, 0], rho[1, 1, 0] = 0.0, 1.0  # the ends: 0 log 0 = 0
    votes = np.array([[30], [5], [1], [12]])
    pmf = predictive_pmf(rho, SMOOTH_OR_FEATURED, votes)  # (galaxy, answer, K)
    assert pmf.shape == (4, 2, 31)
    for g, n in enumerate(votes[:, 0]):
        np.testing.assert_allclose(pmf[g, 0, : n + 1], binomial_mixture(rho[g, :, 0], n), atol=1e-12)
        np.testing.assert_allclose(pmf[g, 1, : n + 1], binomial_mixture(1 - rho[g, :, 0], n), atol=1e-12)
        assert (pmf[g, :, n + 1 :] == 0).all()
    # brute force: draw a sample, then the votes
    draws = 200_000
    t = rng.integers(0, 7, draws)
    k = rng.binomial(30, rho[0, t, 0])
    empirical = np.bincount(k, minlength=31) / draws
    assert np.abs(empirical - pmf[0, 0]).max() < 4 * np.sqrt(pmf[0, 0].max() / draws)


def test_dirichlet_marginal_is_beta_binomial_by_enumeration_and_monte_carlo():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(0.3, 20, size=(2, 5, TREE.n_answers))
    votes = np.array([[6, 3], [9, 0]])  # (galaxy, question); no votes on bar for the second galaxy
    pmf = predictive_pmf(alpha, TREE, votes)
    # exact: enumerate every count vector of the root question with scipy's Dirichlet-multinomial
    n = 6
    marginal = np.zeros((3, n + 1))
    for k in itertools.product(range(n + 1), repeat=3):
        if sum(k) == n:
            p = np.mean([stats.dirichlet_multinomial.pmf(k, alpha[0, t, :3], n) for t in range(5)])
            for a in range(3):
                marginal[a, k[a]] += p
    np.testing.assert_allclose(pmf[0, :3, : n + 1], marginal, atol=1e-12)
    # Beta-binomial per sample, averaged, on every galaxy and question
    for g, q in itertools.product(range(2), range(2)):
        start, stop = TREE.answer_groups[q]
        n = votes[g, q]
        for a in range(start, stop):
            b = alpha[g, :, start:stop].sum(axis=1) - alpha[g, :, a]
            expected = stats.betabinom.pmf(np.arange(n + 1)[None], n, alpha[g, :, a][:, None], b[:, None]).mean(axis=0)
            np.testing.assert_allclose(pmf[g, a, : n + 1], expected, atol=1e-12)
            assert (pmf[g, a, n + 1 :] == 0).all()
    assert pmf[1, 3:, 0] == pytest.approx([1, 1])  # N = 0: k = 0 for sure
    # brute force: a sample, then p ~ Dirichlet(alpha_t), then the votes
    draws = 100_000
    t = rng.integers(0, 5, draws)
    p = np.stack([rng.dirichlet(alpha[1, s, :3]) for s in t])
    k = np.stack([rng.multinomial(9, row) for row in p])  # (draw, answer)
    for a in range(3):
        empirical = np.bincount(k[:, a], minlength=10) / draws
        assert np.abs(empirical - pmf[1, a, :10]).max() < 4 * np.sqrt(pmf[1, a].max() / draws)


def test_pmf_is_exact_for_extreme_concentrations_and_sums_to_one():
    alpha = np.array([[[1e5, 1.0, 1.0], [0.01, 0.01, 50.0]]])  # (1 galaxy, 2 samples, 3 answers)
    schema = Schema("one", (Question("q", ("a", "b", "c")),))
    pmf = predictive_pmf(alpha, schema, 150)
    np.testing.assert_allclose(pmf.sum(axis=-1), 1.0, atol=1e-9)
    expected = stats.betabinom.pmf(np.arange(151), 150, alpha[0, :, 0, None], alpha[0, :, 1:].sum(-1)[:, None]).mean(0)
    np.testing.assert_allclose(pmf[0, 0], expected, atol=1e-9)


# ---------------------------------------------------------------- the intervals


def test_intervals_are_equal_tailed_discrete_quantiles():
    rng = np.random.default_rng(2)
    rho = rng.uniform(0, 1, size=(30, 6, 1))
    votes = rng.integers(1, 50, size=(30, 1))
    levels = (0.5, 0.9)
    low, high = predictive_intervals(rho, SMOOTH_OR_FEATURED, votes, levels)
    assert low.shape == high.shape == (2, 30, 2) and low.dtype == np.int64
    for g in range(30):
        n = votes[g, 0]
        for a, rho_a in enumerate((rho[g, :, 0], 1 - rho[g, :, 0])):
            cdf = np.cumsum(binomial_mixture(rho_a, n))
            for i, level in enumerate(levels):
                assert low[i, g, a] == np.argmax(cdf >= (1 - level) / 2 - 1e-12)
                assert high[i, g, a] == np.argmax(cdf >= (1 + level) / 2 - 1e-12)
                assert cdf[high[i, g, a]] - (cdf[low[i, g, a] - 1] if low[i, g, a] else 0) >= level - 1e-12
    # hand-made: a point mass at rho = 0 or 1, and one fair vote
    low, high = predictive_intervals(np.array([[[0.0]], [[1.0]], [[0.5]]]), SMOOTH_OR_FEATURED, np.array([[40], [40], [1]]))
    assert low[0].tolist() == [[0, 40], [40, 0], [0, 0]] and high[0].tolist() == [[0, 40], [40, 0], [1, 1]]


def test_credible_interval_is_the_percentiles_of_the_sampled_fractions():
    rng = np.random.default_rng(3)
    alpha = rng.uniform(1, 30, size=(5, 11, DECALS_DR5.n_answers))
    low, high = credible_interval(alpha, DECALS_DR5, 0.8)
    fractions = DECALS_DR5.expected_fractions(alpha)
    np.testing.assert_allclose(low, np.percentile(fractions, 10, axis=1))
    np.testing.assert_allclose(high, np.percentile(fractions, 90, axis=1))


def test_blocks_and_chunks_do_not_change_the_answer(monkeypatch):
    rng = np.random.default_rng(4)
    alpha = rng.uniform(0.5, 40, size=(23, 4, DECALS_DR5.n_answers))
    votes = rng.integers(0, 60, size=(23, DECALS_DR5.n_questions))
    whole = predictive_intervals(alpha, DECALS_DR5, votes, (0.68, 0.95))
    counts = sample_truth_dirichlet(alpha, votes, DECALS_DR5, rng)
    report = coverage(alpha, counts, DECALS_DR5, max_error=3)
    monkeypatch.setattr(uncertainty, "CHUNK_GALAXIES", 5)
    monkeypatch.setattr(uncertainty, "BLOCK_ELEMENTS", 100)  # one galaxy per block
    pieces = predictive_intervals(alpha, DECALS_DR5, votes, (0.68, 0.95))
    np.testing.assert_array_equal(whole[0], pieces[0])
    np.testing.assert_array_equal(whole[1], pieces[1])
    assert_same_report(coverage(alpha, counts, DECALS_DR5, max_error=3), report)


def test_bad_inputs_are_refused_with_the_reason():
    rho = np.full((3, 2, 1), 0.5)
    with pytest.raises(ValueError, match="rho in \\[0, 1\\].*rows \\[1\\]"):
        predictive_intervals(np.array([[[0.5]], [[np.nan]], [[0.2]]]), SMOOTH_OR_FEATURED)
    with pytest.raises(ValueError, match="concentrations > 0.*rows \\[0\\]"):
        predictive_intervals(np.zeros((1, 2, DECALS_DR5.n_answers)), DECALS_DR5)
    with pytest.raises(ValueError, match="shape \\(galaxy, sample, output\\)"):
        predictive_intervals(rho[:, 0], SMOOTH_OR_FEATURED)
    with pytest.raises(ValueError, match="levels: expected probabilities strictly between 0 and 1"):
        predictive_intervals(rho, SMOOTH_OR_FEATURED, levels=(0.9, 1.0))
    with pytest.raises(ValueError, match="votes: expected a whole number of volunteers >= 1, got 0"):
        predictive_intervals(rho, SMOOTH_OR_FEATURED, votes=0)
    with pytest.raises(ValueError, match="votes: expected an int or shape \\(3, 1\\)"):
        predictive_intervals(rho, SMOOTH_OR_FEATURED, votes=np.ones((3, 2), int))
    with pytest.raises(ValueError, match="counts: expected shape \\(3, 2\\)"):
        coverage(rho, np.ones((3, 3), int), SMOOTH_OR_FEATURED)
    with pytest.raises(ValueError, match="max_error"):
        coverage(rho, np.ones((3, 2), int), SMOOTH_OR_FEATURED, max_error=-1)
    with pytest.raises(ValueError, match="expects 1 output"):
        coverage(np.ones((3, 2, 5)), np.ones((3, 2), int), SMOOTH_OR_FEATURED)


# ---------------------------------------------------------------- coverage


def assert_calibrated(row, n_sigma=4.0):
    assert abs(row["observed"] - row["predicted"]) < n_sigma * row["stderr"] + 1e-9, row


def test_a_well_specified_binomial_model_covers_as_predicted_and_the_credible_interval_does_not():
    rng = np.random.default_rng(5)
    n_galaxies, n_samples = 3000, 20
    centre = rng.beta(2, 2, n_galaxies)
    rho = rng.beta(30 * centre[:, None] + 1, 30 * (1 - centre[:, None]) + 1, size=(n_galaxies, n_samples))[..., None]
    votes = rng.integers(20, 60, n_galaxies)
    k = sample_truth_binomial(rho, votes, rng)
    counts = np.stack([k, votes - k], axis=1)
    report = coverage(rho, counts, SMOOTH_OR_FEATURED)
    json.dumps(report, allow_nan=False)
    question = report["questions"]["smooth-or-featured"]
    assert question["n_galaxies"] == n_galaxies and question["n_pairs"] == 2 * n_galaxies
    assert question["mean_votes"] == pytest.approx(votes.mean(), abs=1e-3)
    for row in question["intervals"]:
        assert row["predicted"] >= row["level"]  # the discrete interval holds at least L
        assert_calibrated(row)
        assert row["credible_observed"] < row["level"] - 0.1  # the credible interval is not for votes
    assert question["calibration_error"] < 0.03
    for row in question["within"]:
        assert_calibrated(row)
    assert [r["predicted"] for r in question["within"]] == sorted(r["predicted"] for r in question["within"])
    assert report["all"]["intervals"] == question["intervals"]  # one question: pooled = that question


def test_an_overconfident_model_under_covers():
    rng = np.random.default_rng(6)
    n_galaxies, n_samples = 3000, 20
    centre = rng.beta(2, 2, n_galaxies)
    rho = rng.beta(10 * centre[:, None] + 1, 10 * (1 - centre[:, None]) + 1, size=(n_galaxies, n_samples))[..., None]
    k = sample_truth_binomial(rho, 40, rng)
    counts = np.stack([k, 40 - k], axis=1)
    # the model reports only its mean: no spread across samples, while the truth has it
    overconfident = np.repeat(rho.mean(axis=1, keepdims=True), n_samples, axis=1)
    honest = coverage(rho, counts, SMOOTH_OR_FEATURED)["questions"]["smooth-or-featured"]
    narrow = coverage(overconfident, counts, SMOOTH_OR_FEATURED)["questions"]["smooth-or-featured"]
    for good, bad in zip(honest["intervals"], narrow["intervals"]):
        assert_calibrated(good)
        assert bad["observed"] < bad["predicted"] - 4 * bad["stderr"]
        assert bad["observed"] < bad["level"]
        assert bad["credible_observed"] < 0.01  # identical samples: a credible interval of width 0
    assert narrow["calibration_error"] > 3 * honest["calibration_error"]


def test_a_well_specified_tree_counts_only_questions_with_votes():
    rng = np.random.default_rng(7)
    n_galaxies, n_samples = 1500, 10
    base = rng.dirichlet(np.ones(TREE.n_answers), n_galaxies)  # (galaxy, answer), a galaxy's typical shape
    alpha = rng.gamma(20 * base[:, None, :] + 0.5, 1.0, size=(n_galaxies, n_samples, TREE.n_answers)) + 0.1
    votes = np.stack([rng.integers(10, 50, n_galaxies), rng.integers(0, 20, n_galaxies)], axis=1)
    votes[:100, 1] = 0  # the bar question was never asked of these
    counts = sample_truth_dirichlet(alpha, votes, TREE, rng)
    np.testing.assert_array_equal(question_votes(counts, TREE), votes)
    report = coverage(alpha, counts, TREE, levels=(0.5, 0.9), max_error=5)
    bar = report["questions"]["bar"]
    assert bar["n_galaxies"] == int((votes[:, 1] >= 1).sum()) and bar["n_pairs"] == 2 * bar["n_galaxies"]
    assert report["questions"]["shape"]["n_pairs"] == 3 * n_galaxies
    assert report["all"]["n_galaxies"] == n_galaxies and report["all"]["n_pairs"] == 3 * n_galaxies + 2 * bar["n_galaxies"]
    assert bar["mean_votes"] == pytest.approx(votes[votes[:, 1] >= 1, 1].mean(), abs=1e-3)
    assert report["all"]["mean_votes"] == pytest.approx(votes[votes >= 1].mean(), abs=1e-3)
    for part in (report["questions"]["shape"], bar, report["all"]):
        for row in part["intervals"] + part["within"]:
            assert_calibrated(row)
    assert report["questions"]["shape"]["intervals"][1]["credible_observed"] < 0.8


def test_coverage_reads_memory_mapped_samples_in_chunks(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    rho = rng.uniform(0.05, 0.95, size=(50, 3, 1)).astype(np.float32)
    counts = np.stack([rng.binomial(30, rho[:, 0, 0]), np.zeros(50, int)], axis=1)
    counts[:, 1] = 30 - counts[:, 0]
    np.save(tmp_path / "samples.npy", rho)
    monkeypatch.setattr(uncertainty, "CHUNK_GALAXIES", 7)
    mapped = coverage(np.load(tmp_path / "samples.npy", mmap_mode="r"), counts, SMOOTH_OR_FEATURED)
    monkeypatch.setattr(uncertainty, "CHUNK_GALAXIES", 8192)
    assert_same_report(mapped, coverage(rho, counts, SMOOTH_OR_FEATURED))


# ---------------------------------------------------------------- zoobot coverage


@pytest.fixture
def predicted(tmp_path):
    """A prediction catalog with samples (DECaLS tree, 60 galaxies) and votes drawn from it."""
    from zoobot.prediction_writer import write_predictions

    rng = np.random.default_rng(9)
    schema = DECALS_DR5
    base = rng.dirichlet(np.ones(schema.n_answers), 60)
    alpha = (rng.gamma(10 * base[:, None, :] + 1, 1.0, size=(60, 8, schema.n_answers)) + 0.5).astype(np.float32)
    votes = rng.integers(0, 40, size=(60, schema.n_questions))
    counts = sample_truth_dirichlet(alpha, votes, schema, rng)
    ids = np.array([f"galaxy-{i}" for i in range(60)])
    out = tmp_path / "eval.parquet"
    write_predictions(iter([(ids[:25], alpha[:25]), (ids[25:], alpha[25:])]), out, schema, n_galaxies=60, save_samples=True)
    catalog = pd.DataFrame(counts, columns=schema.answer_columns)
    catalog.insert(0, "id_str", ids)
    return {"predictions": out, "catalog": catalog, "alpha": alpha, "counts": counts, "ids": ids, "folder": tmp_path}


def run_coverage(*args):
    from typer.testing import CliRunner

    from zoobot.cli import app

    return CliRunner().invoke(app, ["coverage", *map(str, args)])


def test_cli_coverage_writes_json_csv_and_plot(predicted):
    folder = predicted["folder"]
    extra = pd.DataFrame([{"id_str": "not-predicted", **{c: 1 for c in DECALS_DR5.answer_columns}}])
    shuffled = pd.concat([predicted["catalog"].iloc[::-1], extra])  # another order, one galaxy more
    shuffled.to_csv(folder / "votes.csv", index=False)
    refused = run_coverage(predicted["predictions"], folder / "votes.csv", "--out", folder / "cov")
    assert refused.exit_code == 1 and "1 galaxies that were not predicted: not-predicted" in refused.output
    assert "--ignore-extra" in refused.output
    done = run_coverage(predicted["predictions"], folder / "votes.csv", "--out", folder / "cov", "--ignore-extra",
                        "--level", "0.5", "--level", "0.9", "--max-error", "4")
    assert done.exit_code == 0, done.output
    assert "coverage of the posterior predictive intervals" in done.output and "bulge-size" in done.output
    report = json.loads((folder / "cov" / "coverage.json").read_text())
    expected = coverage(predicted["alpha"], predicted["counts"], DECALS_DR5, (0.5, 0.9), 4)
    assert_same_report({k: report[k] for k in expected}, expected)  # votes matched by id_str, not by row
    assert report["predictions"].endswith("eval.parquet") and report["catalog"].endswith("votes.csv")
    table = pd.read_csv(folder / "cov" / "coverage.csv")
    assert len(table) == (DECALS_DR5.n_questions + 1) * (2 + 5)
    row = table[(table.question == "all") & (table.kind == "interval") & (table.level == 0.9)].iloc[0]
    assert row.observed == pytest.approx(report["all"]["intervals"][1]["observed"])
    assert (folder / "cov" / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (folder / "cov").iterdir()) == ["coverage.csv", "coverage.json", "coverage.png"]


def test_cli_coverage_names_what_is_wrong(predicted):
    folder = predicted["folder"]
    catalog = predicted["catalog"]
    catalog.iloc[3:].to_csv(folder / "short.csv", index=False)
    short = run_coverage(predicted["predictions"], folder / "short.csv", "--out", folder / "cov")
    assert short.exit_code == 1 and "no votes for 3 predicted galaxies: galaxy-0, galaxy-1, galaxy-2" in short.output
    catalog.drop(columns=["bar_weak"]).to_csv(folder / "other.csv", index=False)
    other = run_coverage(predicted["predictions"], folder / "other.csv", "--out", folder / "cov")
    assert other.exit_code == 1 and "no vote columns bar_weak (1 in all) of the predictions' schema 'decals-dr5'" in other.output
    bad = catalog.astype({"bar_weak": float})
    bad.loc[5, "bar_weak"] = np.nan
    bad.to_csv(folder / "nan.csv", index=False)
    nan = run_coverage(predicted["predictions"], folder / "nan.csv", "--out", folder / "cov")
    assert nan.exit_code == 1 and "'bar_weak' is empty or not a number for ids galaxy-5" in nan.output
    catalog.to_csv(folder / "votes.csv", index=False)
    level = run_coverage(predicted["predictions"], folder / "votes.csv", "--out", folder / "cov", "--level", "95")
    assert level.exit_code == 1 and "levels: expected probabilities strictly between 0 and 1" in level.output
    (folder / "eval_samples.npy").unlink()
    no_samples = run_coverage(predicted["predictions"], folder / "votes.csv", "--out", folder / "cov")
    assert no_samples.exit_code == 1 and "predict again with --save-samples" in no_samples.output
    assert not (folder / "cov").exists()
