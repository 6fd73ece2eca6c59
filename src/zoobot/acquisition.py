"""Acquisition functions: which unlabelled galaxies should volunteers see next.

Everything here is a pure function of MC-dropout predictions, shape (galaxy, sample, output):

- binomial single-question model: output = 1, holding rho, the predicted vote fraction;
- Dirichlet-multinomial tree model: output = n_answers, holding concentrations alpha > 0,
  grouped into questions by ``schema.answer_groups``.

Scores are computed over the *votes* a galaxy would get from ``expected_votes`` volunteers
(40 in Walmsley et al. 2019), never from the galaxy's actual count:

    MI = H[mean_t p(k | theta_t)] - mean_t H[p(k | theta_t)]      (BALD, Houlsby et al. 2011)
    predictive entropy = H[mean_t p(k | theta_t)]

where t runs over dropout samples and k over vote outcomes. For a tree, each question's term is
weighted by the expected probability that the question is asked, and summed over questions.
See docs/acquisition.md for the maths, the Monte Carlo estimator used when there are too many
vote outcomes to enumerate, and measured speeds.

Selection is separate from scoring: :func:`select` and the streaming :class:`TopK` pick the
batch by plain top-k, or stochastically (power / softmax sampling, Kirsch et al. 2023) through
the Gumbel-top-k trick with per-galaxy noise derived from (seed, id_str).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import combinations
from typing import Iterable, Protocol

import numpy as np
from scipy.special import gammaln, xlogy

from zoobot.schema import Schema

DEFAULT_EXPECTED_VOTES = 40
#: Enumerate vote outcomes exactly up to this many per question; above it, use Monte Carlo.
MAX_EXACT_OUTCOMES = 20_000
#: Monte Carlo vote outcomes drawn per dropout sample, per galaxy and question.
DRAWS_PER_SAMPLE = 64
STRATEGIES = ("top-k", "power", "softmax")
#: Smallest concentration accepted (float32 cannot go below 1.4e-45 anyway).
MIN_CONCENTRATION = 1e-300
#: Working arrays are processed in galaxy chunks of at most about this many float64 elements.
_CHUNK_ELEMENTS = 1 << 18
_MAX_NAMED = 10
#: log 0 = -inf is replaced by this before multiplying by p = 0, so that 0 * log 0 = 0 without a
#: second logarithm over the largest array (as xlogy(p, p) would need).
_MOST_NEGATIVE = np.finfo(np.float64).min


class InvalidPredictionsError(ValueError):
    """Predictions that cannot be scored; ``galaxy_index`` holds the offending rows."""

    def __init__(self, message: str, galaxy_index: np.ndarray):
        super().__init__(message)
        self.galaxy_index = galaxy_index


# ---------------------------------------------------------------------------------------------
# Validation


def _as_float_array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor; torch itself is not imported here
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"expected {name} as a numeric array, got {type(values).__name__}") from error


def _named(index: np.ndarray) -> str:
    shown = ", ".join(str(i) for i in index[:_MAX_NAMED])
    more = f" and {len(index) - _MAX_NAMED} more" if len(index) > _MAX_NAMED else ""
    return f"galaxies at rows [{shown}]{more}"


def _raise_for_galaxies(bad: np.ndarray, what: str) -> None:
    """Raise if any galaxy (axis 0 of ``bad``) has a True entry."""
    per_galaxy = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.size else np.zeros(bad.shape[0], bool)
    if per_galaxy.any():
        index = np.flatnonzero(per_galaxy)
        raise InvalidPredictionsError(f"{what}: {_named(index)}", index)


def _check_finite(values: np.ndarray, name: str) -> None:
    _raise_for_galaxies(~np.isfinite(values), f"{name} contain NaN or inf; expected finite values")


def _check_rho(rho, name: str = "rho") -> np.ndarray:
    rho = _as_float_array(rho, name)
    if rho.ndim != 2 or rho.shape[1] < 1:
        raise ValueError(f"expected {name} of shape (galaxy, sample) with >= 1 sample, got shape {rho.shape}")
    _check_finite(rho, name)
    _raise_for_galaxies((rho < 0) | (rho > 1), f"{name} outside [0, 1]; expected vote fractions")
    return rho


def _check_alpha(alpha, schema: Schema | None) -> np.ndarray:
    """Concentrations (galaxy, sample, answer), all finite and > 0; answers match ``schema`` if given."""
    alpha = _as_float_array(alpha, "alpha")
    if alpha.ndim != 3 or alpha.shape[1] < 1 or alpha.shape[2] < 1:
        raise ValueError(
            f"expected alpha of shape (galaxy, sample, answer) with >= 1 sample and answer, "
            f"got shape {alpha.shape}"
        )
    if schema is not None and alpha.shape[2] != schema.n_answers:
        raise ValueError(
            f"expected alpha with {schema.n_answers} answers for schema {schema.name!r}, "
            f"got {alpha.shape[2]}"
        )
    _check_finite(alpha, "alpha")
    _raise_for_galaxies(alpha <= 0, "alpha <= 0; expected Dirichlet concentrations > 0")
    _raise_for_galaxies(
        alpha < MIN_CONCENTRATION,
        f"alpha below {MIN_CONCENTRATION:g}, which no float32 model output reaches and the vote sampler "
        "cannot resolve; expected larger concentrations",
    )
    return alpha


def _check_expected_votes(expected_votes) -> int:
    if isinstance(expected_votes, bool) or not isinstance(expected_votes, (int, np.integer)):
        raise TypeError(f"expected expected_votes as an int, got {expected_votes!r}")
    if expected_votes < 1:
        raise ValueError(f"expected expected_votes >= 1, got {expected_votes}")
    return int(expected_votes)


def _resolve_rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"expected rng as np.random.Generator, int seed or None, got {type(rng).__name__}")


def _in_chunks(fn, array: np.ndarray, elements_per_galaxy: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` to galaxy chunks of ``array`` so that working memory stays bounded.

    ``fn`` maps a chunk (galaxy, ...) to two (galaxy,) arrays; the chunks are concatenated.
    """
    n_galaxies = array.shape[0]
    if n_galaxies == 0:
        return np.zeros(0), np.zeros(0)
    size = max(1, _CHUNK_ELEMENTS // max(1, elements_per_galaxy))
    parts = [fn(array[start : start + size]) for start in range(0, n_galaxies, size)]
    first, second = zip(*parts)
    return np.concatenate(first), np.concatenate(second)


# ---------------------------------------------------------------------------------------------
# Entropies of exactly enumerated vote distributions


def _enumerated_entropies(log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H[mean_t p_t] and mean_t H[p_t] from log p of every vote outcome; overwrites log_p."""
    p = np.exp(log_p)  # (galaxy, sample, outcome)
    p_mean = p.mean(axis=1)  # (galaxy, outcome)
    entropy_of_mean = -xlogy(p_mean, p_mean).sum(axis=-1)  # (galaxy,)
    np.maximum(log_p, _MOST_NEGATIVE, out=log_p)  # log 0 = -inf -> finite, so that 0 * log 0 = 0
    p *= log_p  # (galaxy, sample, outcome): p log p
    mean_entropy = -p.sum(axis=-1).mean(axis=-1)  # (galaxy,)
    return entropy_of_mean, mean_entropy


def _binomial_log_pmf(rho: np.ndarray, n: int) -> np.ndarray:
    """log Binomial(k | n, rho) for k = 0..n, with 0 log 0 = 0 at rho = 0 or 1 (as xlogy)."""
    k = np.arange(n + 1)  # (outcome,)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)  # (outcome,)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = k * np.log(rho)[..., None]  # (galaxy, sample, outcome): k log rho
        votes_against = (n - k) * np.log1p(-rho)[..., None]  # (galaxy, sample, outcome)
    log_p[..., 0] = 0.0  # k = 0: 0 log rho = 0, also at rho = 0
    votes_against[..., n] = 0.0  # k = n: 0 log(1 - rho) = 0, also at rho = 1
    log_p += votes_against
    log_p += log_choose
    return log_p  # (galaxy, sample, outcome)


def _binomial_entropies(rho: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _in_chunks(lambda r: _enumerated_entropies(_binomial_log_pmf(r, n)), rho, rho.shape[1] * (n + 1) * 4)


def binomial_bald(rho, expected_votes: int = DEFAULT_EXPECTED_VOTES) -> np.ndarray:
    """Mutual information between the votes of ``expected_votes`` volunteers and the model.

    rho: (galaxy, sample) predicted vote fraction per dropout sample, in [0, 1].
    Returns (galaxy,) MI in nats, between 0 and min(log(expected_votes + 1), log(n_samples)).
    """
    n = _check_expected_votes(expected_votes)
    entropy_of_mean, mean_entropy = _binomial_entropies(_check_rho(rho), n)  # (galaxy,) each
    return np.maximum(entropy_of_mean - mean_entropy, 0.0)  # (galaxy,); clip roundoff below 0


def binomial_predictive_entropy(rho, expected_votes: int = DEFAULT_EXPECTED_VOTES) -> np.ndarray:
    """Entropy of the mean predictive Binomial vote distribution. rho: (galaxy, sample)."""
    n = _check_expected_votes(expected_votes)
    entropy_of_mean, _ = _binomial_entropies(_check_rho(rho), n)  # (galaxy,)
    return entropy_of_mean


# ---------------------------------------------------------------------------------------------
# Dirichlet-multinomial


def n_vote_outcomes(n_answers: int, expected_votes: int) -> int:
    """Number of ways N votes can fall on K answers: C(N + K - 1, K - 1)."""
    return math.comb(expected_votes + n_answers - 1, n_answers - 1)


@lru_cache(maxsize=16)
def _vote_outcomes(n: int, n_answers: int) -> tuple[np.ndarray, np.ndarray]:
    """Every way n votes fall on n_answers answers (the compositions of n into n_answers parts).

    Returns offsets (answer, outcome): where outcome k's count for answer i sits in a rising-log
    table flattened to (..., answer * (n + 1)), that is i * (n + 1) + k_i; and log_coefficient
    (outcome,): log n! - sum_i log k_i!.
    """
    # stars and bars: choose the positions of n_answers - 1 bars among n + n_answers - 1 slots
    bars = np.array(list(combinations(range(n + n_answers - 1), n_answers - 1)), dtype=np.int64)
    bars = bars.reshape(n_vote_outcomes(n_answers, n), n_answers - 1)  # (outcome, answer - 1)
    edges = np.concatenate(
        [np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + n_answers - 1)], axis=1
    )  # (outcome, answer + 1)
    counts = np.diff(edges, axis=1) - 1  # (outcome, answer)
    offsets = np.ascontiguousarray((counts + np.arange(n_answers) * (n + 1)).T)  # (answer, outcome)
    log_coefficient = _log_multinomial_coefficient(counts, n)  # (outcome,)
    offsets.setflags(write=False)
    log_coefficient.setflags(write=False)
    return offsets, log_coefficient


def _log_multinomial_coefficient(counts: np.ndarray, n: int) -> np.ndarray:
    """log n! - sum_i log k_i!: counts (..., answer) -> (...,)."""
    log_factorial = gammaln(np.arange(n + 1) + 1)  # (n + 1,)
    return log_factorial[n] - log_factorial[counts].sum(axis=-1)


def _rising_log_table(alpha: np.ndarray, n: int) -> np.ndarray:
    """log Gamma(alpha + k) - log Gamma(alpha) for k = 0..n, as a cumulative sum of log(alpha + j).

    alpha: (galaxy, sample, answer) -> (galaxy, sample, answer * (n + 1)), answer-major. Summing
    logs avoids the cancellation of two large gammaln values when alpha is large.
    """
    steps = np.log(alpha[..., None] + np.arange(n))  # (galaxy, sample, answer, n)
    table = np.zeros(alpha.shape + (n + 1,))  # (galaxy, sample, answer, n + 1)
    np.cumsum(steps, axis=-1, out=table[..., 1:])
    return table.reshape(alpha.shape[0], alpha.shape[1], -1)  # (galaxy, sample, answer * (n + 1))


def _log_normaliser(alpha: np.ndarray, n: int) -> np.ndarray:
    """log Gamma(A) - log Gamma(A + n), A = sum alpha. (galaxy, sample, answer) -> (galaxy, sample)."""
    total = alpha.sum(axis=-1)  # (galaxy, sample)
    return -np.log(total[..., None] + np.arange(n)).sum(axis=-1)  # (galaxy, sample)


def _dirmult_exact_entropies(alpha: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """alpha (galaxy, sample, answer) of one question -> H[mean p], mean H[p], each (galaxy,).

    log DirMult(k | n, alpha) = log n!/prod k_i! + log Gamma(A)/Gamma(A + n)
                                + sum_i log Gamma(alpha_i + k_i)/Gamma(alpha_i), for every outcome k.
    """
    n_galaxies, n_samples, _ = alpha.shape
    offsets, log_coefficient = _vote_outcomes(n, alpha.shape[2])  # (answer, outcome), (outcome,)
    table = _rising_log_table(alpha, n).reshape(n_galaxies * n_samples, -1)  # (galaxy*sample, answer*(n+1))
    log_p = table[:, offsets[0]]  # (galaxy*sample, outcome)
    for answer_offsets in offsets[1:]:
        log_p += table[:, answer_offsets]  # (galaxy*sample, outcome): sum over answers
    log_p = log_p.reshape(n_galaxies, n_samples, -1)  # (galaxy, sample, outcome)
    log_p += _log_normaliser(alpha, n)[..., None]  # (galaxy, sample, outcome)
    log_p += log_coefficient  # (galaxy, sample, outcome)
    return _enumerated_entropies(log_p)


def _sample_dirmult(alpha: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Draw vote counts from DirMult(n, alpha_t), ``draws`` per dropout sample t.

    alpha: (galaxy, sample, answer) -> counts (galaxy, sample, draws, answer). The Dirichlet step
    normalises Gamma(alpha_i) variates in log space, using G = G' U^(1/a) with G' ~ Gamma(a + 1)
    and U ~ Uniform(0, 1), so that tiny alphas do not underflow to an all-zero probability vector.
    """
    a = alpha[:, :, None, :]  # (galaxy, sample, 1, answer)
    shape = alpha.shape[:2] + (draws, alpha.shape[2])
    log_gamma = np.log(rng.standard_gamma(a + 1, size=shape)) + np.log1p(-rng.random(shape)) / a
    p = np.exp(log_gamma - log_gamma.max(axis=-1, keepdims=True))  # (galaxy, sample, draws, answer)
    p /= p.sum(axis=-1, keepdims=True)
    return rng.multinomial(n, p)  # (galaxy, sample, draws, answer)


def _dirmult_sampled_entropies(
    alpha: np.ndarray, n: int, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo H[mean p] and mean H[p] for one question, Rao-Blackwellised over samples.

    Draw k_(t,d) ~ p_t, ``draws`` per dropout sample t: pooled, the k are draws from the mixture
    p_mean = mean_t p_t, and log p_mean(k) = logsumexp_s log p_s(k) - log T is exact. With the
    posterior over dropout samples w_s(k) = p_s(k) / (T p_mean(k)):
        H[p_mean]      = E_k[-log p_mean(k)]
        mean_s H[p_s]  = E_k[-sum_s w_s(k) log p_s(k)]
        MI             = E_k[sum_s w_s(k) log(T w_s(k))]    (each term >= 0)
    Averaging over s with w_s(k), instead of using only the sample that drew k, is the
    conditional expectation given k: still unbiased, and about a third of the spread at T = 15.
    """
    n_galaxies, n_samples, n_answers = alpha.shape
    counts = _sample_dirmult(alpha, n, draws, rng).reshape(n_galaxies, -1, n_answers)  # (galaxy, draw, answer)
    offsets = counts + np.arange(n_answers) * (n + 1)  # (galaxy, draw, answer)
    table = _rising_log_table(alpha, n)  # (galaxy, sample, answer * (n + 1))
    log_p = np.stack([table[g][:, offsets[g]].sum(axis=-1) for g in range(n_galaxies)])  # (galaxy, sample, draw)
    log_p += _log_normaliser(alpha, n)[..., None]  # (galaxy, sample, draw)
    log_p += _log_multinomial_coefficient(counts, n)[:, None, :]  # (galaxy, sample, draw)
    log_p_max = log_p.max(axis=1, keepdims=True)  # (galaxy, 1, draw)
    shifted = np.exp(log_p - log_p_max)  # (galaxy, sample, draw)
    total = shifted.sum(axis=1, keepdims=True)  # (galaxy, 1, draw)
    log_p_mean = (log_p_max + np.log(total / n_samples))[:, 0]  # (galaxy, draw): log mean_s p_s(k)
    weight = shifted / total  # (galaxy, sample, draw): w_s(k), sums to 1 over samples
    entropy_of_mean = -log_p_mean.mean(axis=-1)  # (galaxy,)
    mean_entropy = -(weight * log_p).sum(axis=1).mean(axis=-1)  # (galaxy,)
    return entropy_of_mean, mean_entropy


def _question_entropies(
    alpha: np.ndarray,
    n: int,
    rng: np.random.Generator,
    max_outcomes: int,
    draws_per_sample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """alpha (galaxy, sample, answer) of one question -> (H[mean p], mean H[p]), each (galaxy,)."""
    n_samples, n_answers = alpha.shape[1:]
    n_outcomes = n_vote_outcomes(n_answers, n)
    if n_outcomes <= max_outcomes:
        per_galaxy = n_samples * (n_outcomes + n_answers * (n + 1)) * 3
        return _in_chunks(lambda a: _dirmult_exact_entropies(a, n), alpha, per_galaxy)
    per_galaxy = n_samples * draws_per_sample * (n_samples * 3 + n_answers * 3)
    return _in_chunks(lambda a: _dirmult_sampled_entropies(a, n, draws_per_sample, rng), alpha, per_galaxy)


def _check_estimator_options(max_outcomes, draws_per_sample) -> None:
    if isinstance(max_outcomes, bool) or not isinstance(max_outcomes, (int, np.integer)) or max_outcomes < 0:
        raise ValueError(f"expected max_outcomes as an int >= 0, got {max_outcomes!r}")
    if (
        isinstance(draws_per_sample, bool)
        or not isinstance(draws_per_sample, (int, np.integer))
        or draws_per_sample < 1
    ):
        raise ValueError(f"expected draws_per_sample as an int >= 1, got {draws_per_sample!r}")


def question_entropies(
    alpha,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    *,
    rng: np.random.Generator | int | None = None,
    max_outcomes: int = MAX_EXACT_OUTCOMES,
    draws_per_sample: int = DRAWS_PER_SAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Entropy terms of one question's Dirichlet-multinomial votes.

    alpha: (galaxy, sample, answer) concentrations of a single question.
    Returns (H[mean_t p_t], mean_t H[p_t]), each (galaxy,), in nats. MI is their difference.
    Exact when C(N + K - 1, K - 1) <= max_outcomes, else Monte Carlo with
    ``draws_per_sample`` draws per dropout sample (rng None means seed 0).
    """
    n = _check_expected_votes(expected_votes)
    _check_estimator_options(max_outcomes, draws_per_sample)
    alpha = _check_alpha(alpha, None)
    return _question_entropies(alpha, n, _resolve_rng(rng), max_outcomes, draws_per_sample)


def mean_fractions(alpha: np.ndarray, schema: Schema) -> np.ndarray:
    """Mean predicted vote fraction per answer: alpha / sum(alpha) per question, averaged over samples.

    alpha: (galaxy, sample, answer) -> (galaxy, answer).
    """
    fractions = np.empty_like(alpha)  # (galaxy, sample, answer)
    for start, stop in schema.answer_groups:
        group = alpha[..., start:stop]  # (galaxy, sample, answers of this question)
        fractions[..., start:stop] = group / group.sum(axis=-1, keepdims=True)
    return fractions.mean(axis=1)  # (galaxy, answer)


def _dirichlet_terms(alpha, schema, expected_votes, rng, max_outcomes, draws_per_sample):
    """Per question: H[mean p], mean H[p], P(asked); each (galaxy, question)."""
    n = _check_expected_votes(expected_votes)
    _check_estimator_options(max_outcomes, draws_per_sample)
    if not isinstance(schema, Schema):
        raise TypeError(f"expected schema as a zoobot.schema.Schema, got {type(schema).__name__}")
    alpha = _check_alpha(alpha, schema)
    rng = _resolve_rng(rng)
    n_galaxies = alpha.shape[0]
    entropy_of_mean = np.zeros((n_galaxies, schema.n_questions))  # (galaxy, question)
    mean_entropy = np.zeros((n_galaxies, schema.n_questions))  # (galaxy, question)
    for q, (start, stop) in enumerate(schema.answer_groups):
        entropy_of_mean[:, q], mean_entropy[:, q] = _question_entropies(
            alpha[..., start:stop], n, rng, max_outcomes, draws_per_sample
        )
    prob_asked = schema.prob_asked(mean_fractions(alpha, schema))  # (galaxy, question)
    return entropy_of_mean, mean_entropy, prob_asked


def dirichlet_bald(
    alpha,
    schema: Schema,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    *,
    per_question: bool = False,
    rng: np.random.Generator | int | None = None,
    max_outcomes: int = MAX_EXACT_OUTCOMES,
    draws_per_sample: int = DRAWS_PER_SAMPLE,
) -> np.ndarray:
    """BALD for a Dirichlet-multinomial tree model, weighted by P(question asked).

    alpha: (galaxy, sample, answer) concentrations, answers in ``schema.answer_columns`` order.
    Every question uses N = expected_votes votes; its MI is multiplied by P(asked) computed from
    the mean predicted fractions. Returns (galaxy,), or (galaxy, question) weighted terms that
    sum to it if ``per_question``. rng only matters for questions with more than ``max_outcomes``
    vote outcomes (Monte Carlo); None means seed 0.
    """
    entropy_of_mean, mean_entropy, prob_asked = _dirichlet_terms(
        alpha, schema, expected_votes, rng, max_outcomes, draws_per_sample
    )
    mutual_information = np.maximum(entropy_of_mean - mean_entropy, 0.0)  # (galaxy, question)
    weighted = prob_asked * mutual_information  # (galaxy, question)
    return weighted if per_question else weighted.sum(axis=1)  # (galaxy, question) or (galaxy,)


def dirichlet_predictive_entropy(
    alpha,
    schema: Schema,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    *,
    per_question: bool = False,
    rng: np.random.Generator | int | None = None,
    max_outcomes: int = MAX_EXACT_OUTCOMES,
    draws_per_sample: int = DRAWS_PER_SAMPLE,
) -> np.ndarray:
    """Entropy of the mean predictive vote distribution per question, weighted by P(asked)."""
    entropy_of_mean, _, prob_asked = _dirichlet_terms(
        alpha, schema, expected_votes, rng, max_outcomes, draws_per_sample
    )
    weighted = prob_asked * entropy_of_mean  # (galaxy, question)
    return weighted if per_question else weighted.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# Uniform scoring interface and registry


class AcquisitionFunction(Protocol):
    def __call__(
        self,
        predictions: np.ndarray,
        schema: Schema | None = None,
        expected_votes: int = DEFAULT_EXPECTED_VOTES,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray: ...


def _split_predictions(predictions, schema: Schema | None) -> tuple[str, np.ndarray]:
    """(galaxy, sample, output) -> ("binomial", rho (galaxy, sample)) or ("dirichlet", alpha)."""
    predictions = _as_float_array(predictions, "predictions")
    if predictions.ndim != 3:
        raise ValueError(
            f"expected predictions of shape (galaxy, sample, output), got shape {predictions.shape}"
        )
    n_outputs = predictions.shape[2]
    if n_outputs == 1 and (schema is None or schema.n_questions == 1):
        return "binomial", predictions[..., 0]
    if schema is not None and n_outputs == schema.n_answers:
        return "dirichlet", predictions
    if schema is None:
        raise ValueError(
            f"expected 1 output (binomial rho) or a schema for {n_outputs} Dirichlet outputs, got no schema"
        )
    raise ValueError(
        f"expected 1 output (binomial rho, single-question schema) or {schema.n_answers} outputs "
        f"(Dirichlet concentrations for schema {schema.name!r}), got {n_outputs}"
    )


def _by_likelihood(binomial_fn, dirichlet_fn, predictions, schema, expected_votes, rng, max_outcomes, draws_per_sample):
    """Route (galaxy, sample, output) predictions to the binomial or Dirichlet form of a score."""
    kind, values = _split_predictions(predictions, schema)
    if kind == "binomial":
        return binomial_fn(values, expected_votes)
    return dirichlet_fn(
        values, schema, expected_votes, rng=rng, max_outcomes=max_outcomes, draws_per_sample=draws_per_sample
    )


def bald(
    predictions,
    schema: Schema | None = None,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    rng: np.random.Generator | int | None = None,
    *,
    max_outcomes: int = MAX_EXACT_OUTCOMES,
    draws_per_sample: int = DRAWS_PER_SAMPLE,
) -> np.ndarray:
    """BALD scores (galaxy,) from predictions (galaxy, sample, output); binomial or Dirichlet by shape."""
    return _by_likelihood(
        binomial_bald, dirichlet_bald, predictions, schema, expected_votes, rng, max_outcomes, draws_per_sample
    )


def predictive_entropy(
    predictions,
    schema: Schema | None = None,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    rng: np.random.Generator | int | None = None,
    *,
    max_outcomes: int = MAX_EXACT_OUTCOMES,
    draws_per_sample: int = DRAWS_PER_SAMPLE,
) -> np.ndarray:
    """Predictive-entropy scores (galaxy,) from predictions (galaxy, sample, output)."""
    return _by_likelihood(
        binomial_predictive_entropy, dirichlet_predictive_entropy,
        predictions, schema, expected_votes, rng, max_outcomes, draws_per_sample,
    )


def random_scores(n_galaxies: int, rng: np.random.Generator | int) -> np.ndarray:
    """The baseline: independent Uniform(0, 1) scores, shape (n_galaxies,)."""
    if rng is None:
        raise TypeError("random scores need rng: pass np.random.default_rng(seed) or an int seed")
    if isinstance(n_galaxies, bool) or not isinstance(n_galaxies, (int, np.integer)) or n_galaxies < 0:
        raise ValueError(f"expected n_galaxies as an int >= 0, got {n_galaxies!r}")
    return _resolve_rng(rng).random(int(n_galaxies))


def random_baseline(
    predictions,
    schema: Schema | None = None,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Random scores with the uniform signature; only the number of galaxies is used."""
    predictions = _as_float_array(predictions, "predictions")
    if predictions.ndim != 3:
        raise ValueError(
            f"expected predictions of shape (galaxy, sample, output), got shape {predictions.shape}"
        )
    return random_scores(predictions.shape[0], rng)


ACQUISITION_FUNCTIONS: dict[str, AcquisitionFunction] = {
    "bald": bald,
    "entropy": predictive_entropy,
    "random": random_baseline,
}


def get_acquisition(name: str, **options) -> AcquisitionFunction:
    """The scoring function registered as ``name``, with keyword ``options`` bound.

    ``get_acquisition("bald", max_outcomes=5000)(predictions, schema, 40, rng)`` -> (galaxy,).
    """
    if name not in ACQUISITION_FUNCTIONS:
        raise KeyError(f"unknown acquisition {name!r}; expected one of {sorted(ACQUISITION_FUNCTIONS)}")
    function = ACQUISITION_FUNCTIONS[name]
    keyword_only = {
        p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY
    }
    unknown = set(options) - keyword_only
    if unknown:
        raise TypeError(
            f"acquisition {name!r} got unknown options {sorted(unknown)}; it accepts {sorted(keyword_only)}"
        )
    return partial(function, **options) if options else function


# ---------------------------------------------------------------------------------------------
# Selection: top-k and stochastic batch acquisition, streaming


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def id_uniforms(ids: np.ndarray, seed: int) -> np.ndarray:
    """A Uniform(0, 1) number per id that depends only on (seed, id_str), not on order or chunking.

    FNV-1a over the UTF-8 bytes of each id, seeded, then the splitmix64 finaliser; vectorised.
    """
    ids = np.asarray(ids, dtype=str)
    if ids.size == 0:
        return np.zeros(0)
    data = np.char.encode(ids, "utf-8")  # (galaxy,) fixed-width bytes
    lengths = np.char.str_len(data)  # (galaxy,)
    width = data.dtype.itemsize
    data_bytes = np.frombuffer(data.tobytes(), dtype=np.uint8).reshape(len(ids), width)  # (galaxy, byte)
    seed_hash = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    h = np.full(len(ids), _FNV_OFFSET ^ seed_hash, dtype=np.uint64)  # (galaxy,)
    for column in range(width):
        stepped = (h ^ data_bytes[:, column].astype(np.uint64)) * _FNV_PRIME
        h = np.where(column < lengths, stepped, h)
    h = _splitmix64(h)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # (galaxy,) in (0, 1)


def _resolve_seed(seed, strategy: str) -> int | None:
    if strategy == "top-k":
        return None
    if seed is None:
        raise TypeError(
            f"strategy {strategy!r} is random: pass seed=<int> (e.g. the iteration number) "
            "or an np.random.Generator"
        )
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    raise TypeError(f"expected seed as an int or np.random.Generator, got {type(seed).__name__}")


def selection_keys(
    ids, scores, strategy: str = "top-k", beta: float = 1.0, seed: int | None = None
) -> np.ndarray:
    """Keys whose top-k is the selected batch. ids, scores: (galaxy,).

    - "top-k": the scores themselves.
    - "power": beta * log(score) + Gumbel: top-k samples without replacement with P ~ score^beta.
    - "softmax": beta * score + Gumbel: P ~ exp(beta * score).
    Gumbel noise comes from :func:`id_uniforms`, so each galaxy's key is independent of chunking.
    ``seed`` must be an int here.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if strategy == "top-k":
        return scores.copy()
    gumbel = -np.log(-np.log(id_uniforms(ids, seed)))  # (galaxy,)
    if strategy == "power":
        with np.errstate(divide="ignore"):
            return beta * np.log(scores) + gumbel  # score 0 -> key -inf: never preferred
    if strategy == "softmax":
        return beta * scores + gumbel
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


@dataclass(frozen=True)
class Selection:
    """Selected galaxies, best first: ids (n,), their scores (n,) and selection keys (n,)."""

    ids: np.ndarray
    scores: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _best(ids: np.ndarray, scores: np.ndarray, keys: np.ndarray, k: int):
    """The k largest keys, ties broken by ascending id_str; returned best first."""
    if k == 0:
        return ids[:0], scores[:0], keys[:0]
    if len(keys) > k:
        kth = np.partition(keys, len(keys) - k)[len(keys) - k]  # the k-th largest key
        above = np.flatnonzero(keys > kth)
        tied = np.flatnonzero(keys == kth)
        tied = tied[np.argsort(ids[tied], kind="stable")[: k - len(above)]]
        chosen = np.concatenate([above, tied])
        ids, scores, keys = ids[chosen], scores[chosen], keys[chosen]
    order = np.lexsort((ids, -keys))  # by key descending, then id ascending
    return ids[order], scores[order], keys[order]


class TopK:
    """Streaming selection of the best k galaxies over chunks of (ids, scores).

    Memory holds the k kept galaxies, one chunk and the excluded ids, never the whole pool.
    ``strategy`` is "top-k", "power" or "softmax" (see :func:`selection_keys`); ``exclude``
    holds ids that must never be selected (labelled or pending). Ties are broken by id_str, so
    the result does not depend on how the pool was chunked. ids must be unique across the stream;
    duplicates are caught within a chunk and against the kept galaxies.
    """

    def __init__(
        self,
        k: int,
        strategy: str = "top-k",
        beta: float = 1.0,
        seed: int | np.random.Generator | None = None,
        exclude: Iterable[str] = (),
    ):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"expected k as an int >= 0, got {k!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        if not (np.isfinite(beta) and beta > 0):
            raise ValueError(f"expected beta > 0, got {beta!r}")
        self.k = int(k)
        self.strategy = strategy
        self.beta = float(beta)
        self.seed = _resolve_seed(seed, strategy)
        self._exclude = np.unique(np.asarray(list(exclude), dtype=str))  # sorted
        self._ids = np.array([], dtype=str)
        self._scores = np.zeros(0)
        self._keys = np.zeros(0)
        self.n_seen = 0
        self.n_excluded = 0

    def update(self, ids, scores) -> None:
        """Offer one chunk: ids (n,) of id_str, scores (n,) finite."""
        ids = np.asarray(ids, dtype=str)
        scores = np.asarray(scores, dtype=np.float64)
        if ids.ndim != 1 or scores.shape != ids.shape:
            raise ValueError(f"expected ids and scores of one shape (n,), got {ids.shape} and {scores.shape}")
        bad = ~np.isfinite(scores)
        if bad.any():
            raise ValueError(f"scores contain NaN or inf; expected finite values: galaxies {_ids_named(ids[bad])}")
        if self.strategy == "power" and (scores < 0).any():
            raise ValueError(
                f"power sampling needs scores >= 0, got negative scores: galaxies {_ids_named(ids[scores < 0])}"
            )
        unique, counts = np.unique(ids, return_counts=True)
        repeated = unique[counts > 1]
        if len(repeated) == 0:
            repeated = ids[np.isin(ids, self._ids)]
        if len(repeated):
            raise ValueError(f"expected unique ids, got repeated ids: {_ids_named(repeated)}")
        self.n_seen += len(ids)
        if len(self._exclude):
            position = np.clip(np.searchsorted(self._exclude, ids), 0, len(self._exclude) - 1)
            keep = self._exclude[position] != ids
            self.n_excluded += int((~keep).sum())
            ids, scores = ids[keep], scores[keep]
        keys = selection_keys(ids, scores, self.strategy, self.beta, self.seed)
        self._ids, self._scores, self._keys = _best(
            np.concatenate([self._ids, ids]),
            np.concatenate([self._scores, scores]),
            np.concatenate([self._keys, keys]),
            self.k,
        )

    def result(self) -> Selection:
        """The selection so far, best first (fewer than k if fewer galaxies were offered)."""
        return Selection(self._ids.copy(), self._scores.copy(), self._keys.copy())


def _ids_named(ids: np.ndarray) -> str:
    shown = ", ".join(repr(str(i)) for i in ids[:_MAX_NAMED])
    return f"[{shown}]" + (f" and {len(ids) - _MAX_NAMED} more" if len(ids) > _MAX_NAMED else "")


def select(
    ids,
    scores,
    k: int,
    strategy: str = "top-k",
    beta: float = 1.0,
    seed: int | np.random.Generator | None = None,
    exclude: Iterable[str] = (),
) -> Selection:
    """Pick k galaxies from one array of scores; the one-chunk case of :class:`TopK`."""
    selector = TopK(k, strategy=strategy, beta=beta, seed=seed, exclude=exclude)
    selector.update(ids, scores)
    return selector.result()
