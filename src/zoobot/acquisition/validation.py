"""Checks on predictions and scoring arguments, shared by the binomial and Dirichlet scores.

Bad predictions raise :class:`InvalidPredictionsError`, which names the offending galaxies by
row (``zoobot.ids.describe_rows``) and holds them in ``galaxy_index``. Nothing is repaired.
"""

from __future__ import annotations

import numpy as np

from zoobot.ids import describe_rows
from zoobot.schema import Schema

DEFAULT_EXPECTED_VOTES = 40
#: Smallest concentration accepted (float32 cannot go below 1.4e-45 anyway).
MIN_CONCENTRATION = 1e-300


class InvalidPredictionsError(ValueError):
    """Predictions that cannot be scored; ``galaxy_index`` holds the offending rows."""

    def __init__(self, message: str, galaxy_index: np.ndarray):
        super().__init__(message)
        self.galaxy_index = galaxy_index


def as_float_array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor; torch itself is not imported here
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"expected {name} as a numeric array, got {type(values).__name__}") from error


def _raise_for_galaxies(bad: np.ndarray, what: str) -> None:
    """Raise if any galaxy (axis 0 of ``bad``) has a True entry."""
    per_galaxy = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.size else np.zeros(bad.shape[0], bool)
    if per_galaxy.any():
        index = np.flatnonzero(per_galaxy)
        raise InvalidPredictionsError(f"{what}: {describe_rows(index)}", index)


def _check_finite(values: np.ndarray, name: str) -> None:
    _raise_for_galaxies(~np.isfinite(values), f"{name} contain NaN or inf; expected finite values")


def check_rho(rho, name: str = "rho") -> np.ndarray:
    rho = as_float_array(rho, name)
    if rho.ndim != 2 or rho.shape[1] < 1:
        raise ValueError(f"expected {name} of shape (galaxy, sample) with >= 1 sample, got shape {rho.shape}")
    _check_finite(rho, name)
    _raise_for_galaxies((rho < 0) | (rho > 1), f"{name} outside [0, 1]; expected vote fractions")
    return rho


def check_alpha(alpha, schema: Schema | None) -> np.ndarray:
    """Concentrations (galaxy, sample, answer), all finite and > 0; answers match ``schema`` if given."""
    alpha = as_float_array(alpha, "alpha")
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


def check_expected_votes(expected_votes) -> int:
    if isinstance(expected_votes, bool) or not isinstance(expected_votes, (int, np.integer)):
        raise TypeError(f"expected expected_votes as an int, got {expected_votes!r}")
    if expected_votes < 1:
        raise ValueError(f"expected expected_votes >= 1, got {expected_votes}")
    return int(expected_votes)


def resolve_rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"expected rng as np.random.Generator, int seed or None, got {type(rng).__name__}")

