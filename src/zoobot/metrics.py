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

- ``spread``: how much the predictions differ between galaxies: the standard deviation across
  galaxies of the expected vote fractions (sample mean), root-mean-square over the answers (per
  question, and over every answer overall). A dead head predicts the same for every galaxy:
  spread near 0.

**The image-blind baseline** (:func:`image_blind_prediction`, :func:`image_blind_nll`) predicts
the same distribution of votes for every galaxy, fitted to the training votes alone by maximum
likelihood: for a binomial question rho = the training fraction of votes for the first answer;
for a tree, per question, the Dirichlet concentrations that maximise the Dirichlet-multinomial
likelihood of the training votes (Minka's fixed point), inside the range the model's head can
reach. Its mean ``alpha / sum(alpha)`` is close to the training split's mean vote fractions; its
size says how much the fractions vary between galaxies. It is the best a model that ignores the
images can do, so a model that does not beat it on held-out votes has learnt nothing from the
images (:func:`compare_with_baseline`: ``beats_baseline``, ``collapsed``).

Undefined values (no galaxy qualifies) are ``None``, so the dict serialises as strict JSON.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import digamma, gammaln

from zoobot.losses import vote_nll
from zoobot.models.heads import ALPHA_MAX, ALPHA_MIN, RHO_EPS
from zoobot.schema import BINOMIAL, Schema

CHUNK_GALAXIES = 4096  # bounds the memory of the per-sample likelihoods
#: A model whose expected vote fractions differ between galaxies by less than this (standard
#: deviation across galaxies, root-mean-square over answers) predicts the same for every galaxy:
#: collapsed. Measured on GZ1 and GZ2 test splits: dead or prior-only heads 0.0000-0.009,
#: trained models that beat the baseline 0.11-0.30, slow starters 0.01-0.03 in the first epoch
#: their val loss beat the baseline (docs/training.md, "Learning from few labels").
COLLAPSE_SPREAD = 0.01
FIT_ITERATIONS = 10_000
FIT_TOLERANCE = 1e-10


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


def prediction_spread(fractions: np.ndarray) -> float | None:
    """(galaxy, answer) -> std across galaxies, root-mean-square over answers; None below 2 galaxies."""
    if len(fractions) < 2:
        return None
    return float(np.sqrt(fractions.var(axis=0).mean()))


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
    spreads = {}
    for q, (question, (start, stop)) in enumerate(zip(schema.questions, schema.answer_groups)):
        n_votes = counts[:, start:stop].sum(axis=1)  # (galaxy,)
        has_votes = n_votes > 0
        error = predicted[has_votes, start:stop] - observed[has_votes, start:stop]  # (voted, answer)
        top_observed = observed[:, start:stop].argmax(axis=1)
        top_predicted = predicted[:, start:stop].argmax(axis=1)
        correct = top_observed == top_predicted
        all_errors.append(error.ravel())
        confident = has_votes & (n_votes >= min_votes) & (observed[:, start:stop].max(axis=1) >= confident_fraction)
        spreads[question.name] = prediction_spread(predicted[:, start:stop])
        questions[question.name] = {
            "n_galaxies_with_votes": int(has_votes.sum()),
            "loss": _mean_or_none(mean_loss[has_votes, q]),
            "mixture_loss": _mean_or_none(mixture_loss[has_votes, q]),
            "fraction_mae": _mean_or_none(np.abs(error)),
            "fraction_rmse": None if not error.size else float(np.sqrt((error**2).mean())),
            "accuracy": _mean_or_none(correct[confident].astype(float)),
            "n_confident": int(confident.sum()),
            "accuracy_all": _mean_or_none(correct[has_votes].astype(float)),
            "spread": spreads[question.name],
        }
    return {
        "loss": float(mean_loss.sum(axis=1).mean()) if len(counts) else None,
        "mixture_loss": float(mixture_loss.sum(axis=1).mean()) if len(counts) else None,
        "mae": _mean_or_none(np.abs(np.concatenate(all_errors))),
        "rmse": None if not sum(e.size for e in all_errors) else float(np.sqrt((np.concatenate(all_errors) ** 2).mean())),
        "spread": prediction_spread(predicted),
        "n_galaxies": int(len(counts)),
        "n_samples": int(predictions.shape[1]),
        "likelihood": likelihood,
        "confident_fraction": confident_fraction,
        "min_votes": min_votes,
        "questions": questions,
    }


def _check_counts(counts: np.ndarray, schema: Schema, name: str) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != schema.n_answers:
        raise ValueError(
            f"{name}: expected shape (galaxy, {schema.n_answers}) (one column per answer of schema "
            f"{schema.name!r}), got {counts.shape}"
        )
    bad = ~np.isfinite(counts).all(axis=1) | (counts < 0).any(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}: vote counts must be finite and >= 0; bad rows {np.flatnonzero(bad)[:5].tolist()} "
            f"({int(bad.sum())} in all)"
        )
    return counts


