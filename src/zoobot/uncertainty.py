"""Two intervals of MC predictions, never confused, and the coverage of the predictive one.

Predictions are (galaxy, sample, output): rho per sample for a binomial model (the expected
fraction of votes for the question's first answer), else one Dirichlet concentration alpha per
answer (``Schema.likelihood_of``).

- **Credible interval of the expected fraction** (:func:`credible_interval`): percentiles
  ``50 (1 - L)`` and ``50 (1 + L)`` of the T sampled expected fractions. It says where the
  model thinks the *mean* vote fraction lies. It says nothing about the scatter of the votes of
  N volunteers, so it under-covers observed vote fractions.
- **Posterior predictive interval of the observed fraction** (:func:`predictive_intervals`):
  the vote count k of one answer out of N votes on its question follows the mixture over
  samples t of
    - binomial: ``Binomial(N, p_t)``, p_t = rho_t for the first answer, 1 - rho_t for the second;
    - Dirichlet-multinomial: the marginal of ``DirMult(N, alpha_t)`` for answer a,
      ``BetaBinomial(N, alpha_t[a], alpha_t[0] - alpha_t[a])``, alpha_t[0] the question's sum.
  Convention: equal-tailed, on the discrete mixture CDF F,
  ``lo = min k with F(k) >= (1 - L) / 2`` and ``hi = min k with F(k) >= (1 + L) / 2``
  (F compared with a tolerance of ``CDF_TOLERANCE``), divided by N. The interval holds at least
  L of the predictive mass (more for small N: the counts are discrete); its exact mass is the
  ``predicted`` coverage of :func:`coverage`.

N is per galaxy and question (``votes``: an int for every question, or (galaxy, question)
counts, e.g. :func:`question_votes` of the observed votes: the number of volunteers who
answered that question).

:func:`coverage` measures, per question, on galaxies with N >= 1 votes on it, how often the
observed k of each (galaxy, answer) lies in the predictive interval at each level, next to the
interval's predicted mass and the nominal level; the same for the credible interval (as k / N);
and the discrete coverage of Walmsley et al. 2019 (their coverage plot): for w = 0..W, the
predicted probability that k lies within +-w of ``round(E[k])`` (the predictive mean, rounded
to the nearest count) against the observed frequency. Memory is bounded: galaxies are read in
chunks of ``CHUNK_GALAXIES`` and the pmf is built in blocks of at most ``BLOCK_ELEMENTS``
(row, sample, answer, count) values, galaxies of similar N together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from zoobot.schema import BINOMIAL, Schema

LEVELS = (0.5, 0.68, 0.9, 0.95)
DEFAULT_VOTES = 40  # volunteers per question when a galaxy's own count is unknown (the 2019 paper's N)
MAX_ERROR = 10  # the +-w of the discrete coverage runs over w = 0..MAX_ERROR
CDF_TOLERANCE = 1e-9  # F(k) >= q - CDF_TOLERANCE counts as F(k) >= q (summation roundoff)
CHUNK_GALAXIES = 8192  # galaxies read from (memory-mapped) predictions at a time
BLOCK_ELEMENTS = 1 << 16  # (row, sample, answer, count) values per pmf block: 512 kB arrays stay in cache
INTERVAL_DEFINITION = (
    "equal-tailed posterior predictive interval of k out of N votes: lo = min k with F(k) >= (1-L)/2, "
    "hi = min k with F(k) >= (1+L)/2, F the CDF of the mixture over samples of Binomial(N, rho_t) or "
    "BetaBinomial(N, alpha_a, alpha_0 - alpha_a); N = votes the galaxy got on the question"
)


# ---------------------------------------------------------------- checks


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Interval levels, each strictly between 0 and 1."""
    levels = tuple(float(level) for level in levels)
    bad = [level for level in levels if not 0 < level < 1]
    if not levels or bad:
        raise ValueError(f"levels: expected probabilities strictly between 0 and 1 (e.g. 0.9), got {list(levels)}")
    return levels


def _check_predictions(predictions: np.ndarray, schema: Schema) -> str:
    """The likelihood of (galaxy, sample, output) predictions; raises naming bad rows."""
    if predictions.ndim != 3:
        raise ValueError(
            f"predictions: expected shape (galaxy, sample, output), got {predictions.shape}; "
            "for one sample per galaxy use predictions[:, None, :]"
        )
    if predictions.shape[1] < 1:
        raise ValueError(f"predictions: expected at least one sample per galaxy, got shape {predictions.shape}")
    return schema.likelihood_of(predictions.shape[-1])


