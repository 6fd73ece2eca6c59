"""Evaluation metrics for MC-dropout predictions against volunteer votes.

Predictions are laid out (galaxy, sample, output): for a binomial model the output is rho, the
predicted fraction of votes for the question's first answer (n_outputs = 1); for a
Dirichlet-multinomial model it is one concentration alpha per answer (n_outputs = n_answers).

``Schema.likelihood_of`` says which of the two the outputs hold, and
``Schema.expected_fractions`` turns either into expected vote fractions per answer:
rho -> (rho, 1 - rho); alpha -> alpha / sum(alpha) within each question.

:func:`evaluate_predictions` reports, per question and overall:

- ``loss``: the vote negative log-likelihood (``zoobot.losses.vote_nll``) of the *sample-mean
  prediction* (mean rho, or mean alpha, over the MC samples), averaged over the galaxies
  that have at least one vote on that question. The overall ``loss`` is the mean over all
  galaxies of the per-question NLL summed over questions, the quantity training minimises
  (a question with no votes adds 0).
- ``mixture_loss``: the NLL of the Bayesian predictive mixture,
  ``-log mean_t p(votes | theta_t)``, averaged the same way. It rewards honest spread across
  samples; it is never larger than the mean of the per-sample NLLs (Jensen).
- ``fraction_mae`` / ``fraction_rmse``: errors of the expected vote fractions (sample mean)
  against the volunteers' vote fractions, over the answers of the question, on galaxies with
  at least one vote on it.
  The overall ``mae`` / ``rmse`` pool the errors of every (galaxy, answer) whose question has
  votes.
- ``accuracy``: on galaxies with a *confident volunteer majority* (top answer fraction
  >= ``confident_fraction`` with >= ``min_votes`` votes on the question), the fraction where the
  predicted top answer equals the volunteers' top answer; ``n_confident`` counts them.
  ``accuracy_all`` is the same on every galaxy with a vote (ties go to the first answer), which
  is the only accuracy there is when each galaxy has a single vote (e.g. GZ1 classes).

Undefined values (no galaxy qualifies) are ``None``, so the dict serialises as strict JSON.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from zoobot.losses import vote_nll
from zoobot.schema import Schema

CHUNK_GALAXIES = 4096  # bounds the memory of the per-sample likelihoods


def _check_inputs(predictions: np.ndarray, counts: np.ndarray, schema: Schema) -> None:
    if predictions.ndim != 3:
        raise ValueError(
            f"predictions: expected shape (galaxy, sample, output), got {predictions.shape}; "
            "for one sample per galaxy use predictions[:, None, :]"
        )
    if counts.shape != (predictions.shape[0], schema.n_answers):
        raise ValueError(
            f"counts: expected shape ({predictions.shape[0]}, {schema.n_answers}) (galaxy, answer "
            f"of schema {schema.name!r}), got {counts.shape}"
        )
    bad = ~np.isfinite(predictions).all(axis=(1, 2))
    if bad.any():
        raise ValueError(
            f"predictions are NaN or infinite for galaxies at rows {np.flatnonzero(bad)[:5].tolist()} "
            f"({int(bad.sum())} in all); the model diverged, retrain it"
        )


def _nll(predictions: np.ndarray, counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(rows, output), (rows, answer) -> (rows, question) NLL, float64."""
    with torch.no_grad():
        nll = vote_nll(
            torch.as_tensor(predictions, dtype=torch.float64),
            torch.as_tensor(counts, dtype=torch.float64),
            schema,
        )
    return nll.double().numpy()


