"""Acquisition functions: BALD maths against hand and textbook cases, estimators, selection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from zoobot import acquisition as acq
from zoobot.acquisition import entropy
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED, Question, Schema, get_schema

LOG2 = math.log(2.0)


def textbook_bald(probs: np.ndarray) -> np.ndarray:
    """Houlsby et al. 2011 over class probabilities (galaxy, sample, class), written plainly."""
    mean = probs.mean(axis=1)
    entropy_of_mean = -np.sum(np.where(mean > 0, mean * np.log(np.where(mean > 0, mean, 1)), 0), axis=-1)
    entropies = -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0), axis=-1)
    return entropy_of_mean - entropies.mean(axis=1)


def brute_force_dirmult(alpha: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """H[mean p] and mean H[p] by listing every outcome and scipy's Dirichlet-multinomial pmf."""
    n_galaxies, n_samples, n_answers = alpha.shape
    outcomes = [c for c in itertools.product(range(n + 1), repeat=n_answers) if sum(c) == n]
    entropy_of_mean, mean_entropy = [], []
    for g in range(n_galaxies):
        p = np.array(
            [[stats.dirichlet_multinomial.pmf(c, alpha[g, t], n) for c in outcomes] for t in range(n_samples)]
        )
        p_mean = p.mean(axis=0)
        entropy_of_mean.append(-np.sum(p_mean * np.log(p_mean)))
        mean_entropy.append(-np.sum(p * np.log(p), axis=1).mean())
    return np.array(entropy_of_mean), np.array(mean_entropy)


def random_alpha(rng, n_galaxies, n_samples, n_answers, scale=(1.0, 30.0)):
    """Concentrations that vary across dropout samples around a per-galaxy mean."""
    fractions = rng.dirichlet(np.ones(n_answers), size=(n_galaxies, 1))
    total = rng.uniform(*scale, size=(n_galaxies, 1, 1))
    jitter = np.exp(rng.normal(0, 0.5, size=(n_galaxies, n_samples, n_answers)))
    return fractions * total * jitter + 1e-3


def decals_alpha(rng, n_galaxies, n_samples=5):
    parts = [random_alpha(rng, n_galaxies, n_samples, stop - start) for start, stop in DECALS_DR5.answer_groups]
    return np.concatenate(parts, axis=2)


# ---------------------------------------------------------------------------------------------
# binomial BALD


def test_binomial_bald_hand_cases():
    # two samples certain of opposite answers: one bit, whatever N
    assert acq.binomial_bald(np.array([[0.0, 1.0]]), 1)[0] == pytest.approx(LOG2, abs=1e-12)
    assert acq.binomial_bald(np.array([[0.0, 1.0]]), 40)[0] == pytest.approx(LOG2, abs=1e-12)
    # all samples agree: no information about the model, exactly
    equal = np.full((3, 15), [[0.0], [0.3], [1.0]])
    assert np.all(np.abs(acq.binomial_bald(equal, 40)) <= 1e-12)
    # four samples at 0, 0, 1, 1 with N = 1: still one bit
    assert acq.binomial_bald(np.array([[0, 0, 1, 1.0]]), 1)[0] == pytest.approx(LOG2, abs=1e-12)


def test_binomial_bald_with_one_vote_is_two_class_textbook_bald():
    rng = np.random.default_rng(0)
    rho = rng.uniform(size=(50, 7))
    rho[:5, :3] = 0.0  # exact zeros and ones take the 0 log 0 = 0 path
    rho[5:10, :2] = 1.0
    probs = np.stack([1 - rho, rho], axis=-1)  # (galaxy, sample, class)
    np.testing.assert_allclose(acq.binomial_bald(rho, 1), textbook_bald(probs), atol=1e-12)


def test_binomial_bald_matches_scipy_enumeration():
    rng = np.random.default_rng(1)
    rho = rng.uniform(size=(20, 6))
    n = 9
    pmf = stats.binom.pmf(np.arange(n + 1), n, rho[..., None])  # (galaxy, sample, outcome)
    np.testing.assert_allclose(acq.binomial_bald(rho, n), textbook_bald(pmf), atol=1e-12)
    np.testing.assert_allclose(
        acq.binomial_predictive_entropy(rho, n), stats.entropy(pmf.mean(axis=1), axis=-1), atol=1e-12
    )


