"""Kaggle Galaxy Challenge ``training_solutions_rev1.csv`` -> a GZ2 master catalog of pseudo-counts.

The Kaggle table holds no vote counts. Its 37 ``ClassX.Y`` columns are GZ2 vote fractions
*multiplied down the decision tree*: ``Class2.1`` is P(features) x P(edge-on | features), so the
answers of question X sum to the fraction of volunteers who reached X, not to 1. (Class 6,
"anything odd?", is the exception: Kaggle normalised it to sum to 1.)

This converter:

1. checks the tree: each question's sum must match the Kaggle column(s) that lead to it,
   within ``tree_tolerance`` (see :data:`KAGGLE_REACHED_FROM`);
2. divides each question by its sum to get per-question fractions (0 where the sum is 0),
   kept as ``{gz2 answer column}_fraction``;
3. turns fractions into whole pseudo-votes for ``assumed_votes`` volunteers, top-down: a root
   question gets ``assumed_votes`` votes; every other question gets exactly as many votes as
   its parent's leading answers received; each question splits its votes across its answers
   by largest-remainder rounding of ``votes x fraction``, so the counts add up exactly.

Why this is an approximation: the true number of volunteers per galaxy (about 40-50 in GZ2)
varies and is not published with the Kaggle table, and the fractions were weighted by user
consistency before they were released, so ``round(N x fraction)`` are not the votes that were
cast. The pseudo-counts reproduce the published fractions to within 1/N per question, but any
likelihood that treats them as real votes is over- or under-confident by the ratio of
``assumed_votes`` to the real number of volunteers. Prefer a real count table (``convert gz2``)
when one exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.ids import describe_ids
from zoobot.convert.common import (
    ConversionError,
    ConversionReport,
    ConversionResult,
    Timer,
    check_ids,
    finish,
    format_names,
    read_csv,
    require_columns,
    resolve_images,
)
from zoobot.schema import GZ2

logger = logging.getLogger(__name__)

ID_COLUMN = "GalaxyID"
DEFAULT_IMAGE_PATTERN = "{GalaxyID}.jpg"

#: Kaggle question number -> GZ2 question; answers ClassX.1, ClassX.2, ... map in schema order.
KAGGLE_QUESTIONS: dict[int, str] = {
    1: "t01_smooth_or_features",  # smooth, features or disk, star or artifact
    2: "t02_edgeon",  # yes, no
    3: "t03_bar",  # bar, no bar
    4: "t04_spiral",  # spiral, no spiral
    5: "t05_bulge_prominence",  # no bulge, just noticeable, obvious, dominant
    6: "t06_odd",  # yes, no
    7: "t07_rounded",  # completely round, in between, cigar-shaped
    8: "t08_odd_feature",  # ring, lens or arc, disturbed, irregular, other, merger, dust lane
    9: "t09_bulge_shape",  # rounded, boxy, no bulge
    10: "t10_arms_winding",  # tight, medium, loose
    11: "t11_arms_number",  # 1, 2, 3, 4, more than four, can't tell
}

#: Kaggle columns whose sum each question's answers must add up to (empty: they sum to 1).
KAGGLE_REACHED_FROM: dict[int, tuple[str, ...]] = {
    1: (),
    2: ("Class1.2",),
    3: ("Class2.2",),
    4: ("Class2.2",),
    5: ("Class2.2",),
    6: (),  # Kaggle normalised "anything odd?" to 1 for every galaxy
    7: ("Class1.1",),
    8: ("Class6.1",),
    9: ("Class2.1",),
    10: ("Class4.1",),
    11: ("Class4.1",),
}


def kaggle_columns() -> dict[str, str]:
    """{Kaggle column: GZ2 answer column}, 37 entries in GZ2 schema order."""
    mapping = {}
    for number, name in KAGGLE_QUESTIONS.items():
        for index, column in enumerate(GZ2.question(name).columns(), start=1):
            mapping[f"Class{number}.{index}"] = column
    return mapping


def apportion(totals: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split whole ``totals`` (galaxy,) across answers by ``fractions`` (galaxy, answer).

    Largest-remainder rounding: floor every share, then give the leftover votes to the answers
    with the largest fractional parts (ties to the earlier answer). Rows of ``fractions`` sum
    to 1; the result's rows sum exactly to ``totals``.
    """
    totals = np.asarray(totals, dtype=np.int64)
    n_galaxies, n_answers = fractions.shape
    raw = totals[:, None] * fractions  # (galaxy, answer)
    base = np.floor(raw + 1e-9).astype(np.int64)  # (galaxy, answer)
    leftover = totals - base.sum(axis=1)  # (galaxy,)
    order = np.argsort(-(raw - base), axis=1, kind="stable")  # (galaxy, answer) best first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n_answers), order.shape), axis=1)
    counts = base + (rank < leftover[:, None])
    if (leftover < 0).any() or (counts.sum(axis=1) != totals).any():
        raise ValueError("apportion: fractions must be >= 0 and sum to 1 per row")
    return counts