def _losses(predictions: np.ndarray, counts: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """NLL of the sample-mean prediction and of the predictive mixture, each (galaxy, question)."""
    n_galaxies, n_samples, n_outputs = predictions.shape
    mean_losses, mixture_losses = [], []
    for start in range(0, n_galaxies, CHUNK_GALAXIES):
        chunk = predictions[start : start + CHUNK_GALAXIES]  # (galaxy, sample, output)
        chunk_counts = counts[start : start + CHUNK_GALAXIES]  # (galaxy, answer)
        mean_losses.append(_nll(chunk.mean(axis=1), chunk_counts, schema))
        repeated = np.repeat(chunk_counts, n_samples, axis=0)  # (galaxy * sample, answer)
        per_sample = _nll(chunk.reshape(-1, n_outputs), repeated, schema)
        per_sample = per_sample.reshape(len(chunk), n_samples, -1)  # (galaxy, sample, question)
        # -log mean_t exp(-nll_t), stably
        log_mean = torch.logsumexp(torch.from_numpy(-per_sample), dim=1).numpy() - math.log(n_samples)
        mixture_losses.append(-log_mean)
    return np.concatenate(mean_losses), np.concatenate(mixture_losses)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def evaluate_predictions(
    predictions: np.ndarray,
    counts: np.ndarray,
    schema: Schema,
    *,
    confident_fraction: float = 0.8,
    min_votes: int = 5,
) -> dict:
    """Metrics of MC predictions (galaxy, sample, output) against vote counts (galaxy, answer).

    Returns ``{"loss", "mixture_loss", "n_galaxies", "questions": {name: {...}}}``; see the
    module docstring for each metric's definition.
    """
    predictions = np.asarray(predictions)
    counts = np.asarray(counts)
    _check_inputs(predictions, counts, schema)
    likelihood = schema.likelihood_of(predictions.shape[-1])
    mean_loss, mixture_loss = _losses(predictions, counts, schema)  # (galaxy, question)
    predicted = schema.expected_fractions(predictions).mean(axis=1)  # (galaxy, answer)
    observed = schema.vote_fractions(counts)  # (galaxy, answer)

    questions = {}
    all_errors = []
    for q, (question, (start, stop)) in enumerate(zip(schema.questions, schema.answer_groups)):
        n_votes = counts[:, start:stop].sum(axis=1)  # (galaxy,)
        has_votes = n_votes > 0
        error = predicted[has_votes, start:stop] - observed[has_votes, start:stop]  # (voted, answer)
        top_observed = observed[:, start:stop].argmax(axis=1)
        top_predicted = predicted[:, start:stop].argmax(axis=1)
        correct = top_observed == top_predicted
        all_errors.append(error.ravel())
        confident = has_votes & (n_votes >= min_votes) & (observed[:, start:stop].max(axis=1) >= confident_fraction)
        questions[question.name] = {
            "n_galaxies_with_votes": int(has_votes.sum()),
            "loss": _mean_or_none(mean_loss[has_votes, q]),
            "mixture_loss": _mean_or_none(mixture_loss[has_votes, q]),
            "fraction_mae": _mean_or_none(np.abs(error)),
            "fraction_rmse": None if not error.size else float(np.sqrt((error**2).mean())),
            "accuracy": _mean_or_none(correct[confident].astype(float)),
            "n_confident": int(confident.sum()),
            "accuracy_all": _mean_or_none(correct[has_votes].astype(float)),
        }
    return {
        "loss": float(mean_loss.sum(axis=1).mean()) if len(counts) else None,
        "mixture_loss": float(mixture_loss.sum(axis=1).mean()) if len(counts) else None,
        "mae": _mean_or_none(np.abs(np.concatenate(all_errors))),
        "rmse": None if not sum(e.size for e in all_errors) else float(np.sqrt((np.concatenate(all_errors) ** 2).mean())),
        "n_galaxies": int(len(counts)),
        "n_samples": int(predictions.shape[1]),
        "likelihood": likelihood,
        "confident_fraction": confident_fraction,
        "min_votes": min_votes,
        "questions": questions,
    }


def format_metrics(metrics: dict) -> str:
    """A plain-text table of :func:`evaluate_predictions` output, one row per question."""

    def cell(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = f"{'question':<28} {'n':>6} {'loss':>8} {'mix.loss':>8} {'MAE':>6} {'RMSE':>6} {'acc':>6} {'n_conf':>6} {'acc_all':>7}"
    lines = [header, "-" * len(header)]
    for name, q in metrics["questions"].items():
        lines.append(
            f"{name[:28]:<28} {q['n_galaxies_with_votes']:>6} {cell(q['loss']):>8} "
            f"{cell(q['mixture_loss']):>8} {cell(q['fraction_mae']):>6} {cell(q['fraction_rmse']):>6} "
            f"{cell(q['accuracy']):>6} {q['n_confident']:>6} {cell(q['accuracy_all']):>7}"
        )
    lines.append(
        f"overall: loss {cell(metrics['loss'])} (summed over questions, mean over "
        f"{metrics['n_galaxies']} galaxies), mixture loss {cell(metrics['mixture_loss'])}, "
        f"fraction MAE {cell(metrics['mae'])}, RMSE {cell(metrics['rmse'])}, "
        f"{metrics['n_samples']} MC samples"
    )
    return "\n".join(lines)