def test_binomial_bald_bounds_on_random_inputs():
    rng = np.random.default_rng(2)
    rho = rng.beta(0.5, 0.5, size=(500, 15))
    for n in (1, 3, 40):
        mi = acq.binomial_bald(rho, n)
        assert mi.shape == (500,)
        assert np.all(mi >= 0)
        assert np.all(mi <= min(math.log(n + 1), math.log(15)) + 1e-12)
        assert np.all(acq.binomial_predictive_entropy(rho, n) >= mi - 1e-12)
    # more votes can only reveal more about the model
    assert np.all(acq.binomial_bald(rho, 40) >= acq.binomial_bald(rho, 5) - 1e-12)


def test_binomial_predictive_entropy_of_one_sample_is_binomial_entropy():
    rho = np.array([[0.2], [0.5], [0.93]])
    expected = [stats.binom(40, r).entropy() for r in rho[:, 0]]
    np.testing.assert_allclose(acq.binomial_predictive_entropy(rho, 40), expected, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Dirichlet-multinomial BALD, one question


def test_dirichlet_one_vote_is_textbook_bald_on_mean_fractions():
    # DirMult(1 vote | alpha) puts alpha_i / A on answer i: K-class BALD
    rng = np.random.default_rng(3)
    alpha = random_alpha(rng, 30, 8, 4)
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 1)
    probs = alpha / alpha.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(entropy_of_mean - mean_entropy, textbook_bald(probs), atol=1e-12)


def test_dirichlet_hand_case():
    # N = 1, samples (3, 1) and (1, 3): p = (.75, .25) and (.25, .75)
    alpha = np.array([[[3.0, 1.0], [1.0, 3.0]]])
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 1)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_of_mean[0] == pytest.approx(LOG2, abs=1e-12)
    assert mean_entropy[0] == pytest.approx(h, abs=1e-12)


@pytest.mark.parametrize("n_answers, n", [(2, 1), (2, 5), (3, 2), (3, 5), (4, 3)])
def test_dirichlet_exact_matches_brute_force(n_answers, n):
    rng = np.random.default_rng(10 * n_answers + n)
    alpha = random_alpha(rng, 4, 5, n_answers, scale=(0.3, 20))
    expected = brute_force_dirmult(alpha, n)
    got = acq.question_entropies(alpha, n)
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_dirichlet_all_samples_equal_gives_zero():
    rng = np.random.default_rng(4)
    alpha = np.repeat(random_alpha(rng, 6, 1, 3), 15, axis=1)
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 40)
    assert np.all(np.abs(entropy_of_mean - mean_entropy) <= 1e-12)
    assert np.all(entropy_of_mean > 1)  # there is plenty of vote noise, just no model information


def test_dirichlet_with_huge_concentrations_is_binomial():
    rng = np.random.default_rng(5)
    rho = rng.uniform(0.05, 0.95, size=(10, 6))
    alpha = 1e9 * np.stack([1 - rho, rho], axis=-1)
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 40)
    np.testing.assert_allclose(entropy_of_mean - mean_entropy, acq.binomial_bald(rho, 40), atol=1e-6)


def test_dirichlet_bounds_on_random_inputs():
    rng = np.random.default_rng(6)
    alpha = random_alpha(rng, 200, 10, 3, scale=(0.1, 100))
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 40)
    mi = entropy_of_mean - mean_entropy
    assert np.all(mi >= -1e-12)
    assert np.all(mi <= min(math.log(acq.n_vote_outcomes(3, 40)), math.log(10)) + 1e-12)


def test_single_answer_question_has_no_information():
    alpha = np.random.default_rng(7).uniform(0.5, 5, size=(4, 6, 1))
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 40)
    np.testing.assert_allclose(entropy_of_mean, 0, atol=1e-12)
    np.testing.assert_allclose(mean_entropy, 0, atol=1e-12)