def _fit_dirichlet_multinomial(counts: np.ndarray, alpha_min: float, alpha_max: float) -> np.ndarray:
    """Maximum-likelihood concentrations of one question's votes (galaxy, answer) -> (answer,).

    Minka's fixed point, alpha_i <- alpha_i sum_g [psi(k_gi + alpha_i) - psi(alpha_i)] /
    sum_g [psi(N_g + A) - psi(A)], clipped to [alpha_min, alpha_max]: each step maximises a
    separable lower bound, so clipping keeps the likelihood rising. Galaxies without votes
    (N_g = 0) carry no information and are left out by the caller.
    """
    totals = counts.sum(axis=1)  # (galaxy,)
    alpha = np.clip(counts.sum(axis=0) / totals.sum(), alpha_min, alpha_max)  # (answer,)
    for _ in range(FIT_ITERATIONS):
        total_alpha = alpha.sum()
        numerator = (digamma(counts + alpha) - digamma(alpha)).sum(axis=0)  # (answer,)
        denominator = (digamma(totals + total_alpha) - digamma(total_alpha)).sum()
        updated = np.clip(alpha * numerator / denominator, alpha_min, alpha_max)
        if np.max(np.abs(updated - alpha) / alpha) < FIT_TOLERANCE:
            return updated
        alpha = updated
    return alpha


def image_blind_prediction(
    train_counts: np.ndarray,
    schema: Schema,
    *,
    alpha_min: float = ALPHA_MIN,
    alpha_max: float = ALPHA_MAX,
) -> np.ndarray:
    """The one prediction (n_outputs,) that fits the training votes (galaxy, answer) best.

    Binomial schema: ``[rho]``, rho = (votes for the first answer) / (all votes), within
    [RHO_EPS, 1 - RHO_EPS]. Otherwise one Dirichlet concentration per answer, fitted per
    question by maximum likelihood within [alpha_min, alpha_max] (the head's range by
    default); a question without any training vote gets alpha_min for each answer.
    """
    counts = _check_counts(train_counts, schema, "train_counts")
    if schema.likelihood == BINOMIAL:
        total = counts.sum()
        if total == 0:
            raise ValueError("train_counts: no votes at all; the baseline needs training votes")
        return np.array([np.clip(counts[:, 0].sum() / total, RHO_EPS, 1.0 - RHO_EPS)])
    alpha = np.full(schema.n_answers, float(alpha_min))
    for start, stop in schema.answer_groups:
        block = counts[:, start:stop]  # (galaxy, answers of this question)
        voted = block[block.sum(axis=1) > 0]
        if len(voted):
            alpha[start:stop] = _fit_dirichlet_multinomial(voted, alpha_min, alpha_max)
    return alpha


