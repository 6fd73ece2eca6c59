"""Negative log-likelihoods of volunteer votes, unreduced: (galaxy,) or (galaxy, question).

- Binomial, for one question with two answers: k of N votes for the first answer,
  ``-[k log rho + (N - k) log(1 - rho)]`` (optionally minus the log binomial coefficient).
- Dirichlet-multinomial, per question of a schema: ``-log DirMult(k | alpha)`` including the
  multinomial coefficient, so it equals ``-scipy.stats.dirichlet_multinomial.logpmf``.
  A question with no votes (N = 0) contributes exactly 0.

Reduce (sum over questions, mean over galaxies) in the caller. Every function checks its inputs
with one host sync on the fast path; NaN or inf raises :class:`NonFiniteError`, negative counts
(or k > N, rho outside [0, 1], alpha <= 0) raise :class:`InvalidVotesError`. Both are ValueErrors
that name the offending galaxies by index, or by id_str when ``ids`` is given.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from zoobot.ids import describe_rows
from zoobot.schema import BINOMIAL, Schema


class NonFiniteError(ValueError):
    """Predictions or vote counts hold NaN or inf; the message names the galaxies."""


class InvalidVotesError(ValueError):
    """Vote counts or likelihood parameters are out of range; the message names the galaxies."""


def _check(
    checks: list[tuple[str, torch.Tensor, torch.Tensor, type, str]],
    ids: Sequence | None,
    n_galaxies: int,
) -> None:
    """Raise for the first failing check. Each check: (name, values, ok mask, error type, fix).

    Fast path: all masks reduced on the device, one bool() sync.
    """
    if ids is not None and len(ids) != n_galaxies:
        raise ValueError(f"ids: expected {n_galaxies} ids, one per galaxy, got {len(ids)}")
    all_ok = torch.stack([ok.all() for _, _, ok, _, _ in checks]).all()
    if bool(all_ok):
        return
    for name, values, ok, error_type, fix in checks:
        if not bool(ok.all()):
            bad = ~ok
            example = values[bad][:3].tolist()
            rows = torch.nonzero(bad.reshape(len(bad), -1).any(dim=1)).flatten().tolist()
            raise error_type(f"{name} for {describe_rows(rows, ids)}, e.g. {example}; {fix}")


def _finite_checks(name: str, values: torch.Tensor, source: str) -> tuple:
    fixes = {
        "prediction": "expected finite values: training probably diverged (lower the learning "
        "rate, check the input images for NaN)",
        "label": "expected finite vote counts: a missing vote is 0, never NaN; fix the catalog",
    }
    return (f"{name} holds NaN or inf", values, torch.isfinite(values), NonFiniteError, fixes[source])


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32 (lgamma and log lose too much in bf16/fp16)."""
    dtype = torch.float32
    for tensor in tensors:
        if tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def binomial_nll(
    rho: torch.Tensor,
    k: torch.Tensor,
    n: torch.Tensor,
    include_constant: bool = False,
    ids: Sequence | None = None,
) -> torch.Tensor:
    """-log Binomial(k | N, rho), per galaxy. rho, k, n: (galaxy,) -> (galaxy,).

    With ``include_constant=False`` (default) this is ``-[k log rho + (N - k) log(1 - rho)]``,
    *without* the log binomial coefficient log C(N, k), which does not depend on rho.
    With ``include_constant=True`` it is exactly ``-scipy.stats.binom.logpmf(k, N, rho)``.
    Uses xlogy, so k = 0 with rho = 0 (or k = N with rho = 1) gives 0, not NaN.
    """
    if rho.ndim != 1 or k.shape != rho.shape or n.shape != rho.shape:
        raise ValueError(
            f"binomial_nll: expected rho, k, n of one shape (galaxy,), got {tuple(rho.shape)}, "
            f"{tuple(k.shape)}, {tuple(n.shape)}"
        )
    dtype = _float_dtype(rho)
    rho, k, n = rho.to(dtype), k.to(dtype), n.to(dtype)
    _check(
        [
            _finite_checks("rho", rho, "prediction"),
            _finite_checks("k", k, "label"),
            _finite_checks("N", n, "label"),
            ("rho outside [0, 1]", rho, (rho >= 0) & (rho <= 1), InvalidVotesError,
             "expected a vote fraction; pass sigmoid outputs"),
            ("negative k", k, k >= 0, InvalidVotesError, "expected vote counts >= 0; fix the catalog"),
            ("k > N", k, k <= n, InvalidVotesError,
             "expected k (votes for the first answer) <= N (all votes); a negative count for the "
             "second answer gives this too: fix the catalog"),
        ],
        ids,
        len(rho),
    )
    nll = -(torch.xlogy(k, rho) + torch.xlogy(n - k, 1.0 - rho))  # (galaxy,)
    if include_constant:
        log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)  # (galaxy,)
        nll = nll - log_choose
    return nll


@functools.lru_cache(maxsize=64)
def _padded_answer_index(schema: Schema) -> np.ndarray:
    """(n_questions, max_answers) answer indices per question, padded with n_answers."""
    width = max(stop - start for start, stop in schema.answer_groups)
    index = np.full((schema.n_questions, width), schema.n_answers, dtype=np.int64)
    for question, (start, stop) in enumerate(schema.answer_groups):
        index[question, : stop - start] = np.arange(start, stop)
    return index


