"""The image-blind baseline (metrics.image_blind_nll) and collapse detection (metrics.compare_with_baseline)."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import dirichlet_multinomial

from zoobot.metrics import (
    COLLAPSE_SPREAD,
    compare_with_baseline,
    evaluate_predictions,
    image_blind_nll,
    image_blind_prediction,
)
from zoobot.models.heads import ALPHA_MAX, ALPHA_MIN
from zoobot.schema import SMOOTH_OR_FEATURED, Question, Schema

TWO_ANSWERS = Schema("pair", (Question("shape", ("round", "flat")),))  # binomial
THREE_ANSWERS = Schema("triple", (Question("shape", ("round", "flat", "odd")),))  # Dirichlet
TREE = Schema(
    "tree",
    (
        Question("shape", ("round", "flat", "odd")),
        Question("bar", ("yes", "no"), asked_after=("shape_flat",)),
    ),
)


def test_binomial_baseline_by_hand():
    train = np.array([[1, 0], [0, 1], [1, 0], [1, 0]])  # rho = 3 / 4
    test = np.array([[1, 0], [0, 1], [2, 1]])
    by_hand = [-math.log(0.75), -math.log(0.25), -(2 * math.log(0.75) + math.log(0.25))]
    result = image_blind_nll(train, test, TWO_ANSWERS)
    assert result["prediction"] == [0.75]
    assert result["loss"] == pytest.approx(np.mean(by_hand), abs=1e-12)  # 1.21188
    assert result["questions"]["shape"] == pytest.approx(np.mean(by_hand), abs=1e-12)


def test_dirichlet_baseline_at_its_bounds_by_hand():
    pairs = Schema("pairs", (Question("shape", ("round", "flat")), Question("odd", ("yes", "no"))))
    # shape: every galaxy unanimous, half each way: the fit runs down to the floor a = ALPHA_MIN,
    # where p(2, 0) = a (a + 1) / (2a (2a + 1)) = (a + 1) / (2 (2a + 1)).
    # odd: every galaxy split 1:1 (less spread than a multinomial): the fit runs up to the
    # ceiling A = ALPHA_MAX, where p(1, 1) = 2 A^2 / (2A (2A + 1)) = A / (2A + 1).
    train = np.array([[2, 0, 1, 1], [0, 2, 1, 1]] * 5)
    assert image_blind_prediction(train, pairs) == pytest.approx([ALPHA_MIN, ALPHA_MIN, ALPHA_MAX, ALPHA_MAX])
    a, big = ALPHA_MIN, ALPHA_MAX
    shape, odd = -math.log((a + 1) / (2 * (2 * a + 1))), -math.log(big / (2 * big + 1))
    result = image_blind_nll(train, np.array([[2, 0, 1, 1], [0, 2, 0, 0]]), pairs)
    assert result["questions"] == pytest.approx({"shape": shape, "odd": odd}, rel=1e-10)
    assert result["loss"] == pytest.approx((shape + odd + shape) / 2, rel=1e-10)  # an unasked question adds 0


def test_dirichlet_fit_is_the_maximum_likelihood_fit():
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet([0.8, 0.6, 0.3], size=300)  # over-dispersed: alpha < 1
    counts = np.stack([rng.multinomial(30, f) for f in fractions])
    fitted = image_blind_prediction(counts, THREE_ANSWERS)

    def nll(log_alpha):
        return -dirichlet_multinomial.logpmf(counts, np.exp(log_alpha), 30).sum()

    brute = np.exp(minimize(nll, np.zeros(3), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).x)
    assert fitted == pytest.approx(brute, rel=1e-3)
    assert (fitted < 1).all()  # why the head's concentrations must reach below 1 (models/heads.py)


def test_baseline_nll_is_the_models_loss_of_a_constant_prediction():
    """Same conventions as evaluate_predictions: binomial without log C(N, k), Dirichlet with the
    multinomial coefficient, an unasked question adds 0, per question over galaxies with votes."""
    rng = np.random.default_rng(1)
    train = np.hstack([rng.integers(0, 6, (40, 3)), rng.integers(0, 4, (40, 2))])
    test = np.hstack([rng.integers(0, 6, (25, 3)), rng.integers(0, 4, (25, 2))])
    test[:5, 3:] = 0  # bar not asked
    for schema, train_counts, test_counts in (
        (TREE, train, test),
        (TWO_ANSWERS, train[:, 3:], test[5:, 3:]),
    ):
        result = image_blind_nll(train_counts, test_counts, schema)
        constant = np.tile(np.asarray(result["prediction"], np.float32), (len(test_counts), 2, 1))  # (galaxy, sample, output)
        report = evaluate_predictions(constant, test_counts, schema)
        assert result["loss"] == pytest.approx(report["loss"], rel=1e-5)
        for name, loss in result["questions"].items():
            assert loss == pytest.approx(report["questions"][name]["loss"], rel=1e-5)


def test_a_question_never_answered_in_training_gets_the_floor():
    train = np.array([[3, 1, 0, 0, 0], [2, 2, 0, 0, 0]])
    alpha = image_blind_prediction(train, TREE)
    assert alpha[3:] == pytest.approx([ALPHA_MIN, ALPHA_MIN])
    assert np.isfinite(image_blind_nll(train, np.array([[1, 1, 0, 1, 0]]), TREE)["loss"])


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match=r"expected shape \(galaxy, 2\)"):
        image_blind_nll(np.ones((3, 3)), np.ones((3, 2)), TWO_ANSWERS)
    with pytest.raises(ValueError, match="finite and >= 0; bad rows \\[1\\]"):
        image_blind_nll(np.array([[1, 0], [np.nan, 1]]), np.ones((3, 2)), TWO_ANSWERS)
    with pytest.raises(ValueError, match="no votes at all"):
        image_blind_prediction(np.zeros((3, 2)), TWO_ANSWERS)


def _galaxies(n=400, seed=2):
    rng = np.random.default_rng(seed)
    smooth = rng.random(n) < 0.7
    rho_true = np.where(smooth, 0.9, 0.2)  # (galaxy,) what an image tells
    counts = rng.binomial(20, rho_true)
    return rho_true, np.stack([counts, 20 - counts], axis=1)


def test_collapse_detection_flags_a_constant_predictor_and_not_a_good_one():
    rho_true, counts = _galaxies()
    train, test = counts[:200], counts[200:]
    baseline = image_blind_nll(train, test, SMOOTH_OR_FEATURED)
    noise = np.random.default_rng(3).normal(0, 1e-4, (200, 5, 1))  # MC samples of a dead head

    constant = baseline["prediction"][0] - 0.05 + noise  # (galaxy, sample, 1)
    verdict = compare_with_baseline(evaluate_predictions(constant, test, SMOOTH_OR_FEATURED), baseline)
    assert verdict["collapsed"] and not verdict["beats_baseline"]
    assert verdict["spread"] < COLLAPSE_SPREAD

    good = np.clip(rho_true[200:, None, None] + 10 * noise, 0, 1)
    verdict = compare_with_baseline(evaluate_predictions(good, test, SMOOTH_OR_FEATURED), baseline)
    assert not verdict["collapsed"] and verdict["beats_baseline"]
    assert verdict["questions"]["smooth-or-featured"]["beats_baseline"]
    assert verdict["baseline_loss"] == baseline["loss"]