def test_exact_path_does_not_depend_on_chunking(monkeypatch):
    rng = np.random.default_rng(8)
    alpha = random_alpha(rng, 37, 6, 3)
    whole = acq.question_entropies(alpha, 20)
    monkeypatch.setattr(entropy, "CHUNK_ELEMENTS", 1)  # one galaxy per chunk
    np.testing.assert_allclose(acq.question_entropies(alpha, 20), whole, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# Monte Carlo estimator, validated against enumeration


@pytest.mark.parametrize("n_answers, n", [(2, 4), (3, 5)])
def test_estimator_agrees_with_brute_force_on_small_cases(n_answers, n):
    rng = np.random.default_rng(20 + n_answers)
    alpha = random_alpha(rng, 4, 6, n_answers, scale=(0.5, 20))
    entropy_of_mean, mean_entropy = brute_force_dirmult(alpha, n)
    got_mean, got_expected = acq.question_entropies(alpha, n, rng=0, max_outcomes=0, draws_per_sample=4000)
    # stated tolerance: 0.01 nats on each term and on MI (about 4 standard errors here)
    np.testing.assert_allclose(got_mean, entropy_of_mean, atol=0.01)
    np.testing.assert_allclose(got_expected, mean_entropy, atol=0.01)
    np.testing.assert_allclose(got_mean - got_expected, entropy_of_mean - mean_entropy, atol=0.01)


def test_estimator_is_unbiased():
    rng = np.random.default_rng(30)
    alpha = random_alpha(rng, 3, 5, 3, scale=(1, 20))
    exact = np.subtract(*acq.question_entropies(alpha, 5))
    estimates = np.array(
        [np.subtract(*acq.question_entropies(alpha, 5, rng=seed, max_outcomes=0, draws_per_sample=16)) for seed in range(200)]
    )
    standard_error = estimates.std(axis=0) / math.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) < 4 * standard_error + 1e-4)
    assert np.all(estimates >= 0)  # every Rao-Blackwellised term is a KL divergence


def test_estimator_defaults_at_forty_votes():
    # 4 answers, 40 votes: 12341 outcomes, still enumerable, so the default estimator can be checked
    rng = np.random.default_rng(31)
    alpha = random_alpha(rng, 20, 15, 4, scale=(3, 50))
    assert acq.n_vote_outcomes(4, 40) == 12341
    exact = np.subtract(*acq.question_entropies(alpha, 40))
    sampled = np.subtract(*acq.question_entropies(alpha, 40, rng=1, max_outcomes=0))
    error = np.abs(sampled - exact)
    assert error.mean() < 0.01 and error.max() < 0.04  # documented in docs/acquisition.md
    # ranking is what acquisition needs: nearly the same order
    assert stats.spearmanr(sampled, exact).statistic > 0.95


def test_estimator_is_reproducible_given_rng():
    alpha = random_alpha(np.random.default_rng(32), 5, 4, 6)
    first = acq.question_entropies(alpha, 40, rng=7)
    again = acq.question_entropies(alpha, 40, rng=np.random.default_rng(7))
    other = acq.question_entropies(alpha, 40, rng=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0])


def test_estimator_handles_tiny_concentrations():
    alpha = np.full((2, 4, 5), 1e-6)
    alpha[1, :2] = 50.0
    entropy_of_mean, mean_entropy = acq.question_entropies(alpha, 40, max_outcomes=0)
    assert np.all(np.isfinite(entropy_of_mean)) and np.all(np.isfinite(mean_entropy))
    assert entropy_of_mean[0] == pytest.approx(math.log(5), abs=0.05)  # all votes on one answer, which unknown


# ---------------------------------------------------------------------------------------------
# trees: P(asked) weighting


TWO_LEVEL = Schema(
    "two-level",
    (
        Question("shape", ("round", "disk")),
        Question("arms", ("yes", "no", "maybe"), ("shape_disk",)),
    ),
)


def test_tree_weights_each_question_by_prob_asked():
    rng = np.random.default_rng(40)
    alpha = np.concatenate([random_alpha(rng, 6, 5, 2), random_alpha(rng, 6, 5, 3)], axis=2)
    per_question = acq.dirichlet_bald(alpha, TWO_LEVEL, 10, per_question=True)
    shape_mi = np.subtract(*acq.question_entropies(alpha[..., :2], 10))
    arms_mi = np.subtract(*acq.question_entropies(alpha[..., 2:], 10))
    p_disk = (alpha[..., 1] / alpha[..., :2].sum(axis=-1)).mean(axis=1)  # mean over samples
    np.testing.assert_allclose(per_question[:, 0], shape_mi, atol=1e-12)
    np.testing.assert_allclose(per_question[:, 1], p_disk * arms_mi, atol=1e-12)
    np.testing.assert_allclose(acq.dirichlet_bald(alpha, TWO_LEVEL, 10), per_question.sum(axis=1), atol=1e-12)


