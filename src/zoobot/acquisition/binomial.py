"""BALD and predictive entropy of a binomial single-question model, by exact enumeration.

rho: (galaxy, sample), the predicted fraction of votes for the first answer per dropout sample.
Scores are over the k = 0..N votes of N = ``expected_votes`` volunteers (docs/acquisition.md).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from zoobot.acquisition.entropy import enumerated_entropies, in_chunks
from zoobot.acquisition.validation import DEFAULT_EXPECTED_VOTES, check_expected_votes, check_rho


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
    return in_chunks(lambda r: enumerated_entropies(_binomial_log_pmf(r, n)), rho, rho.shape[1] * (n + 1) * 4)


def binomial_bald(rho, expected_votes: int = DEFAULT_EXPECTED_VOTES) -> np.ndarray:
    """Mutual information between the votes of ``expected_votes`` volunteers and the model.

    rho: (galaxy, sample) predicted vote fraction per dropout sample, in [0, 1].
    Returns (galaxy,) MI in nats, between 0 and min(log(expected_votes + 1), log(n_samples)).
    """
    n = check_expected_votes(expected_votes)
    entropy_of_mean, mean_entropy = _binomial_entropies(check_rho(rho), n)  # (galaxy,) each
    return np.maximum(entropy_of_mean - mean_entropy, 0.0)  # (galaxy,); clip roundoff below 0


def binomial_predictive_entropy(rho, expected_votes: int = DEFAULT_EXPECTED_VOTES) -> np.ndarray:
    """Entropy of the mean predictive Binomial vote distribution. rho: (galaxy, sample)."""
    n = check_expected_votes(expected_votes)
    entropy_of_mean, _ = _binomial_entropies(check_rho(rho), n)  # (galaxy,)
    return entropy_of_mean