def _sum_per_question(values: torch.Tensor, schema: Schema) -> torch.Tensor:
    """(galaxy, n_answers) -> (galaxy, n_questions): each question's sum over its answers.

    A gather into a zero-padded (galaxy, question, answer) block, then a sum: exact float32
    adds and deterministic (a one-hot matmul would lose precision under TF32).
    """
    index = torch.as_tensor(_padded_answer_index(schema), device=values.device)  # (question, slot)
    padded = torch.nn.functional.pad(values, (0, 1))  # (galaxy, answer + 1), last column 0
    return padded[:, index].sum(dim=-1)  # (galaxy, question)


def _check_answers_shape(name: str, values: torch.Tensor, schema: Schema) -> None:
    if values.ndim != 2 or values.shape[1] != schema.n_answers:
        raise ValueError(
            f"{name}: expected shape (galaxy, {schema.n_answers}) for schema {schema.name!r} "
            f"({schema.n_answers} answers), got {tuple(values.shape)}"
        )


def dirichlet_multinomial_nll(
    alpha: torch.Tensor,
    counts: torch.Tensor,
    schema: Schema,
    ids: Sequence | None = None,
) -> torch.Tensor:
    """-log DirMult(k | alpha) per question. alpha, counts: (galaxy, n_answers) -> (galaxy, n_questions).

    For each question with answers i, A = sum_i alpha_i and N = sum_i k_i:

        log DirMult = lgamma(A) - lgamma(N + A) + lgamma(N + 1)
                      + sum_i [lgamma(k_i + alpha_i) - lgamma(alpha_i) - lgamma(k_i + 1)]

    which equals ``scipy.stats.dirichlet_multinomial.logpmf(k, alpha, N)`` (the multinomial
    coefficient is included). Questions with N = 0 give exactly 0. Per-question sums are one
    gather into a padded (galaxy, question, answer) block, so there are no python loops.
    """
    _check_answers_shape("alpha", alpha, schema)
    _check_answers_shape("counts", counts, schema)
    if counts.shape[0] != alpha.shape[0]:
        raise ValueError(f"alpha has {alpha.shape[0]} galaxies but counts has {counts.shape[0]}")
    dtype = _float_dtype(alpha)
    alpha, counts = alpha.to(dtype), counts.to(dtype)
    _check(
        [
            _finite_checks("alpha", alpha, "prediction"),
            _finite_checks("counts", counts, "label"),
            ("alpha <= 0", alpha, alpha > 0, InvalidVotesError,
             "expected positive Dirichlet concentrations (GalaxyModel's head gives alpha > 0.01)"),
            ("negative counts", counts, counts >= 0, InvalidVotesError,
             "expected vote counts >= 0; fix the catalog"),
        ],
        ids,
        len(alpha),
    )
    # (galaxy, answer)
    per_answer = torch.lgamma(counts + alpha) - torch.lgamma(alpha) - torch.lgamma(counts + 1)
    total_alpha = _sum_per_question(alpha, schema)  # (galaxy, question)
    total_votes = _sum_per_question(counts, schema)  # (galaxy, question)
    log_prob = (
        torch.lgamma(total_alpha)
        - torch.lgamma(total_votes + total_alpha)
        + torch.lgamma(total_votes + 1)
        + _sum_per_question(per_answer, schema)
    )  # (galaxy, question)
    return torch.where(total_votes > 0, -log_prob, torch.zeros_like(log_prob))  # (galaxy, question)


def vote_nll(
    predictions: torch.Tensor,
    counts: torch.Tensor,
    schema: Schema,
    ids: Sequence | None = None,
) -> torch.Tensor:
    """Per-question NLL of the votes under a GalaxyModel's output: (galaxy, n_questions).

    predictions: (galaxy, n_outputs), one MC sample (e.g. ``model(x)[:, 0]``); the likelihood is
    ``schema.likelihood_of(n_outputs)``:
      - binomial (1 output, a schema of one question with two answers): rho; the binomial NLL
        (without the constant) with k = counts[:, 0], N = counts.sum(1). Returns (galaxy, 1).
      - Dirichlet-multinomial (schema.n_answers outputs): concentrations; the
        Dirichlet-multinomial NLL.
    counts: (galaxy, n_answers) vote counts in ``schema.answer_columns`` order.
    """
    _check_answers_shape("counts", counts, schema)
    if predictions.ndim != 2 or predictions.shape[0] != counts.shape[0]:
        hint = " (take one MC sample: predictions[:, 0])" if predictions.ndim == 3 else ""
        raise ValueError(
            f"predictions: expected shape (galaxy={counts.shape[0]}, n_outputs), got "
            f"{tuple(predictions.shape)}{hint}"
        )
    if schema.likelihood_of(predictions.shape[1]) == BINOMIAL:
        nll = binomial_nll(predictions[:, 0], counts[:, 0], counts.sum(dim=1), ids=ids)  # (galaxy,)
        return nll.unsqueeze(1)  # (galaxy, 1)
    return dirichlet_multinomial_nll(predictions, counts, schema, ids=ids)