def test_question_never_asked_contributes_nothing():
    rng = np.random.default_rng(41)
    alpha = decals_alpha(rng, 4)
    featured = DECALS_DR5.answer_columns.index("smooth-or-featured_featured-or-disk")
    alpha[..., featured] = 1e-30  # nobody says featured, so the whole disk branch is never reached
    per_question = acq.dirichlet_bald(alpha, DECALS_DR5, per_question=True)
    disk_branch = [DECALS_DR5.question_names.index(q) for q in ("disk-edge-on", "bar", "spiral-arm-count")]
    assert np.all(per_question[:, disk_branch] <= 1e-28)
    # the child's predictions can be anything: the total does not move
    bar_start, bar_stop = DECALS_DR5.answer_groups[DECALS_DR5.question_names.index("bar")]
    changed = alpha.copy()
    changed[..., bar_start:bar_stop] = rng.uniform(0.1, 100, size=changed[..., bar_start:bar_stop].shape)
    np.testing.assert_allclose(
        acq.dirichlet_bald(changed, DECALS_DR5), acq.dirichlet_bald(alpha, DECALS_DR5), atol=1e-12
    )
    assert per_question[:, 0].min() > 0  # the root is always asked


def test_decals_scores_are_finite_nonnegative_and_bounded():
    rng = np.random.default_rng(42)
    alpha = decals_alpha(rng, 8)
    per_question = acq.dirichlet_bald(alpha, DECALS_DR5, per_question=True, rng=0)
    assert per_question.shape == (8, DECALS_DR5.n_questions)
    assert np.all(np.isfinite(per_question)) and np.all(per_question >= 0)
    assert np.all(per_question <= math.log(5) + 1e-12)  # each MI <= log(n_samples), each P(asked) <= 1
    entropy = acq.dirichlet_predictive_entropy(alpha, DECALS_DR5, rng=0)
    assert np.all(entropy >= per_question.sum(axis=1))


# ---------------------------------------------------------------------------------------------
# uniform interface and registry


def binomial_predictions(rng, n_galaxies=7, n_samples=5):
    return rng.uniform(size=(n_galaxies, n_samples, 1))


@pytest.mark.parametrize("name", sorted(acq.ACQUISITION_FUNCTIONS))
@pytest.mark.parametrize("kind", ["binomial", "dirichlet"])
def test_registry_contract(name, kind):
    rng = np.random.default_rng(50)
    if kind == "binomial":
        predictions, schema = binomial_predictions(rng), None
    else:
        predictions, schema = np.concatenate(
            [random_alpha(rng, 7, 5, 2), random_alpha(rng, 7, 5, 3)], axis=2
        ), TWO_LEVEL
    score = acq.get_acquisition(name)
    scores = score(predictions, schema, 10, np.random.default_rng(1))
    assert scores.shape == (7,)
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
    np.testing.assert_array_equal(scores, score(predictions, schema, 10, np.random.default_rng(1)))


def test_registry_names_and_dispatch():
    assert set(acq.ACQUISITION_FUNCTIONS) == {"bald", "entropy", "random"}
    assert acq.list_acquisitions() == ("bald", "entropy", "random")
    rho = np.random.default_rng(51).uniform(size=(5, 4, 1))
    np.testing.assert_array_equal(acq.get_acquisition("bald")(rho, None, 40, None), acq.binomial_bald(rho[..., 0], 40))
    np.testing.assert_array_equal(
        acq.get_acquisition("entropy")(rho, None, 40, None), acq.binomial_predictive_entropy(rho[..., 0], 40)
    )
    with pytest.raises(KeyError, match="unknown acquisition 'bold'"):
        acq.get_acquisition("bold")
    with pytest.raises(TypeError, match="unknown options"):
        acq.get_acquisition("bald", draws=3)


def test_registry_options_are_bound():
    alpha = random_alpha(np.random.default_rng(52), 3, 4, 6)
    schema = Schema("six", (Question("q", tuple("abcdef")),))
    sampled = acq.get_acquisition("bald", max_outcomes=0, draws_per_sample=8)(alpha, schema, 40, 3)
    direct = acq.dirichlet_bald(alpha, schema, 40, rng=3, max_outcomes=0, draws_per_sample=8)
    np.testing.assert_array_equal(sampled, direct)