def convert_kaggle(
    table_path: str | Path,
    assumed_votes: int,
    images_dir: str | Path | None = None,
    image_pattern: str = DEFAULT_IMAGE_PATTERN,
    tree_tolerance: float = 0.01,
    missing_images: str = "error",
) -> ConversionResult:
    """Convert the Kaggle solutions table to GZ2 pseudo-counts for ``assumed_votes`` volunteers."""
    if not isinstance(assumed_votes, (int, np.integer)) or assumed_votes < 1:
        raise ConversionError(
            f"--assumed-votes must be a whole number of volunteers >= 1, got {assumed_votes!r} "
            "(GZ2 galaxies had about 40-50)"
        )
    report = ConversionReport("kaggle", str(table_path))
    with Timer() as timer:
        table = read_csv(table_path, "Kaggle solutions table", str_columns=(ID_COLUMN,))
        report.n_read = len(table)
        to_gz2 = kaggle_columns()
        require_columns(
            table, [ID_COLUMN, *to_gz2], table_path,
            "Expected training_solutions_rev1.csv from the Kaggle Galaxy Challenge "
            "(GalaxyID, Class1.1 ... Class11.6).",
        )
        unknown = [c for c in table.columns if c.startswith("Class") and c not in to_gz2]
        if unknown:
            raise ConversionError(
                f"{table_path}: answers that the Kaggle tree does not have: {unknown}. "
                "Expected exactly the 37 columns Class1.1 ... Class11.6."
            )
        ids = check_ids(table[ID_COLUMN], table_path, ID_COLUMN)
        values = _check_values(table, list(to_gz2), ids, table_path)
        _check_tree(values, ids, tree_tolerance, table_path)

        by_gz2 = values.rename(columns=to_gz2)[GZ2.answer_columns].to_numpy()  # (galaxy, answer)
        fractions = GZ2.vote_fractions(by_gz2)  # (galaxy, answer), per question
        counts = _pseudo_counts(fractions, by_gz2, assumed_votes, report)
        report.note(
            f"pseudo-counts for {assumed_votes} assumed volunteers per galaxy (not real votes; "
            "see docs/converters.md)"
        )
        fraction_columns = pd.DataFrame(fractions, columns=[f"{c}_fraction" for c in GZ2.answer_columns])
        extras = fraction_columns.assign(kaggle_assumed_votes=np.int64(assumed_votes))

        file_loc, keep = None, None
        if images_dir is None:
            report.note("no images: file_loc is empty (votes-only catalog)")
        else:
            names = format_names(table.assign(id_str=ids), image_pattern, table_path)
            file_loc, keep = resolve_images(
                ids, names, images_dir, missing_images, report, f"pattern {image_pattern!r}"
            )
        counts_frame = pd.DataFrame(counts, columns=GZ2.answer_columns)
        result = finish(ids, file_loc, counts_frame, extras, GZ2, report, keep)
    report.seconds = timer.seconds
    return result


def _check_values(table: pd.DataFrame, columns: list[str], ids: pd.Series, path) -> pd.DataFrame:
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    array = values.to_numpy(dtype=np.float64)
    for problem, mask in {
        "is empty or not a number": ~np.isfinite(array),
        "is outside [0, 1]": np.isfinite(array) & ((array < 0) | (array > 1)),
    }.items():
        bad_rows = mask.any(axis=1)
        if bad_rows.any():
            bad_columns = [c for c, bad in zip(columns, mask.any(axis=0)) if bad]
            raise ConversionError(
                f"{path}: columns {bad_columns} {problem} for GalaxyIDs {describe_ids(ids[bad_rows])}. "
                "Kaggle Class columns hold fractions between 0 and 1."
            )
    return values


def _check_tree(values: pd.DataFrame, ids: pd.Series, tolerance: float, path) -> None:
    """Each question's sum must equal the sum of the Kaggle columns that lead to it."""
    for number, leading in KAGGLE_REACHED_FROM.items():
        answers = [c for c in values.columns if c.startswith(f"Class{number}.")]
        reached = values[answers].sum(axis=1).to_numpy()
        expected = values[list(leading)].sum(axis=1).to_numpy() if leading else np.ones(len(values))
        wrong = np.abs(reached - expected) > tolerance
        if wrong.any():
            source = " + ".join(leading) if leading else "1"
            worst = np.abs(reached - expected).max()
            raise ConversionError(
                f"{path}: Class{number}.* should sum to {source} (the share of volunteers who reached "
                f"question {number}), but differs by more than {tolerance} (up to {worst:.4f}) for "
                f"GalaxyIDs {describe_ids(ids[wrong])}. Is this the Kaggle solutions table? "
                "Raise --tree-tolerance only if you know why it does not add up."
            )


def _pseudo_counts(fractions: np.ndarray, kaggle: np.ndarray, assumed_votes: int, report) -> np.ndarray:
    """(galaxy, answer) whole votes, consistent down the tree: see the module docstring."""
    column_index = {c: i for i, c in enumerate(GZ2.answer_columns)}
    counts = np.zeros(fractions.shape, dtype=np.int64)
    for question, (start, stop) in zip(GZ2.questions, GZ2.answer_groups):
        if question.asked_after:
            totals = counts[:, [column_index[c] for c in question.asked_after]].sum(axis=1)
        else:
            totals = np.full(len(counts), assumed_votes, dtype=np.int64)
        unweighted = kaggle[:, start:stop].sum(axis=1) == 0  # reached by pseudo-votes, no Kaggle weight
        lost = unweighted & (totals > 0)
        if lost.any():
            report.note(
                f"{question.name}: {lost.sum()} galaxies get pseudo-votes from the parent question "
                "but Kaggle gives the question no weight; their counts for it are 0"
            )
        totals = np.where(unweighted, 0, totals)
        counts[:, start:stop] = apportion(totals, fractions[:, start:stop])
    return counts