def _constant_nll(prediction: np.ndarray, counts: np.ndarray, schema: Schema) -> np.ndarray:
    """NLL of one prediction (n_outputs,) for every galaxy: (galaxy, answer) -> (galaxy, question).

    The same quantity as ``losses.vote_nll`` (binomial without log C(N, k); Dirichlet-multinomial
    with the multinomial coefficient; 0 for a question without votes), in numpy.
    """
    if schema.likelihood == BINOMIAL:
        rho = float(prediction[0])
        k, total = counts[:, 0], counts.sum(axis=1)  # (galaxy,)
        nll = -(k * np.log(rho) + (total - k) * np.log1p(-rho))  # (galaxy,)
        return nll[:, None]
    nll = np.zeros((len(counts), schema.n_questions))
    for q, (start, stop) in enumerate(schema.answer_groups):
        alpha = prediction[start:stop]  # (answer,)
        k = counts[:, start:stop]  # (galaxy, answer)
        total = k.sum(axis=1)  # (galaxy,)
        log_p = (
            gammaln(alpha.sum()) - gammaln(total + alpha.sum()) + gammaln(total + 1)
            + (gammaln(k + alpha) - gammaln(alpha) - gammaln(k + 1)).sum(axis=1)
        )  # (galaxy,)
        nll[:, q] = np.where(total > 0, -log_p, 0.0)
    return nll


def image_blind_nll(train_counts: np.ndarray, counts: np.ndarray, schema: Schema, **bounds: float) -> dict:
    """The image-blind baseline's NLL on ``counts`` (galaxy, answer), fitted on ``train_counts``.

    Returns ``{"loss", "questions": {name: loss}, "prediction": [...]}``, averaged as
    :func:`evaluate_predictions` averages ``loss``: overall, the mean over galaxies of the sum
    over questions; per question, the mean over galaxies with a vote on it (None without any).
    ``bounds``: ``alpha_min`` / ``alpha_max`` for :func:`image_blind_prediction`. Pure numpy.
    """
    prediction = image_blind_prediction(train_counts, schema, **bounds)
    counts = _check_counts(counts, schema, "counts")
    nll = _constant_nll(prediction, counts, schema)  # (galaxy, question)
    questions = {}
    for q, (question, (start, stop)) in enumerate(zip(schema.questions, schema.answer_groups)):
        voted = counts[:, start:stop].sum(axis=1) > 0
        questions[question.name] = _mean_or_none(nll[voted, q])
    return {
        "loss": float(nll.sum(axis=1).mean()) if len(counts) else None,
        "questions": questions,
        "prediction": prediction.tolist(),
    }


def compare_with_baseline(report: dict, baseline: dict, *, collapse_spread: float = COLLAPSE_SPREAD) -> dict:
    """Has the model learnt from the images? ``report`` from :func:`evaluate_predictions`,
    ``baseline`` from :func:`image_blind_nll` on the same galaxies.

    Returns ``{"baseline_loss", "beats_baseline", "collapsed", "spread", "questions": {name:
    {"baseline_loss", "beats_baseline"}}}``. ``beats_baseline``: the model's predictive NLL
    (``mixture_loss``) is below the baseline's. ``collapsed``: its predictions differ between
    galaxies by less than ``collapse_spread`` (``spread``), a dead or prior-only head.
    """
    questions = {}
    for name, metrics in report["questions"].items():
        model_loss, baseline_loss = metrics["mixture_loss"], baseline["questions"][name]
        beats = None if model_loss is None or baseline_loss is None else bool(model_loss < baseline_loss)
        questions[name] = {"baseline_loss": baseline_loss, "beats_baseline": beats}
    if report["mixture_loss"] is None or baseline["loss"] is None:
        raise ValueError("compare_with_baseline: no galaxies to compare on (the split is empty)")
    spread = report["spread"]
    return {
        "baseline_loss": baseline["loss"],
        "beats_baseline": bool(report["mixture_loss"] < baseline["loss"]),
        "collapsed": spread is not None and spread < collapse_spread,
        "spread": spread,
        "collapse_spread": collapse_spread,
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