def test_random_scores():
    scores = acq.random_scores(1000, np.random.default_rng(0))
    assert scores.shape == (1000,) and np.all((scores >= 0) & (scores < 1))
    np.testing.assert_array_equal(scores, acq.random_scores(1000, 0))
    assert not np.array_equal(scores, acq.random_scores(1000, 1))
    with pytest.raises(TypeError, match="need rng"):
        acq.random_scores(10, None)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    rho = torch.rand(4, 5, 1, dtype=torch.float64)
    np.testing.assert_allclose(acq.bald(rho), acq.binomial_bald(rho[..., 0].numpy()), atol=0)


# ---------------------------------------------------------------------------------------------
# bad input


def test_nan_and_inf_raise_naming_galaxies():
    rho = np.full((6, 3), 0.5)
    rho[2, 1] = np.nan
    rho[4, 0] = np.inf
    with pytest.raises(acq.InvalidPredictionsError, match=r"NaN or inf.*galaxies at rows 2, 4 \(2 in all\)") as error:
        acq.binomial_bald(rho)
    np.testing.assert_array_equal(error.value.galaxy_index, [2, 4])
    alpha = decals_alpha(np.random.default_rng(60), 5)
    alpha[3, 0, 7] = np.nan
    with pytest.raises(acq.InvalidPredictionsError, match=r"galaxies at rows 3 \(1 in all\)"):
        acq.bald(alpha, DECALS_DR5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: acq.binomial_bald(np.full((2, 3), 1.5)), r"outside \[0, 1\].*rows 0, 1 \(2 in all\)"),
        (lambda: acq.binomial_bald(np.full((2, 3, 1), 0.5)), r"expected rho of shape \(galaxy, sample\)"),
        (lambda: acq.binomial_bald(np.full((2, 3), 0.5), 0), "expected expected_votes >= 1, got 0"),
        (lambda: acq.binomial_bald(np.full((2, 3), 0.5), 40.0), "expected expected_votes as an int"),
        (lambda: acq.dirichlet_bald(np.ones((2, 3, 5)), DECALS_DR5), r"expected alpha with 34 answers"),
        (lambda: acq.dirichlet_bald(-np.ones((2, 3, 34)), DECALS_DR5), r"alpha <= 0.*rows 0, 1 \(2 in all\)"),
        (lambda: acq.question_entropies(np.full((2, 3, 6), 1e-310), 40), r"alpha below 1e-300.*rows 0, 1 \(2 in all\)"),
        (lambda: acq.bald(np.ones((2, 3, 5)), DECALS_DR5), r"expects 1 output .* or 34 outputs.*got 5"),
        (lambda: acq.bald(np.ones((2, 3, 5))), "got no schema"),
        (lambda: acq.bald(np.full((2, 3, 1), 0.5), get_schema("decals-dr5:smooth-or-featured")), r"expects 1 output.*got 1"),
        (lambda: acq.bald(np.ones((2, 3))), r"expected predictions of shape \(galaxy, sample, output\)"),
        (lambda: acq.question_entropies(np.ones((2, 3, 3)), 5, max_outcomes=-1), "max_outcomes"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------------------------------------
# selection


def make_pool(n, rng, ties=False):
    ids = np.array([f"J{i:07d}" for i in rng.permutation(n)])
    scores = rng.integers(0, 20, size=n).astype(float) if ties else rng.uniform(size=n)
    return ids, scores


def reference_top_k(ids, scores, k):
    order = np.lexsort((ids, -scores))  # by score descending, then id ascending
    return ids[order[:k]]


@pytest.mark.parametrize("ties", [False, True])
def test_streaming_top_k_equals_global_sort(ties):
    rng = np.random.default_rng(70)
    ids, scores = make_pool(5000, rng, ties=ties)
    selector = acq.TopK(50)
    bounds = np.sort(rng.choice(np.arange(1, len(ids)), size=12, replace=False))
    for chunk_ids, chunk_scores in zip(np.split(ids, bounds), np.split(scores, bounds)):
        selector.update(chunk_ids, chunk_scores)
    result = selector.result()
    np.testing.assert_array_equal(result.ids, reference_top_k(ids, scores, 50))
    np.testing.assert_array_equal(result.scores, np.sort(scores)[::-1][:50])
    assert selector.n_seen == 5000
    assert len(selector._ids) == 50  # memory stays at k, not the pool


def test_top_k_excludes_labelled_and_pending_ids():
    rng = np.random.default_rng(71)
    ids, scores = make_pool(1000, rng)
    best = reference_top_k(ids, scores, 30)
    excluded = list(best[::2]) + ["not-in-pool"]
    selection = acq.select(ids, scores, 10, exclude=excluded)
    keep = ~np.isin(ids, excluded)
    np.testing.assert_array_equal(selection.ids, reference_top_k(ids[keep], scores[keep], 10))
    assert not set(selection.ids) & set(excluded)


def test_top_k_edge_cases_and_tie_breaking():
    ids = np.array(["c", "a", "b", "d"])
    scores = np.array([1.0, 1.0, 1.0, 0.5])
    np.testing.assert_array_equal(acq.select(ids, scores, 2).ids, ["a", "b"])
    np.testing.assert_array_equal(acq.select(ids, scores, 10).ids, ["a", "b", "c", "d"])  # fewer than k
    assert len(acq.select(ids, scores, 0)) == 0
    with pytest.raises(ValueError, match=r"repeated ids: a \(1 in all\)"):
        acq.select(np.array(["a", "a"]), np.array([1.0, 2.0]), 1)
    selector = acq.TopK(2)
    selector.update(["x"], [1.0])
    with pytest.raises(ValueError, match="repeated ids"):
        selector.update(["x"], [2.0])
    with pytest.raises(ValueError, match=r"NaN or inf.*galaxies b \(1 in all\)"):
        acq.select(np.array(["a", "b"]), np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="expected k as an int >= 0"):
        acq.TopK(-1)


def test_power_keys_depend_only_on_seed_and_id():
    rng = np.random.default_rng(72)
    ids, scores = make_pool(2000, rng)
    whole = acq.select(ids, scores, 40, strategy="power", seed=5)
    selector = acq.TopK(40, strategy="power", seed=5)
    order = rng.permutation(len(ids))  # different order, different chunks
    for chunk in np.array_split(order, 7):
        selector.update(ids[chunk], scores[chunk])
    np.testing.assert_array_equal(selector.result().ids, whole.ids)
    assert not np.array_equal(acq.select(ids, scores, 40, strategy="power", seed=6).ids, whole.ids)
    u = acq.id_uniforms(ids, 5)
    assert np.all((u > 0) & (u < 1)) and abs(u.mean() - 0.5) < 0.03
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    np.testing.assert_array_equal(acq.id_uniforms(ids[:10], 5), u[:10])
    assert acq.id_uniforms(np.array(["galaxy-é", "galaxy-e"]), 0).std() > 0  # non-ASCII ids differ


def test_power_sampling_picks_higher_scores_more_often_but_not_always():
    ids = np.array(["low", "mid", "high"])
    scores = np.array([1.0, 2.0, 3.0])
    picks = [acq.select(ids, scores, 1, strategy="power", seed=seed).ids[0] for seed in range(3000)]
    frequency = np.array([picks.count(name) for name in ids]) / len(picks)
    # Gumbel-top-1 on beta log(score) draws with P proportional to score^beta
    np.testing.assert_allclose(frequency, scores / scores.sum(), atol=0.03)
    sharper = [acq.select(ids, scores, 1, strategy="power", beta=8, seed=s).ids[0] for s in range(500)]
    assert 0.9 < sharper.count("high") / 500 < 1.0


def test_power_sampling_draws_a_batch_without_replacement():
    rng = np.random.default_rng(73)
    ids, scores = make_pool(300, rng)
    scores[:100] = 0.0  # zero score: probability 0 while others remain
    selection = acq.select(ids, scores, 150, strategy="power", seed=1)
    assert len(set(selection.ids)) == 150
    assert not set(selection.ids) & set(ids[:100])
    overlap = len(set(selection.ids) & set(reference_top_k(ids, scores, 150)))
    assert 75 < overlap < 150  # favours high scores without being top-k


def test_softmax_sampling_and_strategy_errors():
    ids = np.array(["low", "high"])
    scores = np.array([0.0, math.log(3.0)])
    picks = [acq.select(ids, scores, 1, strategy="softmax", seed=s).ids[0] for s in range(2000)]
    assert picks.count("high") / 2000 == pytest.approx(0.75, abs=0.04)  # exp(score) odds 3 : 1
    with pytest.raises(TypeError, match="is random: pass seed"):
        acq.TopK(5, strategy="power")
    with pytest.raises(ValueError, match="unknown strategy"):
        acq.TopK(5, strategy="greedy")
    with pytest.raises(ValueError, match=r"scores >= 0.*galaxies low \(1 in all\)"):
        acq.select(ids, np.array([-1.0, 1.0]), 1, strategy="power", seed=0)
    with pytest.raises(ValueError, match="expected beta > 0"):
        acq.TopK(5, strategy="power", beta=0, seed=0)


# ---------------------------------------------------------------------------------------------
# score_stream: scores into a selector and a Parquet file


def prediction_batches(rng, n_batches=3, batch=40, path=None, seen=None, fail_after=None):
    """(ids, rho predictions (batch, 5, 1)) batches; appends to ``seen`` whether ``path`` exists."""
    for b in range(n_batches):
        if fail_after is not None and b == fail_after:
            raise RuntimeError("killed mid-stream")
        if seen is not None:
            seen.append(path.exists())
        ids = np.array([f"J{b:02d}{i:04d}" for i in range(batch)])
        yield ids, rng.uniform(size=(batch, 5, 1))


def test_score_stream_writes_every_score_and_the_file_only_when_complete(tmp_path):
    path = tmp_path / "scores.parquet"
    seen = []
    selector = acq.TopK(10)
    batches = list(prediction_batches(np.random.default_rng(80)))
    n_scored = acq.score_stream(
        prediction_batches(np.random.default_rng(80), path=path, seen=seen), acq.bald, selector, path,
        SMOOTH_OR_FEATURED, 40, np.random.default_rng(0),
    )
    assert n_scored == 120
    assert seen == [False, False, False]  # not there while scoring
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]
    table = pd.read_parquet(path)
    assert list(table.columns) == ["id_str", "score"]
    expected = np.concatenate([acq.bald(predictions, SMOOTH_OR_FEATURED, 40) for _, predictions in batches])
    np.testing.assert_array_equal(table["id_str"], np.concatenate([ids for ids, _ in batches]))
    np.testing.assert_array_equal(table["score"], expected)
    np.testing.assert_array_equal(selector.result().ids, reference_top_k(table["id_str"].to_numpy(), expected, 10))


