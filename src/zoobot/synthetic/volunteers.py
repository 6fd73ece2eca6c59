"""Simulated Galaxy Zoo volunteers: per-question answer models and a walk down the decision tree.

Each volunteer perceives the galaxy with their own noise and sensitivity, so faint features are
missed more often, and answers a question only when their own earlier answers lead to it.
:func:`simulate_votes` returns the vote counts of one galaxy for every answer of a schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from zoobot.schema import DECALS_DR5, GZ2, Schema
from zoobot.synthetic.morphology import EDGE_ON_INCLINATION, LOOSE_PITCH, TIGHT_PITCH, Morphology


@dataclass
class Volunteers:
    """The volunteers who see one galaxy: each with their own sensitivity to faint features."""

    sensitivity: np.ndarray  # (volunteer,), multiplies every visibility; 1 is typical
    rng: np.random.Generator

    def __len__(self) -> int:
        return len(self.sensitivity)

    def perceive(self, value: float, noise: float) -> np.ndarray:
        """(volunteer,) noisy readings of a true value."""
        return value + noise * self.rng.standard_normal(len(self))

    def detect(
        self, visibility: float, floor: float, ceiling: float, steepness: float = 2.5
    ) -> np.ndarray:
        """(volunteer,) probability to notice a feature: a logistic curve in log visibility."""
        seen = np.log(np.maximum(visibility * self.sensitivity, 1e-6))
        return floor + (ceiling - floor) / (1.0 + np.exp(-steepness * seen))


def _one_hot(index: np.ndarray, n_answers: int) -> np.ndarray:
    return np.eye(n_answers)[index]


def _bins(values: np.ndarray, descending_edges: list[float]) -> np.ndarray:
    """Index of the first edge a value is at or above; len(edges) when below them all."""
    return (values[:, None] < np.asarray(descending_edges)[None, :]).sum(axis=1)


def _smooth_or_featured(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    evidence = max(
        morph.arm_visibility, morph.bar_visibility, morph.disk_visibility,
        0.6 * morph.disturbance_visibility * 3.0,
    )
    if morph.kind == "smooth" or (morph.kind == "artifact" and morph.disk_amplitude == 0):
        evidence = 0.15 + morph.disturbance_visibility
    featured = volunteers.detect(evidence, floor=0.03, ceiling=0.95)  # (volunteer,)
    artifact_share = {"none": 0.01, "star": 0.85, "trail": 0.6}[morph.artifact]
    artifact = np.full(len(volunteers), artifact_share)
    return np.stack([(1 - artifact) * (1 - featured), (1 - artifact) * featured, artifact], axis=1)


def _disk_edge_on(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.inclination, 5.0)
    return _one_hot((seen < EDGE_ON_INCLINATION).astype(int), 2)  # yes, no


def _has_spiral_arms(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    if morph.n_arms > 0:
        yes = volunteers.detect(morph.arm_visibility, floor=0.04, ceiling=0.96)
    else:
        yes = volunteers.detect(0.3 * morph.bar_visibility + 0.05, floor=0.04, ceiling=0.3)
    return np.stack([yes, 1 - yes], axis=1)


def _bar(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    if morph.bar_strength > 0:
        seen = volunteers.detect(morph.bar_visibility, floor=0.05, ceiling=0.95)
        strength = volunteers.perceive(morph.bar_strength, 0.15)
        strong = 1.0 / (1.0 + np.exp(-(strength - 0.55) / 0.06))
    else:
        seen = np.full(len(volunteers), 0.07)
        strong = np.full(len(volunteers), 0.15)
    return np.stack([seen * strong, seen * (1 - strong), 1 - seen], axis=1)


def _perceived_bulge(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """(volunteer,) perceived bulge-to-total ratio, noisy in logit space."""
    bt = np.clip(morph.bulge_to_total, 0.005, 0.995)
    logit = volunteers.perceive(math.log(bt / (1 - bt)), 0.5)
    return 1.0 / (1.0 + np.exp(-logit))


def _bulge_size(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = _perceived_bulge(morph, volunteers)  # dominant large moderate small none
    return _one_hot(_bins(seen, [0.5, 0.3, 0.12, 0.03]), 5)


def _how_rounded(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.axis_ratio, 0.07)  # round in-between cigar-shaped
    return _one_hot(_bins(seen, [0.8, 0.45]), 3)


def _edge_on_bulge(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    bulge = _perceived_bulge(morph, volunteers)  # boxy none rounded
    boxy = volunteers.perceive(morph.bulge_boxiness, 0.25) > 0.6
    answer = np.where(bulge < 0.05, 1, np.where(boxy, 0, 2))
    return _one_hot(answer, 3)


def _spiral_winding(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    pitch = morph.pitch_angle if morph.n_arms else 20.0
    seen = volunteers.perceive(pitch, 5.0)  # tight medium loose
    return _one_hot(2 - _bins(seen, [LOOSE_PITCH, TIGHT_PITCH]), 3)


def _spiral_arm_count(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    n_arms = morph.n_arms if morph.n_arms else 2
    cant_tell = 1.0 - volunteers.detect(morph.arm_visibility, floor=0.05, ceiling=0.9)
    u = volunteers.rng.random(len(volunteers))
    miscount = (u > 0.85).astype(int) - (u < 0.15)  # one arm too many or too few, 15% each
    seen = np.clip(n_arms + miscount, 1, 5) - 1  # 1 2 3 4 more-than-4
    counted = _one_hot(seen, 5) * (1 - cant_tell)[:, None]
    return np.concatenate([counted, cant_tell[:, None]], axis=1)


def _merging(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.disturbance_visibility, 0.1) * volunteers.sensitivity
    answer = 3 - _bins(seen, [0.75, 0.45, 0.2])  # none minor-disturbance major-disturbance merger
    return _one_hot(answer, 4)


def _odd(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """GZ2 'anything odd?': disturbances, mergers, dust lanes and artifacts."""
    oddness = max(morph.disturbance_visibility * 2.0, morph.dust_lane * morph.is_edge_on)
    if morph.artifact != "none":
        oddness = max(oddness, 0.6)
    yes = volunteers.detect(oddness * 2.0, floor=0.05, ceiling=0.9)
    return np.stack([yes, 1 - yes], axis=1)


def _odd_feature(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """GZ2 odd feature: ring lens disturbed irregular other merger dust_lane."""
    merging = _merging(morph, volunteers)  # none minor major merger
    probabilities = np.zeros((len(volunteers), 7))
    probabilities[:, 4] = merging[:, 0]  # saw nothing disturbed: 'other'
    probabilities[:, 2] = merging[:, 1] + 0.6 * merging[:, 2]
    probabilities[:, 3] = 0.4 * merging[:, 2]
    probabilities[:, 5] = merging[:, 3]
    if morph.dust_lane > 0 and morph.is_edge_on:
        probabilities *= 0.3
        probabilities[:, 6] += 0.7
    return probabilities


#: Answer models by question name: (morph, volunteers) -> (volunteer, answer) probabilities
#: over the answers of the same-named DECaLS DR5 question (or, for GZ2-only ones, GZ2's).
ANSWER_MODELS: dict[str, Callable[[Morphology, Volunteers], np.ndarray]] = {
    "smooth-or-featured": _smooth_or_featured,
    "disk-edge-on": _disk_edge_on,
    "has-spiral-arms": _has_spiral_arms,
    "bar": _bar,
    "bulge-size": _bulge_size,
    "how-rounded": _how_rounded,
    "edge-on-bulge": _edge_on_bulge,
    "spiral-winding": _spiral_winding,
    "spiral-arm-count": _spiral_arm_count,
    "merging": _merging,
    "odd": _odd,
    "odd-feature": _odd_feature,
}

#: Other schemas' questions as groups of a model's answers: (question name, answers) ->
#: (model, the model answers each answer sums). Questions with DECaLS' own answers need none.
QUESTION_MAP: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[tuple[int, ...], ...]]] = {
    ("smooth-or-featured", ("smooth", "featured")): ("smooth-or-featured", ((0, 2), (1,))),
    ("bar", ("yes", "no")): ("bar", ((0, 1), (2,))),
    (GZ2.questions[0].name, GZ2.questions[0].answers): ("smooth-or-featured", ((0,), (1,), (2,))),
    (GZ2.questions[1].name, GZ2.questions[1].answers): ("disk-edge-on", ((0,), (1,))),
    (GZ2.questions[2].name, GZ2.questions[2].answers): ("bar", ((0, 1), (2,))),
    (GZ2.questions[3].name, GZ2.questions[3].answers): ("has-spiral-arms", ((0,), (1,))),
    (GZ2.questions[4].name, GZ2.questions[4].answers): ("bulge-size", ((4,), (3,), (1, 2), (0,))),
    (GZ2.questions[5].name, GZ2.questions[5].answers): ("odd", ((0,), (1,))),
    (GZ2.questions[6].name, GZ2.questions[6].answers): ("how-rounded", ((0,), (1,), (2,))),
    (GZ2.questions[7].name, GZ2.questions[7].answers): ("odd-feature", tuple((i,) for i in range(7))),
    (GZ2.questions[8].name, GZ2.questions[8].answers): ("edge-on-bulge", ((2,), (0,), (1,))),
    (GZ2.questions[9].name, GZ2.questions[9].answers): ("spiral-winding", ((0,), (1,), (2,))),
    (GZ2.questions[10].name, GZ2.questions[10].answers): (
        "spiral-arm-count", tuple((i,) for i in range(6))
    ),
}


def _answer_model(question) -> tuple[Callable, tuple[tuple[int, ...], ...]]:
    key = (question.name, question.answers)
    if key in QUESTION_MAP:
        model, groups = QUESTION_MAP[key]
        return ANSWER_MODELS[model], groups
    decals = {q.name: q for q in DECALS_DR5.questions}
    if question.name in decals and decals[question.name].answers == question.answers:
        return ANSWER_MODELS[question.name], tuple((i,) for i in range(len(question.answers)))
    raise ValueError(
        f"simulate_votes: no volunteer model for question {question.name!r} with answers "
        f"{list(question.answers)}; expected a question of the decals-dr5 or gz2 schemas "
        "(or smooth-or-featured / bar). Add a model to "
        "zoobot.synthetic.volunteers.ANSWER_MODELS."
    )


@dataclass(frozen=True)
class WalkStep:
    """One question of the walk: its answer model and where its volunteers come from."""

    columns: list[str]
    model: Callable[[Morphology, Volunteers], np.ndarray]
    grouping: np.ndarray | None  # (model answer, answer) 0/1, None when they are the same
    parent: int | None  # index of the parent question; None for a root
    leads_here: np.ndarray | None  # (parent answer,) bool: the parent answers that ask this


@lru_cache(maxsize=16)
def walk_plan(schema: Schema) -> tuple[WalkStep, ...]:
    """Checked once per schema: raises ValueError for a question without a volunteer model."""
    position = {
        col: (qi, ai) for qi, q in enumerate(schema.questions) for ai, col in enumerate(q.columns())
    }
    steps = []
    for question in schema.questions:
        model, groups = _answer_model(question)
        n_model_answers = 1 + max(i for group in groups for i in group)
        grouping = np.zeros((n_model_answers, len(groups)))
        for answer, group in enumerate(groups):
            grouping[list(group), answer] = 1.0
        if grouping.shape[0] == grouping.shape[1] and np.array_equal(grouping, np.eye(len(groups))):
            grouping = None
        parent, leads_here = None, None
        if question.asked_after:
            parent = position[question.asked_after[0]][0]
            leads_here = np.zeros(len(schema.questions[parent].answers), dtype=bool)
            leads_here[[position[col][1] for col in question.asked_after]] = True
        steps.append(WalkStep(question.columns(), model, grouping, parent, leads_here))
    return tuple(steps)


def simulate_votes(
    morph: Morphology,
    schema: Schema = DECALS_DR5,
    rng: np.random.Generator | None = None,
    n_volunteers: float = 40.0,
    lapse: float = 0.03,
) -> dict[str, int]:
    """Volunteers walk down the decision tree; return vote counts for every answer column.

    The number of volunteers is Poisson around ``n_volunteers`` (at least 1). Each volunteer
    has a sensitivity (log-normal around 1) that scales how visible faint features look to
    them, perceives sizes and angles with their own noise, and with probability ``lapse``
    picks an answer at random. A question counts a volunteer only when that volunteer's answer
    to the parent question is one of ``asked_after``, so a child question's total equals the
    votes for its parent answers. Questions nobody reached get 0.
    """
    rng = np.random.default_rng() if rng is None else rng
    plan = walk_plan(schema)
    n = max(1, int(rng.poisson(n_volunteers)))
    volunteers = Volunteers(sensitivity=np.exp(rng.normal(0.0, 0.35, size=n)), rng=rng)
    chosen: list[np.ndarray] = []  # per question: (volunteer,) answer index
    reached: list[np.ndarray] = []  # per question: (volunteer,) bool
    counts: dict[str, int] = {}
    for step in plan:
        probabilities = step.model(morph, volunteers)  # (volunteer, model answer)
        if step.grouping is not None:
            probabilities = probabilities @ step.grouping  # (volunteer, answer)
        n_answers = probabilities.shape[1]
        probabilities = (1 - lapse) * probabilities + lapse / n_answers
        cumulative = np.cumsum(probabilities, axis=1)
        draws = rng.random(n)[:, None] * cumulative[:, -1:]
        answers = np.minimum((cumulative < draws).sum(axis=1), n_answers - 1)  # (volunteer,)
        if step.parent is None:
            asked = np.ones(n, dtype=bool)
        else:
            asked = reached[step.parent] & step.leads_here[chosen[step.parent]]
        chosen.append(answers)
        reached.append(asked)
        tally = np.bincount(answers[asked], minlength=n_answers)
        counts.update(zip(step.columns, tally.tolist()))
    return counts
