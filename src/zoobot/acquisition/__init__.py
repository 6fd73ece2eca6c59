"""Acquisition functions: which unlabelled galaxies should volunteers see next.

Scores are pure functions of MC-dropout predictions, shape (galaxy, sample, output):

- binomial single-question model: output = 1, holding rho, the predicted vote fraction;
- Dirichlet-multinomial tree model: output = n_answers, holding concentrations alpha > 0,
  grouped into questions by ``schema.answer_groups``.

Which of the two a prediction holds is decided by ``Schema.likelihood_of``. Scores are computed
over the *votes* a galaxy would get from ``expected_votes`` volunteers (40 in Walmsley et al.
2019), never from the galaxy's actual count:

    MI = H[mean_t p(k | theta_t)] - mean_t H[p(k | theta_t)]      (BALD, Houlsby et al. 2011)
    predictive entropy = H[mean_t p(k | theta_t)]

where t runs over dropout samples and k over vote outcomes. For a tree, each question's term is
weighted by the expected probability that the question is asked, and summed over questions.
See docs/acquisition.md for the maths, the Monte Carlo estimator and measured speeds.

Modules, in import order:

- ``validation``: checks on predictions and arguments, :class:`InvalidPredictionsError`;
- ``entropy``: entropies of enumerated vote distributions, in bounded-memory chunks;
- ``binomial``: binomial BALD and predictive entropy, exact;
- ``dirichlet``: Dirichlet-multinomial BALD and predictive entropy, exact or Monte Carlo;
- ``registry``: the uniform scoring signature, ``bald``, ``predictive_entropy``, the random
  baseline and :func:`get_acquisition` by name;
- ``selection``: top-k and stochastic batch selection, streaming, and :func:`score_stream`.
"""

from zoobot.acquisition.binomial import binomial_bald, binomial_predictive_entropy
from zoobot.acquisition.dirichlet import (
    DRAWS_PER_SAMPLE,
    MAX_EXACT_OUTCOMES,
    dirichlet_bald,
    dirichlet_predictive_entropy,
    n_vote_outcomes,
    question_entropies,
)
from zoobot.acquisition.registry import (
    ACQUISITION_FUNCTIONS,
    AcquisitionFunction,
    bald,
    get_acquisition,
    list_acquisitions,
    predictive_entropy,
    random_baseline,
    random_scores,
)
from zoobot.acquisition.selection import (
    SCORES_SCHEMA,
    STRATEGIES,
    Selection,
    TopK,
    id_uniforms,
    score_stream,
    select,
    selection_keys,
)
from zoobot.acquisition.validation import (
    DEFAULT_EXPECTED_VOTES,
    MIN_CONCENTRATION,
    InvalidPredictionsError,
)

__all__ = [
    "ACQUISITION_FUNCTIONS",
    "DEFAULT_EXPECTED_VOTES",
    "DRAWS_PER_SAMPLE",
    "MAX_EXACT_OUTCOMES",
    "MIN_CONCENTRATION",
    "SCORES_SCHEMA",
    "STRATEGIES",
    "AcquisitionFunction",
    "InvalidPredictionsError",
    "Selection",
    "TopK",
    "bald",
    "binomial_bald",
    "binomial_predictive_entropy",
    "dirichlet_bald",
    "dirichlet_predictive_entropy",
    "get_acquisition",
    "id_uniforms",
    "list_acquisitions",
    "n_vote_outcomes",
    "predictive_entropy",
    "question_entropies",
    "random_baseline",
    "random_scores",
    "score_stream",
    "select",
    "selection_keys",
]