def test_score_stream_leaves_no_file_after_an_error(tmp_path):
    path = tmp_path / "scores.parquet"
    with pytest.raises(RuntimeError, match="killed mid-stream"):
        acq.score_stream(
            prediction_batches(np.random.default_rng(81), fail_after=2), acq.bald, acq.TopK(5), path,
            SMOOTH_OR_FEATURED, 40, np.random.default_rng(0),
        )
    assert list(tmp_path.iterdir()) == []
    bad = [(np.array(["a", "b"]), np.array([[[0.5]], [[np.nan]]]))]
    with pytest.raises(acq.InvalidPredictionsError, match="rows 1 "):
        acq.score_stream(bad, acq.bald, acq.TopK(5), path, SMOOTH_OR_FEATURED, 40, np.random.default_rng(0))
    assert list(tmp_path.iterdir()) == []


def test_score_stream_random_scores_and_empty_pool(tmp_path):
    path = tmp_path / "scores.parquet"
    ids = np.array([f"J{i:03d}" for i in range(30)])
    n_scored = acq.score_stream(
        [(ids[:20], None), (ids[20:], None)], acq.random_baseline, acq.TopK(5), path, None, 40,
        np.random.default_rng(3),
    )
    assert n_scored == 30
    rng = np.random.default_rng(3)
    expected = np.concatenate([acq.random_scores(20, rng), acq.random_scores(10, rng)])
    np.testing.assert_array_equal(pd.read_parquet(path)["score"], expected)
    empty = tmp_path / "empty.parquet"
    assert acq.score_stream(iter(()), acq.bald, acq.TopK(5), empty, None, 40, 0) == 0
    assert list(pd.read_parquet(empty).columns) == ["id_str", "score"] and len(pd.read_parquet(empty)) == 0