def _check_values(predictions: np.ndarray, likelihood: str, first_row: int) -> None:
    """Finite rho in [0, 1] or finite alpha > 0; raises naming the rows (counted from ``first_row``)."""
    if likelihood == BINOMIAL:
        bad = ~((predictions >= 0) & (predictions <= 1)).all(axis=(1, 2))
        expected = "binomial rho in [0, 1]"
    else:
        bad = ~(np.isfinite(predictions) & (predictions > 0)).all(axis=(1, 2))
        expected = "finite Dirichlet concentrations > 0"
    if bad.any():
        rows = (np.flatnonzero(bad)[:5] + first_row).tolist()
        raise ValueError(
            f"predictions: expected {expected}, got other values (NaN, infinite or out of range) for "
            f"galaxies at rows {rows} ({int(bad.sum())} in this chunk); the model diverged, retrain it"
        )


def question_votes(counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(galaxy, answer) vote counts -> (galaxy, question) votes on each question, int64."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != schema.n_answers:
        raise ValueError(
            f"counts: expected shape (galaxy, {schema.n_answers}) (galaxy, answer of schema "
            f"{schema.name!r}), got {counts.shape}"
        )
    return np.stack([counts[:, start:stop].sum(axis=1) for start, stop in schema.answer_groups], axis=1).astype(np.int64)


def _votes_array(votes, n_galaxies: int, schema: Schema) -> np.ndarray:
    """An int (every question) or (galaxy, question) counts -> (galaxy, question) int64 >= 0."""
    if np.ndim(votes) == 0:
        if int(votes) != votes or votes < 1:
            raise ValueError(f"votes: expected a whole number of volunteers >= 1, got {votes!r}")
        return np.full((n_galaxies, schema.n_questions), int(votes), dtype=np.int64)
    votes = np.asarray(votes)
    if votes.shape != (n_galaxies, schema.n_questions):
        raise ValueError(
            f"votes: expected an int or shape ({n_galaxies}, {schema.n_questions}) (galaxy, question of "
            f"schema {schema.name!r}), got {votes.shape}"
        )
    if not np.issubdtype(votes.dtype, np.integer) or (votes < 0).any():
        raise ValueError(f"votes: expected whole numbers of votes >= 0, got dtype {votes.dtype} with values {np.unique(votes)[:5]}")
    return votes.astype(np.int64)


# ---------------------------------------------------------------- credible interval


def credible_interval(predictions, schema: Schema, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Credible interval of the expected fraction: (low, high), each (galaxy, answer) float64.

    The ``50 (1 - level)`` and ``50 (1 + level)`` percentiles (numpy's linear interpolation) of
    the T sampled expected fractions (``Schema.expected_fractions``).
    """
    (level,) = check_levels([level])
    predictions = np.asarray(predictions)
    _check_predictions(predictions, schema)
    low, high = [], []
    for start in range(0, len(predictions), CHUNK_GALAXIES):
        fractions = schema.expected_fractions(predictions[start : start + CHUNK_GALAXIES])  # (galaxy, sample, answer)
        chunk_low, chunk_high = np.percentile(fractions, [50 * (1 - level), 50 * (1 + level)], axis=1)
        low.append(chunk_low)
        high.append(chunk_high)
    if not low:
        empty = np.zeros((0, schema.n_answers))
        return empty, empty.copy()
    return np.concatenate(low), np.concatenate(high)


# ---------------------------------------------------------------- posterior predictive pmf


def _answer_parameters(chunk: np.ndarray, schema: Schema, likelihood: str, start: int, stop: int):
    """Per-answer parameters of one question: binomial p (row, sample, answer), or (a, b) for the
    Beta-binomial marginal, a = alpha of the answer, b = the question's other alphas summed."""
    if likelihood == BINOMIAL:
        rho = chunk[..., 0].astype(np.float64)  # (row, sample)
        return np.stack([rho, 1.0 - rho], axis=-1), None  # (row, sample, 2)
    alpha = chunk[..., start:stop].astype(np.float64)  # (row, sample, answer)
    return alpha, alpha.sum(axis=-1, keepdims=True) - alpha


def _mixture_pmf(p_or_a: np.ndarray, b: np.ndarray | None, n: np.ndarray) -> np.ndarray:
    """Mixture over samples of the per-answer pmf of k = 0..max(n).

    p_or_a: (row, sample, answer) binomial p, or Beta-binomial a with b (row, sample, answer);
    n: (row,) votes. Returns (row, answer, K), K = max(n) + 1, exactly 0 for k > n.
    """
    n_max = int(n.max())
    k = np.arange(n_max + 1)  # (K,)
    remaining = n[:, None] - k  # (row, K): n - k
    valid = remaining >= 0  # (row, K)
    if b is None:
        log_factorial = gammaln(k + 1.0)  # (K,)
        log_choose = log_factorial[n][:, None] - log_factorial[k] - log_factorial[np.maximum(remaining, 0)]  # (row, K)
        p = p_or_a[..., None]  # (row, sample, answer, 1)
        log_pmf = xlogy(k, p) + xlog1py(np.maximum(remaining, 0)[:, None, None, :], -p)  # (row, sample, answer, K)
        log_pmf += log_choose[:, None, None, :]
    else:
        # Beta-binomial by its ratio p(k + 1) / p(k) = (n - k) (a + k) / ((k + 1) (b + n - k - 1)), in logs
        n_ = n[:, None, None]  # (row, 1, 1)
        log_first = gammaln(b + n_) - gammaln(b) - gammaln(p_or_a + b + n_) + gammaln(p_or_a + b)  # (row, sample, answer): log p(0)
        step = np.log(np.maximum(remaining[:, :-1], 1)) - np.log(k[1:])  # (row, K - 1): log (n - k) / (k + 1)
        later = np.maximum(remaining[:, None, None, :-1] - 1, 0)  # (row, 1, 1, K - 1): n - k - 1, 0 past n
        ratio = np.log((p_or_a[..., None] + k[:-1]) / (b[..., None] + later))  # (row, sample, answer, K - 1)
        ratio += step[:, None, None, :]
        log_pmf = np.empty(ratio.shape[:-1] + (n_max + 1,))  # (row, sample, answer, K)
        log_pmf[..., 0] = log_first
        np.cumsum(ratio, axis=-1, out=log_pmf[..., 1:])
        log_pmf[..., 1:] += log_first[..., None]
    return np.exp(np.where(valid[:, None, None, :], log_pmf, -np.inf)).mean(axis=1)  # (row, answer, K)


def _blocks(chunk: np.ndarray, votes: np.ndarray, schema: Schema, likelihood: str) -> Iterator[tuple]:
    """Posterior predictive pmf blocks of one chunk of galaxies.

    chunk: (row, sample, output); votes: (row, question). Yields (question index, rows (r,),
    n (r,), pmf (r, answer of the question, K)); rows of similar n share a block.
    """
    n_samples = chunk.shape[1]
    for q, (start, stop) in enumerate(schema.answer_groups):
        n_q = votes[:, q]  # (row,)
        order = np.argsort(n_q, kind="stable")
        sorted_n = n_q[order]
        first = 0
        while first < len(order):
            size = len(order) - first
            while True:  # the largest block (of sorted rows) within BLOCK_ELEMENTS; its largest n is last
                fit = max(1, BLOCK_ELEMENTS // (n_samples * (stop - start) * (int(sorted_n[first + size - 1]) + 1)))
                if fit >= size:
                    break
                size = fit
            rows = order[first : first + size]
            p_or_a, b = _answer_parameters(chunk[rows], schema, likelihood, start, stop)
            n = n_q[rows]
            yield q, rows, n, _mixture_pmf(p_or_a, None if b is None else b, n)
            first += size


def _chunks(predictions: np.ndarray, votes: np.ndarray, schema: Schema) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, predictions chunk read into memory, votes chunk), with their values checked."""
    likelihood = _check_predictions(predictions, schema)
    for start in range(0, len(predictions), CHUNK_GALAXIES):
        chunk = np.asarray(predictions[start : start + CHUNK_GALAXIES])
        _check_values(chunk, likelihood, start)
        yield start, chunk, votes[start : start + CHUNK_GALAXIES]


def predictive_pmf(predictions, schema: Schema, votes=DEFAULT_VOTES) -> np.ndarray:
    """Posterior predictive pmf of each answer's vote count: (galaxy, answer, K), K = max N + 1.

    ``votes``: N for every question (int) or (galaxy, question) counts; entries for k > N are 0.
    For small inputs and checks; the interval and coverage functions never build it whole.
    """
    predictions = np.asarray(predictions)
    likelihood = _check_predictions(predictions, schema)
    votes = _votes_array(votes, len(predictions), schema)
    k_max = int(votes.max()) + 1 if votes.size else 1
    pmf = np.zeros((len(predictions), schema.n_answers, k_max))
    for first, chunk, chunk_votes in _chunks(predictions, votes, schema):
        for q, rows, _, block in _blocks(chunk, chunk_votes, schema, likelihood):
            start, stop = schema.answer_groups[q]
            pmf[first + rows, start:stop, : block.shape[-1]] = block
    return pmf


def _quantile_counts(cdf: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """min k with F(k) >= q (within CDF_TOLERANCE); cdf (..., K), q broadcast against (...)."""
    return (cdf < np.asarray(q)[..., None] - CDF_TOLERANCE).sum(axis=-1)


def predictive_intervals(
    predictions, schema: Schema, votes=DEFAULT_VOTES, levels: Sequence[float] = (0.9,)
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive intervals of each answer's vote count, equal-tailed (module docstring).

    Returns (low, high) counts, each (level, galaxy, answer) int64; divide by the answer's
    question votes for fractions (0 <= low <= high <= N).
    """
    levels = check_levels(levels)
    predictions = np.asarray(predictions)  # a memory-mapped array stays on disk: read chunk by chunk
    likelihood = _check_predictions(predictions, schema)
    votes = _votes_array(votes, len(predictions), schema)
    low = np.zeros((len(levels), len(predictions), schema.n_answers), dtype=np.int64)
    high = np.zeros_like(low)
    lower_q = np.array([(1 - level) / 2 for level in levels])  # (level,)
    upper_q = np.array([(1 + level) / 2 for level in levels])  # (level,)
    for first, chunk, chunk_votes in _chunks(predictions, votes, schema):
        for q, rows, _, pmf in _blocks(chunk, chunk_votes, schema, likelihood):
            start, stop = schema.answer_groups[q]
            cdf = np.cumsum(pmf, axis=-1)[None]  # (1, row, answer, K)
            low[:, first + rows, start:stop] = _quantile_counts(cdf, lower_q[:, None, None])
            high[:, first + rows, start:stop] = _quantile_counts(cdf, upper_q[:, None, None])
    return low, high


# ---------------------------------------------------------------- coverage


def _used_levels(used_levels: Mapping[str, Sequence[float]] | None, levels: tuple[float, ...], schema: Schema) -> np.ndarray:
    """(question, level) interval levels: the nominal ones, or per question those given."""
    used = np.tile(np.array(levels), (schema.n_questions, 1))
    if used_levels is None:
        return used
    unknown = sorted(set(used_levels) - set(schema.question_names))
    if unknown:
        raise ValueError(f"used_levels: expected questions of schema {schema.name!r}, got {unknown}")
    for name, given in used_levels.items():
        given = check_levels(given)
        if len(given) != len(levels):
            raise ValueError(f"used_levels[{name!r}]: expected {len(levels)} levels (one per nominal level), got {len(given)}")
        used[schema.question_names.index(name)] = given
    return used


class _Tally:
    """Running coverage of (galaxy, answer) pairs, clustered by galaxy for the standard error.

    ``add(hits, pairs)``: (galaxy,) hits (or predicted mass) and pairs per galaxy. The mean is
    sum(hits) / sum(pairs); its standard error is the ratio estimator's over galaxies, so the
    answers of one galaxy (not independent) count as one draw.
    """

    def __init__(self) -> None:
        self.hits = self.pairs = self.hits2 = self.hits_pairs = self.pairs2 = 0.0
        self.n_galaxies = 0

    def add(self, hits: np.ndarray, pairs: np.ndarray) -> None:
        used = pairs > 0
        hits, pairs = hits[used].astype(np.float64), pairs[used].astype(np.float64)
        self.hits += hits.sum()
        self.pairs += pairs.sum()
        self.hits2 += (hits * hits).sum()
        self.hits_pairs += (hits * pairs).sum()
        self.pairs2 += (pairs * pairs).sum()
        self.n_galaxies += int(used.sum())

    def mean(self) -> float | None:
        return self.hits / self.pairs if self.pairs else None

    def stderr(self) -> float | None:
        if self.n_galaxies < 2:
            return None
        p, n = self.hits / self.pairs, self.n_galaxies
        spread = max(self.hits2 - 2 * p * self.hits_pairs + p * p * self.pairs2, 0.0)
        return float(np.sqrt(n / (n - 1) * spread) / self.pairs)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def coverage(
    predictions,
    counts,
    schema: Schema,
    levels: Sequence[float] = LEVELS,
    max_error: int = MAX_ERROR,
    used_levels: Mapping[str, Sequence[float]] | None = None,
) -> dict:
    """Coverage of MC predictions (galaxy, sample, output) against observed counts (galaxy, answer).

    For each question (on galaxies with N >= 1 votes on it) and for all questions pooled, over
    (galaxy, answer) pairs:

    - ``intervals``: per level, ``nominal`` (the level), ``predicted`` (mean predictive mass of
      the equal-tailed interval: what a calibrated model would observe; >= nominal), ``observed``
      (fraction of observed k inside it) with its ``stderr`` (galaxies as independent draws),
      and ``credible_observed`` (fraction of observed k / N inside the credible interval of the
      expected fraction at that level, for comparison);
    - ``within``: for w = 0..max_error, ``predicted`` (mean predictive mass of
      |k - round(E[k])| <= w) and ``observed`` (fraction with the observed k there);
    - ``calibration_error``: mean over levels of |observed - predicted|;
      ``nominal_gap``: mean over levels of |observed - nominal|;
    - ``n_galaxies`` (with N >= 1), ``n_pairs``, ``mean_votes`` (mean N over the (galaxy,
      question) with N >= 1).

    ``used_levels`` (recalibration, :mod:`zoobot.recalibration`): per question name, the interval
    level drawn in place of each nominal level (same length as ``levels``); the report keeps the
    nominal levels and adds ``used_level``. The credible interval stays at the nominal level.

    Returns a strict-JSON dict (undefined values None).
    """
    levels = check_levels(levels)
    used = _used_levels(used_levels, levels, schema)  # (question, level)
    if int(max_error) != max_error or max_error < 0:
        raise ValueError(f"max_error: expected a whole number of votes >= 0, got {max_error!r}")
    max_error = int(max_error)
    predictions = np.asarray(predictions)  # a memory-mapped array stays on disk: read chunk by chunk
    likelihood = _check_predictions(predictions, schema)
    counts = np.asarray(counts)
    if counts.shape != (len(predictions), schema.n_answers):
        raise ValueError(
            f"counts: expected shape ({len(predictions)}, {schema.n_answers}) (galaxy, answer of schema "
            f"{schema.name!r}), got {counts.shape}"
        )
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("counts: expected whole numbers of votes >= 0")
    votes = question_votes(counts, schema)  # (galaxy, question)
    n_levels, widths = len(levels), np.arange(max_error + 1)
    lower_q = ((1 - used) / 2)[:, :, None, None]  # (question, level, 1, 1)
    upper_q = ((1 + used) / 2)[:, :, None, None]  # (question, level, 1, 1)
    percentiles = [p for level in levels for p in (50 * (1 - level), 50 * (1 + level))]

    sizes = {"observed": n_levels, "predicted": n_levels, "credible": n_levels,
             "within_observed": max_error + 1, "within_predicted": max_error + 1}
    tallies = {
        name: {kind: [_Tally() for _ in range(size)] for kind, size in sizes.items()}
        for name in [*schema.question_names, "all"]
    }
    vote_sums = {name: 0 for name in schema.question_names}  # N summed over galaxies with N >= 1
    n_voted = {name: 0 for name in schema.question_names}
    answers_per_question = np.array([stop - start for start, stop in schema.answer_groups])  # (question,)

    for first, chunk, chunk_votes in _chunks(predictions, votes, schema):
        chunk_counts = counts[first : first + len(chunk)]  # (row, answer)
        fractions = schema.expected_fractions(chunk)  # (row, sample, answer)
        credible = np.percentile(fractions, percentiles, axis=1).reshape(n_levels, 2, len(chunk), -1)
        # per galaxy of the chunk, summed over the answers of one question: (kind, index, row)
        per_question = {kind: np.zeros((schema.n_questions, size, len(chunk))) for kind, size in sizes.items()}
        for q, rows, n, pmf in _blocks(chunk, chunk_votes, schema, likelihood):
            start, stop = schema.answer_groups[q]
            voted = n >= 1
            rows, n, pmf = rows[voted], n[voted], pmf[voted]  # (row,), (row,), (row, answer, K)
            if not len(rows):
                continue
            k = chunk_counts[rows, start:stop]  # (row, answer) observed counts
            cdf = np.cumsum(pmf, axis=-1)  # (row, answer, K)
            padded = np.concatenate([np.zeros(cdf.shape[:-1] + (1,)), cdf], axis=-1)  # F(k - 1) at index k

            def mass(lo, hi):  # predictive mass of lo <= k <= hi, each (..., row, answer), clipped to 0..n
                lo = np.clip(lo, 0, n[:, None])
                hi = np.clip(hi, -1, n[:, None])
                upper = np.take_along_axis(np.broadcast_to(padded, lo.shape + padded.shape[-1:]), (hi + 1)[..., None], -1)
                lower = np.take_along_axis(np.broadcast_to(padded, lo.shape + padded.shape[-1:]), lo[..., None], -1)
                return np.maximum(upper - lower, 0.0)[..., 0]

            low = _quantile_counts(cdf[None], lower_q[q])  # (level, row, answer)
            high = _quantile_counts(cdf[None], upper_q[q])  # (level, row, answer)
            per_question["observed"][q][:, rows] = ((low <= k) & (k <= high)).sum(axis=-1)
            per_question["predicted"][q][:, rows] = mass(low, high).sum(axis=-1)
            observed_fraction = k / n[:, None]  # (row, answer)
            ci = credible[:, :, rows, start:stop]  # (level, 2, row, answer)
            per_question["credible"][q][:, rows] = (
                (ci[:, 0] <= observed_fraction) & (observed_fraction <= ci[:, 1])
            ).sum(axis=-1)
            centre = np.rint((pmf * np.arange(pmf.shape[-1])).sum(axis=-1)).astype(np.int64)  # (row, answer)
            w = widths[:, None, None]  # (width, 1, 1)
            per_question["within_observed"][q][:, rows] = (np.abs(k - centre) <= w).sum(axis=-1)
            per_question["within_predicted"][q][:, rows] = mass(centre - w, centre + w).sum(axis=-1)
            vote_sums[schema.question_names[q]] += int(n.sum())
            n_voted[schema.question_names[q]] += len(n)

        pairs = np.where(chunk_votes >= 1, answers_per_question, 0)  # (row, question) pairs per galaxy
        for kind, values in per_question.items():
            for index in range(values.shape[1]):
                for q, name in enumerate(schema.question_names):
                    tallies[name][kind][index].add(values[q, index], pairs[:, q])
                tallies["all"][kind][index].add(values[:, index].sum(axis=0), pairs.sum(axis=1))

    def summary(name: str) -> dict:
        tally = tallies[name]
        n_galaxies = tally["observed"][0].n_galaxies
        intervals = [
            {
                "level": level,
                **({"used_level": float(used[schema.question_names.index(name), i])} if used_levels and name != "all" else {}),
                "predicted": _round(tally["predicted"][i].mean()),
                "observed": _round(tally["observed"][i].mean()),
                "stderr": _round(tally["observed"][i].stderr()),
                "credible_observed": _round(tally["credible"][i].mean()),
            }
            for i, level in enumerate(levels)
        ]
        within = [
            {
                "max_error": int(w),
                "predicted": _round(tally["within_predicted"][w].mean()),
                "observed": _round(tally["within_observed"][w].mean()),
                "stderr": _round(tally["within_observed"][w].stderr()),
            }
            for w in widths
        ]
        defined = n_galaxies > 0
        names = schema.question_names if name == "all" else [name]
        n_questions_voted = sum(n_voted[q] for q in names)
        return {
            "n_galaxies": n_galaxies,
            "n_pairs": int(tally["observed"][0].pairs),
            "mean_votes": _round(sum(vote_sums[q] for q in names) / n_questions_voted, 3) if n_questions_voted else None,
            "calibration_error": _round(np.mean([abs(r["observed"] - r["predicted"]) for r in intervals])) if defined else None,
            "nominal_gap": _round(np.mean([abs(r["observed"] - r["level"]) for r in intervals])) if defined else None,
            "intervals": intervals,
            "within": within,
        }

    return {
        "schema": schema.name,
        "likelihood": likelihood,
        "n_galaxies": int(len(predictions)),
        "n_samples": int(predictions.shape[1]),
        "levels": list(levels),
        "max_error": max_error,
        "interval": INTERVAL_DEFINITION,
        "questions": {name: summary(name) for name in schema.question_names},
        "all": summary("all"),
    }
