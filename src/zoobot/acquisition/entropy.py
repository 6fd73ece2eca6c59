"""Entropies of exactly enumerated vote distributions, in galaxy chunks of bounded memory."""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

#: Working arrays are processed in galaxy chunks of at most about this many float64 elements.
CHUNK_ELEMENTS = 1 << 18
#: log 0 = -inf is replaced by this before multiplying by p = 0, so that 0 * log 0 = 0 without a
#: second logarithm over the largest array (as xlogy(p, p) would need).
_MOST_NEGATIVE = np.finfo(np.float64).min


def in_chunks(fn, array: np.ndarray, elements_per_galaxy: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` to galaxy chunks of ``array`` so that working memory stays bounded.

    ``fn`` maps a chunk (galaxy, ...) to two (galaxy,) arrays; the chunks are concatenated.
    """
    n_galaxies = array.shape[0]
    if n_galaxies == 0:
        return np.zeros(0), np.zeros(0)
    size = max(1, CHUNK_ELEMENTS // max(1, elements_per_galaxy))
    parts = [fn(array[start : start + size]) for start in range(0, n_galaxies, size)]
    first, second = zip(*parts)
    return np.concatenate(first), np.concatenate(second)


def enumerated_entropies(log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H[mean_t p_t] and mean_t H[p_t] from log p of every vote outcome; overwrites log_p."""
    p = np.exp(log_p)  # (galaxy, sample, outcome)
    p_mean = p.mean(axis=1)  # (galaxy, outcome)
    entropy_of_mean = -xlogy(p_mean, p_mean).sum(axis=-1)  # (galaxy,)
    np.maximum(log_p, _MOST_NEGATIVE, out=log_p)  # log 0 = -inf -> finite, so that 0 * log 0 = 0
    p *= log_p  # (galaxy, sample, outcome): p log p
    mean_entropy = -p.sum(axis=-1).mean(axis=-1)  # (galaxy,)
    return entropy_of_mean, mean_entropy
