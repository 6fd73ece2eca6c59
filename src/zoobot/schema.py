"""Galaxy Zoo decision trees as data.

A :class:`Schema` is an ordered tuple of :class:`Question`; each question owns an ordered tuple
of answers. Catalog vote columns are named ``{question}_{answer}`` and appear in schema order,
so a model output of shape (galaxy, answer) lines up with ``schema.answer_columns``.

A question is asked only when one of the answers in ``asked_after`` was given to its parent
question (all of them belong to one parent). Root questions have an empty ``asked_after``.

A schema also decides which likelihood its predictions carry (:attr:`Schema.likelihood`):
binomial for one question with two answers, one output rho per galaxy and sample (the predicted
fraction of votes for the first answer); Dirichlet-multinomial otherwise, one concentration
alpha per answer. Models, losses, metrics and acquisition all ask the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

SEPARATOR = "_"

BINOMIAL = "binomial"
DIRICHLET_MULTINOMIAL = "dirichlet_multinomial"
LIKELIHOODS = (BINOMIAL, DIRICHLET_MULTINOMIAL)


@dataclass(frozen=True)
class Question:
    """One question with its answers, and the parent answers that lead to it."""

    name: str
    answers: tuple[str, ...]
    asked_after: tuple[str, ...] = ()  # full answer columns of the parent, e.g. "bar_no"

    def columns(self) -> list[str]:
        return [f"{self.name}{SEPARATOR}{answer}" for answer in self.answers]


@dataclass(frozen=True)
class Schema:
    """An ordered decision tree of questions."""

    name: str
    questions: tuple[Question, ...]

    def __post_init__(self) -> None:
        names = [q.name for q in self.questions]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.name!r}: duplicate question names in {names}")
        seen: set[str] = set()
        for question in self.questions:
            if not question.answers:
                raise ValueError(f"schema {self.name!r}: question {question.name!r} has no answers")
            parents = {self.question_of_column(col, known=seen).name for col in question.asked_after}
            if len(parents) > 1:
                raise ValueError(
                    f"schema {self.name!r}: question {question.name!r} depends on answers of "
                    f"several questions {sorted(parents)}; expected answers of one parent"
                )
            seen.update(question.columns())

    def question_of_column(self, column: str, known: set[str] | None = None) -> Question:
        for question in self.questions:
            if column in question.columns():
                if known is not None and column not in known:
                    raise ValueError(
                        f"schema {self.name!r}: answer {column!r} is used as a parent before its "
                        "question is defined; list parent questions first"
                    )
                return question
        raise ValueError(f"schema {self.name!r}: unknown answer column {column!r}")

    @cached_property
    def answer_columns(self) -> list[str]:
        """Vote-count column names in output order, length n_answers."""
        return [col for q in self.questions for col in q.columns()]

    @property
    def question_names(self) -> list[str]:
        return [q.name for q in self.questions]

    @property
    def n_answers(self) -> int:
        return len(self.answer_columns)

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def likelihood(self) -> str:
        """``BINOMIAL`` for one question with exactly two answers, else ``DIRICHLET_MULTINOMIAL``."""
        if self.n_questions == 1 and self.n_answers == 2:
            return BINOMIAL
        return DIRICHLET_MULTINOMIAL

    @property
    def n_outputs(self) -> int:
        """Outputs of this schema's model: 1 (rho) if binomial, else one concentration per answer."""
        return 1 if self.likelihood == BINOMIAL else self.n_answers

    def likelihood_of(self, n_outputs: int) -> str:
        """The likelihood that predictions with ``n_outputs`` outputs carry for this schema.

        1 output on a binomial schema is rho; ``n_answers`` outputs are Dirichlet concentrations
        (also accepted for a one-question, two-answer schema). Anything else raises.
        """
        if n_outputs == 1 and self.likelihood == BINOMIAL:
            return BINOMIAL
        if n_outputs == self.n_answers:
            return DIRICHLET_MULTINOMIAL
        raise ValueError(
            f"schema {self.name!r} expects 1 output (binomial rho, only for one question with two "
            f"answers) or {self.n_answers} outputs (one Dirichlet concentration per answer of "
            f"{self.name!r}), got {n_outputs}; use the schema the model was trained with"
        )

    def expected_fractions(self, predictions) -> np.ndarray:
        """(..., n_outputs) predictions -> (..., n_answers) expected vote fractions, float64.

        rho -> (rho, 1 - rho); alpha -> alpha / sum(alpha) within each question.
        """
        predictions = np.asarray(predictions, dtype=np.float64)
        if self.likelihood_of(predictions.shape[-1]) == BINOMIAL:
            rho = predictions[..., 0]  # (...,)
            return np.stack([rho, 1.0 - rho], axis=-1)  # (..., 2)
        fractions = np.empty_like(predictions)  # (..., answer)
        for start, stop in self.answer_groups:
            alpha = predictions[..., start:stop]  # (..., answers of this question)
            fractions[..., start:stop] = alpha / alpha.sum(axis=-1, keepdims=True)
        return fractions

    @cached_property
    def answer_groups(self) -> list[tuple[int, int]]:
        """(start, stop) slice of each question's answers in ``answer_columns``."""
        groups, start = [], 0
        for question in self.questions:
            groups.append((start, start + len(question.answers)))
            start += len(question.answers)
        return groups

    @cached_property
    def question_index_of_answer(self) -> np.ndarray:
        """(n_answers,) index of the question each answer belongs to."""
        return np.concatenate(
            [np.full(stop - start, i) for i, (start, stop) in enumerate(self.answer_groups)]
        )

    def question(self, name: str) -> Question:
        for question in self.questions:
            if question.name == name:
                return question
        raise KeyError(f"schema {self.name!r} has no question {name!r}; it has {self.question_names}")

    def parent_of(self, question: Question) -> Question | None:
        if not question.asked_after:
            return None
        return self.question_of_column(question.asked_after[0])

    def children_of(self, question: Question) -> list[Question]:
        return [q for q in self.questions if self.parent_of(q) == question]

    def vote_fractions(self, counts: np.ndarray) -> np.ndarray:
        """Per-question vote fractions from counts (galaxy, answer); 0 where a question has no votes."""
        counts = np.asarray(counts, dtype=np.float64)
        fractions = np.zeros_like(counts)
        for start, stop in self.answer_groups:
            total = counts[:, start:stop].sum(axis=1, keepdims=True)
            np.divide(counts[:, start:stop], total, out=fractions[:, start:stop], where=total > 0)
        return fractions

    def prob_asked(self, fractions: np.ndarray) -> np.ndarray:
        """P(question asked) from per-question answer fractions.

        fractions: (..., n_answers), each question's answers summing to 1.
        Returns (..., n_questions): the product of the fractions of the leading answers on the
        path from the root; root questions get 1.
        """
        fractions = np.asarray(fractions, dtype=np.float64)
        column_index = {col: i for i, col in enumerate(self.answer_columns)}
        asked = np.ones(fractions.shape[:-1] + (self.n_questions,))
        for i, question in enumerate(self.questions):
            parent = self.parent_of(question)
            if parent is None:
                continue
            parent_index = self.questions.index(parent)
            via = fractions[..., [column_index[col] for col in question.asked_after]].sum(axis=-1)
            asked[..., i] = asked[..., parent_index] * via
        return asked

    def subset(self, question_names: list[str], name: str | None = None) -> "Schema":
        """A schema of only these questions, keeping the tree between them.

        A question asked only after another question's answers needs that question in the
        subset too (P(asked) and BALD's weighting depend on it): a missing parent is a KeyError
        naming it and the subset that would work.
        """
        chosen = [q for q in self.questions if q.name in question_names]
        missing = set(question_names) - {q.name for q in chosen}
        if missing:
            raise KeyError(f"schema {self.name!r} has no questions {sorted(missing)}")
        names = {q.name for q in chosen}
        orphans = {q.name: self.parent_of(q).name for q in chosen if q.asked_after and self.parent_of(q).name not in names}
        if orphans:
            needed = set(names)
            for question in chosen:
                while question.asked_after:
                    question = self.parent_of(question)
                    needed.add(question.name)
            complete = ",".join(q.name for q in self.questions if q.name in needed)
            asked = "; ".join(f"{child!r} is asked only after answers of {parent!r}" for child, parent in orphans.items())
            raise KeyError(
                f"schema {self.name!r}: {asked}, which the subset lacks. Include the parents "
                f"({self.name}:{complete}), or use a single-question schema if every galaxy was asked"
            )
        return Schema(name or f"{self.name}:{','.join(question_names)}", tuple(chosen))


