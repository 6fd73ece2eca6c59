"""Losses against scipy, N = 0 questions, gradients, and the errors for bad input."""

import numpy as np
import pytest
import scipy.stats
import torch

from zoobot.losses import (
    InvalidVotesError,
    NonFiniteError,
    binomial_nll,
    dirichlet_multinomial_nll,
    vote_nll,
)
from zoobot.schema import DECALS_DR5, GZ2, SMOOTH_OR_FEATURED, Schema

SCHEMAS = [GZ2, DECALS_DR5, SMOOTH_OR_FEATURED]


def random_votes(schema: Schema, n_galaxies: int, seed: int, dtype=torch.float64):
    """alpha in [1, 100] and integer counts; about a third of the questions get no votes."""
    generator = torch.Generator().manual_seed(seed)
    alpha = 1 + 99 * torch.rand(n_galaxies, schema.n_answers, generator=generator, dtype=dtype)
    counts = torch.randint(0, 25, (n_galaxies, schema.n_answers), generator=generator).to(dtype)
    for start, stop in schema.answer_groups:
        unasked = torch.rand(n_galaxies, generator=generator) < 0.3
        counts[unasked, start:stop] = 0
    return alpha, counts


def scipy_dirichlet_multinomial_nll(alpha, counts, schema):
    alpha, counts = alpha.double().numpy(), counts.double().numpy()
    expected = np.zeros((len(alpha), schema.n_questions))
    for galaxy in range(len(alpha)):
        for question, (start, stop) in enumerate(schema.answer_groups):
            n_votes = counts[galaxy, start:stop].sum()
            if n_votes > 0:
                expected[galaxy, question] = -scipy.stats.dirichlet_multinomial.logpmf(
                    counts[galaxy, start:stop], alpha[galaxy, start:stop], n_votes
                )
    return expected


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_dirichlet_multinomial_matches_scipy(schema, seed):
    alpha, counts = random_votes(schema, n_galaxies=12, seed=seed)
    nll = dirichlet_multinomial_nll(alpha, counts, schema)
    assert nll.shape == (12, schema.n_questions)
    expected = scipy_dirichlet_multinomial_nll(alpha, counts, schema)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
def test_dirichlet_multinomial_float32_close_to_scipy(schema):
    alpha, counts = random_votes(schema, n_galaxies=12, seed=3, dtype=torch.float32)
    nll = dirichlet_multinomial_nll(alpha, counts, schema)
    assert nll.dtype == torch.float32
    expected = scipy_dirichlet_multinomial_nll(alpha, counts, schema)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-4, atol=1e-3)


def test_dirichlet_multinomial_integer_counts_accepted():
    alpha, counts = random_votes(DECALS_DR5, n_galaxies=4, seed=5, dtype=torch.float32)
    from_int = dirichlet_multinomial_nll(alpha, counts.long(), DECALS_DR5)
    assert torch.equal(from_int, dirichlet_multinomial_nll(alpha, counts, DECALS_DR5))


