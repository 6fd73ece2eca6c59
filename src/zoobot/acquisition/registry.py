"""Scoring functions with one signature, and the registry that names them.

Every registered function maps MC predictions (galaxy, sample, output) to scores (galaxy,):
``score(predictions, schema=None, expected_votes=40, rng=None)``. ``bald`` and
``predictive_entropy`` ask the schema which likelihood the outputs carry
(``Schema.likelihood_of``); without a schema, one output means binomial rho.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Protocol

import numpy as np

from zoobot.acquisition.binomial import binomial_bald, binomial_predictive_entropy
from zoobot.acquisition.dirichlet import (
    DRAWS_PER_SAMPLE,
    MAX_EXACT_OUTCOMES,
    dirichlet_bald,
    dirichlet_predictive_entropy,
)
from zoobot.acquisition.validation import DEFAULT_EXPECTED_VOTES, as_float_array, resolve_rng
from zoobot.schema import BINOMIAL, DIRICHLET_MULTINOMIAL, Schema


class AcquisitionFunction(Protocol):
    """predictions (galaxy, sample, output), schema, expected_votes, rng -> scores (galaxy,)."""

    def __call__(
        self,
        predictions: np.ndarray,
        schema: Schema | None = None,
        expected_votes: int = DEFAULT_EXPECTED_VOTES,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray: ...


def _split_predictions(predictions, schema: Schema | None) -> tuple[str, np.ndarray]:
    """(galaxy, sample, output) -> (BINOMIAL, rho (galaxy, sample)) or (DIRICHLET_MULTINOMIAL, alpha).

    ``schema.likelihood_of(n_outputs)`` decides; without a schema only 1 output (rho) is accepted.
    """
    predictions = as_float_array(predictions, "predictions")
    if predictions.ndim != 3:
        raise ValueError(
            f"expected predictions of shape (galaxy, sample, output), got shape {predictions.shape}"
        )
    n_outputs = predictions.shape[2]
    if schema is None:
        if n_outputs != 1:
            raise ValueError(
                f"expected 1 output (binomial rho) or a schema for {n_outputs} Dirichlet outputs, got no schema"
            )
        return BINOMIAL, predictions[..., 0]
    if schema.likelihood_of(n_outputs) == BINOMIAL:
        return BINOMIAL, predictions[..., 0]
    return DIRICHLET_MULTINOMIAL, predictions


def _by_likelihood(binomial_fn, dirichlet_fn, predictions, schema, expected_votes, rng, max_outcomes, draws_per_sample):
    """Route (galaxy, sample, output) predictions to the binomial or Dirichlet form of a score."""
    likelihood, values = _split_predictions(predictions, schema)
    if likelihood == BINOMIAL:
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
    """BALD scores (galaxy,) from predictions (galaxy, sample, output); see :func:`_split_predictions`."""
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
    return resolve_rng(rng).random(int(n_galaxies))


def random_baseline(
    predictions,
    schema: Schema | None = None,
    expected_votes: int = DEFAULT_EXPECTED_VOTES,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Random scores with the uniform signature; only the number of galaxies is used."""
    predictions = as_float_array(predictions, "predictions")
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


def list_acquisitions() -> tuple[str, ...]:
    """The registered acquisition names, sorted: the valid values of ``get_acquisition(name)``."""
    return tuple(sorted(ACQUISITION_FUNCTIONS))


def get_acquisition(name: str, **options) -> AcquisitionFunction:
    """The scoring function registered as ``name``, with keyword ``options`` bound.

    ``get_acquisition("bald", max_outcomes=5000)(predictions, schema, 40, rng)`` -> (galaxy,).
    """
    if name not in ACQUISITION_FUNCTIONS:
        raise KeyError(f"unknown acquisition {name!r}; expected one of {list(list_acquisitions())}")
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