def _q(name: str, answers: str, after: str = "") -> Question:
    return Question(name, tuple(answers.split()), tuple(after.split()))


GZ2 = Schema(
    "gz2",
    (
        _q("t01_smooth_or_features", "a01_smooth a02_features_or_disk a03_star_or_artifact"),
        _q("t02_edgeon", "a04_yes a05_no", "t01_smooth_or_features_a02_features_or_disk"),
        _q("t03_bar", "a06_bar a07_no_bar", "t02_edgeon_a05_no"),
        _q("t04_spiral", "a08_spiral a09_no_spiral", "t02_edgeon_a05_no"),
        _q(
            "t05_bulge_prominence",
            "a10_no_bulge a11_just_noticeable a12_obvious a13_dominant",
            "t02_edgeon_a05_no",
        ),
        _q(
            "t06_odd",
            "a14_yes a15_no",
            "t01_smooth_or_features_a01_smooth t01_smooth_or_features_a02_features_or_disk",
        ),
        _q(
            "t07_rounded",
            "a16_completely_round a17_in_between a18_cigar_shaped",
            "t01_smooth_or_features_a01_smooth",
        ),
        _q(
            "t08_odd_feature",
            "a19_ring a20_lens_or_arc a21_disturbed a22_irregular a23_other a24_merger a38_dust_lane",
            "t06_odd_a14_yes",
        ),
        _q("t09_bulge_shape", "a25_rounded a26_boxy a27_no_bulge", "t02_edgeon_a04_yes"),
        _q("t10_arms_winding", "a28_tight a29_medium a30_loose", "t04_spiral_a08_spiral"),
        _q(
            "t11_arms_number",
            "a31_1 a32_2 a33_3 a34_4 a36_more_than_4 a37_cant_tell",
            "t04_spiral_a08_spiral",
        ),
    ),
)