def test_questions_without_votes_give_exactly_zero():
    alpha, counts = random_votes(GZ2, n_galaxies=6, seed=2, dtype=torch.float32)
    counts[:, 3:] = 0  # only the first two questions answered
    counts[0] = 0  # galaxy 0 has no votes at all
    nll = dirichlet_multinomial_nll(alpha, counts, GZ2)
    question_of_answer = torch.as_tensor(GZ2.question_index_of_answer)
    unanswered = torch.zeros_like(nll, dtype=torch.bool)
    for question in range(GZ2.n_questions):
        unanswered[:, question] = counts[:, question_of_answer == question].sum(1) == 0
    assert unanswered[:, 2:].all() and unanswered[0].all()
    assert (nll[unanswered] == 0).all()
    assert (nll[~unanswered] > 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_binomial_with_constant_matches_scipy(seed):
    generator = torch.Generator().manual_seed(seed)
    n = torch.randint(0, 60, (20,), generator=generator).double()
    k = torch.floor(torch.rand(20, generator=generator, dtype=torch.float64) * (n + 1))
    rho = torch.rand(20, generator=generator, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    nll = binomial_nll(rho, k, n, include_constant=True)
    expected = -scipy.stats.binom.logpmf(k.numpy(), n.numpy(), rho.numpy())
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-10, atol=1e-10)
    without = binomial_nll(rho, k, n)
    k, n = k.numpy(), n.numpy()
    log_choose = scipy.special.gammaln(n + 1) - scipy.special.gammaln(k + 1) - scipy.special.gammaln(n - k + 1)
    np.testing.assert_allclose(without.numpy(), expected + log_choose, rtol=1e-10, atol=1e-10)


def test_binomial_edge_cases_finite():
    rho = torch.tensor([0.0, 1.0, 0.5, 0.3])
    k = torch.tensor([0.0, 7.0, 0.0, 0.0])
    n = torch.tensor([5.0, 7.0, 0.0, 3.0])
    nll = binomial_nll(rho, k, n)
    assert torch.allclose(nll, torch.tensor([0.0, 0.0, 0.0, -3 * np.log(0.7)]).float())


def test_vote_nll_dispatches_binomial_and_dirichlet():
    rho = torch.tensor([[0.2], [0.9], [0.5]])
    counts = torch.tensor([[3, 7], [10, 0], [0, 0]])
    nll = vote_nll(rho, counts, SMOOTH_OR_FEATURED)
    assert nll.shape == (3, 1)
    assert torch.allclose(nll[:, 0], binomial_nll(rho[:, 0], counts[:, 0], counts.sum(1)))
    assert nll[2, 0] == 0

    alpha, votes = random_votes(DECALS_DR5, n_galaxies=3, seed=4, dtype=torch.float32)
    assert torch.equal(vote_nll(alpha, votes, DECALS_DR5), dirichlet_multinomial_nll(alpha, votes, DECALS_DR5))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
def test_gradients_finite_at_extremes(schema):
    alpha, counts = random_votes(schema, n_galaxies=4, seed=6, dtype=torch.float32)
    alpha[0] = 1.0
    alpha[1] = 100.0
    counts[2] = 1000.0
    alpha.requires_grad_(True)
    dirichlet_multinomial_nll(alpha, counts, schema).sum().backward()
    assert torch.isfinite(alpha.grad).all()
    assert alpha.grad.abs().sum() > 0

    rho = torch.tensor([1e-6, 1 - 1e-6, 0.5], requires_grad=True)
    binomial_nll(rho, torch.tensor([40.0, 0.0, 3.0]), torch.tensor([40.0, 40.0, 3.0])).sum().backward()
    assert torch.isfinite(rho.grad).all()
    assert (rho.grad != 0).all()


def test_unasked_questions_get_zero_gradient():
    alpha, counts = random_votes(GZ2, n_galaxies=2, seed=7, dtype=torch.float32)
    counts[:, 3:6] = 0
    alpha.requires_grad_(True)
    dirichlet_multinomial_nll(alpha, counts, GZ2).sum().backward()
    start, stop = GZ2.answer_groups[1][0], GZ2.answer_groups[1][1]
    assert (alpha.grad[:, start:stop] == 0).all()


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_predictions_raise_naming_galaxies(bad_value):
    alpha, counts = random_votes(DECALS_DR5, n_galaxies=10, seed=8, dtype=torch.float32)
    alpha[[2, 7], 4] = bad_value
    with pytest.raises(NonFiniteError, match=r"alpha.*galaxies at rows 2, 7 \(2 in all\)"):
        dirichlet_multinomial_nll(alpha, counts, DECALS_DR5)
    assert issubclass(NonFiniteError, ValueError)


def test_non_finite_counts_raise_with_ids_and_truncate():
    alpha, counts = random_votes(DECALS_DR5, n_galaxies=10, seed=9, dtype=torch.float32)
    counts[1:9, 0] = float("nan")
    ids = [f"J{i:03d}" for i in range(10)]
    with pytest.raises(NonFiniteError, match=r"counts.*J001, J002, J003, J004, J005, \.\.\. \(8 in all\).*never NaN"):
        vote_nll(alpha, counts, DECALS_DR5, ids=ids)


def test_binomial_nan_raises():
    with pytest.raises(NonFiniteError, match=r"rho.*galaxies at rows 1 "):
        binomial_nll(torch.tensor([0.5, float("nan")]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]))
    with pytest.raises(NonFiniteError, match=r"N holds NaN"):
        binomial_nll(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, float("inf")]))


def test_negative_and_inconsistent_counts_raise():
    alpha, counts = random_votes(GZ2, n_galaxies=5, seed=10, dtype=torch.float32)
    counts[3, 0] = -1
    with pytest.raises(InvalidVotesError, match=r"negative counts.*galaxies at rows 3 \(1 in all\)"):
        dirichlet_multinomial_nll(alpha, counts, GZ2)
    with pytest.raises(InvalidVotesError, match="negative k"):
        binomial_nll(torch.tensor([0.5]), torch.tensor([-1.0]), torch.tensor([2.0]))
    with pytest.raises(InvalidVotesError, match=r"k > N.*g1"):
        vote_nll(torch.tensor([[0.5], [0.5]]), torch.tensor([[1, 1], [3, -1]]), SMOOTH_OR_FEATURED, ids=["g0", "g1"])
    with pytest.raises(InvalidVotesError, match="rho outside"):
        binomial_nll(torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([2.0]))
    with pytest.raises(InvalidVotesError, match="alpha <= 0"):
        dirichlet_multinomial_nll(torch.zeros(1, GZ2.n_answers), torch.ones(1, GZ2.n_answers), GZ2)


def test_shape_errors_say_what_was_expected():
    alpha, counts = random_votes(GZ2, n_galaxies=2, seed=11, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"expected shape \(galaxy, 34\).*got \(2, 37\)"):
        dirichlet_multinomial_nll(alpha, counts, DECALS_DR5)
    with pytest.raises(ValueError, match=r"predictions\[:, 0\]"):
        vote_nll(alpha.unsqueeze(1), counts, GZ2)
    with pytest.raises(ValueError, match=r"schema 'gz2' expects 1 output \(binomial rho, only for one question with two answers\) or 37.*got 1"):
        vote_nll(alpha[:, :1], counts, GZ2)
    with pytest.raises(ValueError, match="expected 2 ids"):
        vote_nll(alpha, counts, GZ2, ids=["a"])