DECALS_DR5 = Schema(
    "decals-dr5",
    (
        _q("smooth-or-featured", "smooth featured-or-disk artifact"),
        _q("disk-edge-on", "yes no", "smooth-or-featured_featured-or-disk"),
        _q("has-spiral-arms", "yes no", "disk-edge-on_no"),
        _q("bar", "strong weak no", "disk-edge-on_no"),
        _q("bulge-size", "dominant large moderate small none", "disk-edge-on_no"),
        _q("how-rounded", "round in-between cigar-shaped", "smooth-or-featured_smooth"),
        _q("edge-on-bulge", "boxy none rounded", "disk-edge-on_yes"),
        _q("spiral-winding", "tight medium loose", "has-spiral-arms_yes"),
        _q("spiral-arm-count", "1 2 3 4 more-than-4 cant-tell", "has-spiral-arms_yes"),
        _q(
            "merging",
            "none minor-disturbance major-disturbance merger",
            "smooth-or-featured_smooth smooth-or-featured_featured-or-disk",
        ),
    ),
)

#: The older GZ DECaLS DR1/2 tree (Walmsley et al. 2022 tables ``gz_decals_volunteers_1_and_2``).
DECALS_DR12 = Schema(
    "decals-dr12",
    (
        _q("smooth-or-featured", "smooth featured-or-disk artifact"),
        _q("disk-edge-on", "yes no", "smooth-or-featured_featured-or-disk"),
        _q("has-spiral-arms", "yes no", "disk-edge-on_no"),
        _q("bar", "yes no", "disk-edge-on_no"),
        _q("bulge-size", "dominant obvious none", "disk-edge-on_no"),
        _q("how-rounded", "completely in-between cigar-shaped", "smooth-or-featured_smooth"),
        _q("edge-on-bulge", "boxy none rounded", "disk-edge-on_yes"),
        _q("spiral-winding", "tight medium loose", "has-spiral-arms_yes"),
        _q("spiral-arm-count", "1 2 3 4 more-than-4", "has-spiral-arms_yes"),
        _q(
            "merging",
            "merger tidal-debris both neither",
            "smooth-or-featured_smooth smooth-or-featured_featured-or-disk",
        ),
    ),
)

#: Single binary question used by the 2019 paper and the GZ1 benchmark.
SMOOTH_OR_FEATURED = Schema(
    "smooth-or-featured", (_q("smooth-or-featured", "smooth featured"),)
)
BAR = Schema("bar", (_q("bar", "yes no"),))

SCHEMAS: dict[str, Schema] = {s.name: s for s in (GZ2, DECALS_DR5, DECALS_DR12, SMOOTH_OR_FEATURED, BAR)}


def get_schema(spec: str) -> Schema:
    """Look up a schema by name, or a question subset as ``schema:question[,question]``.

    ``decals-dr5:smooth-or-featured,disk-edge-on,bar`` gives DECaLS' ``bar`` question with the
    questions it is asked after.
    """
    name, _, questions = spec.partition(":")
    if name not in SCHEMAS:
        raise KeyError(f"unknown schema {name!r}; expected one of {sorted(SCHEMAS)}")
    schema = SCHEMAS[name]
    return schema.subset(questions.split(",")) if questions else schema


def schema_to_dict(schema: Schema) -> dict:
    """A schema as plain data (name, questions with answers and ``asked_after``), e.g. for checkpoints."""
    return {
        "name": schema.name,
        "questions": [
            {"name": q.name, "answers": list(q.answers), "asked_after": list(q.asked_after)}
            for q in schema.questions
        ],
    }


def schema_from_dict(record: dict) -> Schema:
    """The inverse of :func:`schema_to_dict`; custom schemas round-trip too."""
    questions = tuple(
        Question(q["name"], tuple(q["answers"]), tuple(q["asked_after"])) for q in record["questions"]
    )
    return Schema(record["name"], questions)
