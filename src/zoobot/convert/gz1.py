"""Galaxy Zoo 1 single-class labels -> a smooth-or-featured master catalog, one vote per galaxy.

The GZ1 table read here (``gz1_sdss_6664/labels.csv``) holds one class per galaxy, not vote
counts: ``image_file, OBJID, CLASS, class_name`` with CLASS one of :data:`GZ1_CLASSES`. Each
galaxy becomes one vote on the ``smooth-or-featured`` question: classes in ``smooth_classes``
(default: elliptical) vote smooth, classes in ``featured_classes`` (default: both spiral
directions and edge-on) vote featured. Galaxies of any other known class ("don't know",
"merger" by default) are dropped, and the report counts them per class. A code that is not a
GZ1 class is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.ids import describe_ids
from zoobot.convert.common import (
    N_EXAMPLES,
    ConversionError,
    ConversionReport,
    ConversionResult,
    Timer,
    check_ids,
    finish,
    read_csv,
    require_columns,
    resolve_images,
)
from zoobot.schema import SMOOTH_OR_FEATURED

logger = logging.getLogger(__name__)

#: The Galaxy Zoo 1 classes (Lintott et al. 2008) as coded in the ``CLASS`` column.
GZ1_CLASSES: dict[int, str] = {
    0: "elliptical",
    1: "clockwise spiral",
    2: "anticlockwise spiral",
    3: "edge-on",
    4: "don't know",
    5: "merger",
}
DEFAULT_SMOOTH_CLASSES: tuple[int, ...] = (0,)
DEFAULT_FEATURED_CLASSES: tuple[int, ...] = (1, 2, 3)
ID_COLUMN, CLASS_COLUMN, IMAGE_COLUMN, NAME_COLUMN = "OBJID", "CLASS", "image_file", "class_name"
SMOOTH, FEATURED = SMOOTH_OR_FEATURED.answer_columns


def parse_classes(text: str, option: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)``; ``option`` names the flag in the error message."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        codes = tuple(int(p) for p in parts)
    except ValueError:
        raise ConversionError(
            f"{option} {text!r}: expected comma-separated GZ1 class codes such as '1,2,3'; "
            f"codes are {_describe_classes(GZ1_CLASSES)}"
        ) from None
    return codes


def _describe_classes(codes) -> str:
    return ", ".join(f"{c} {GZ1_CLASSES[c]}" for c in codes)


def _check_class_choice(smooth_classes, featured_classes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    smooth, featured = tuple(int(c) for c in smooth_classes), tuple(int(c) for c in featured_classes)
    for option, codes in (("--smooth-classes", smooth), ("--featured-classes", featured)):
        if not codes:
            raise ConversionError(
                f"{option} is empty: expected at least one GZ1 class code ({_describe_classes(GZ1_CLASSES)})"
            )
        unknown = sorted(set(codes) - set(GZ1_CLASSES))
        if unknown:
            raise ConversionError(
                f"{option} {list(codes)}: {unknown} are not GZ1 class codes; "
                f"expected codes from {_describe_classes(GZ1_CLASSES)}"
            )
    both = sorted(set(smooth) & set(featured))
    if both:
        raise ConversionError(
            f"classes {_describe_classes(both)} are in both --smooth-classes and --featured-classes; "
            "each class may vote for one answer only"
        )
    return smooth, featured


def _class_codes(table: pd.DataFrame, ids: pd.Series, path) -> np.ndarray:
    """CLASS as int64; raise naming the ids for empty, fractional or unknown codes."""
    values = pd.to_numeric(table[CLASS_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        found = table.loc[bad, CLASS_COLUMN].astype(str).unique()[:N_EXAMPLES]
        raise ConversionError(
            f"{path}: column {CLASS_COLUMN!r} must hold a whole-number GZ1 class code; found "
            f"{list(found)} for ids {describe_ids(ids[bad])}. Expected codes "
            f"{_describe_classes(GZ1_CLASSES)}."
        )
    codes = values.astype(np.int64)
    unknown = ~np.isin(codes, list(GZ1_CLASSES))
    if unknown.any():
        counted = pd.Series(codes[unknown]).value_counts().sort_index()
        listing = ", ".join(f"{code} ({n} galaxies)" for code, n in counted.items())
        raise ConversionError(
            f"{path}: column {CLASS_COLUMN!r} holds codes that are not GZ1 classes: {listing}; "
            f"ids {describe_ids(ids[unknown])}. Expected codes {_describe_classes(GZ1_CLASSES)}; "
            "check that this is a Galaxy Zoo 1 table, or fix those rows."
        )
    return codes


def _words(name: str) -> frozenset[str]:
    """Class names compared as sets of words: 'spiral_clockwise' matches 'clockwise spiral'."""
    return frozenset(re.split(r"[^a-z0-9]+", name.lower().replace("'", ""))) - {""}


def _note_class_names(table: pd.DataFrame, codes: np.ndarray, report: ConversionReport) -> None:
    """Note (do not fail on) class_name values whose words differ from the standard GZ1 names."""
    if NAME_COLUMN not in table.columns:
        return
    names = table[NAME_COLUMN].astype(str).str.strip().to_numpy()
    odd = sorted({(int(c), n) for c, n in zip(codes, names) if _words(n) != _words(GZ1_CLASSES[int(c)])})
    if odd:
        shown = ", ".join(f"{c}: {n!r}" for c, n in odd[:N_EXAMPLES])
        report.note(
            f"{NAME_COLUMN} differs from the standard GZ1 names for {len(odd)} (code, name) pairs, "
            f"e.g. {shown}; the CLASS code was used"
        )


def convert_gz1(
    labels_path: str | Path,
    images_dir: str | Path | None = None,
    smooth_classes=DEFAULT_SMOOTH_CLASSES,
    featured_classes=DEFAULT_FEATURED_CLASSES,
    no_images: bool = False,
    missing_images: str = "error",
) -> ConversionResult:
    """Convert a GZ1 class table into a ``smooth-or-featured`` master catalog, one vote per galaxy.

    images_dir: folder that ``image_file`` paths are relative to; default the table's folder.
    smooth_classes, featured_classes: GZ1 codes voting smooth / featured (disjoint); galaxies of
        other classes are dropped and counted per class in the report.
    no_images: write a votes-only catalog (``file_loc`` empty); ``image_file`` is then not needed.
    missing_images: "error" (default) or "drop" galaxies whose image is missing, with a report.
    """
    labels_path = Path(labels_path)
    smooth, featured = _check_class_choice(smooth_classes, featured_classes)
    if no_images and images_dir is not None:
        raise ConversionError("--images and --no-images contradict each other; pass one")
    report = ConversionReport("gz1", str(labels_path))
    with Timer() as timer:
        table = read_csv(labels_path, "GZ1 labels table", str_columns=(ID_COLUMN,))
        report.n_read = len(table)
        required = [ID_COLUMN, CLASS_COLUMN] + ([] if no_images else [IMAGE_COLUMN])
        require_columns(
            table, required, labels_path,
            "Expected the GZ1 layout image_file, OBJID, CLASS[, class_name] "
            "(pass --no-images if the table has no image_file column).",
        )
        ids = check_ids(table[ID_COLUMN], labels_path, ID_COLUMN)
        codes = _class_codes(table, ids, labels_path)
        _note_class_names(table, codes, report)

        is_smooth, is_featured = np.isin(codes, smooth), np.isin(codes, featured)
        keep = is_smooth | is_featured
        for code in sorted(set(GZ1_CLASSES) - set(smooth) - set(featured)):
            report.drop(
                f"class {code} {GZ1_CLASSES[code]} (neither --smooth-classes nor --featured-classes)",
                ids[codes == code],
            )
        report.note(
            f"one vote per galaxy: smooth = {_describe_classes(smooth)}; "
            f"featured = {_describe_classes(featured)}"
        )
        counts = pd.DataFrame(
            {SMOOTH: is_smooth.astype(np.int64), FEATURED: is_featured.astype(np.int64)}, index=table.index
        )
        extras = table[[c for c in table.columns if c != ID_COLUMN]].copy()
        extras[CLASS_COLUMN] = codes

        file_loc = None
        if no_images:
            report.note("no images: file_loc is empty (votes-only catalog)")
        else:
            folder = labels_path.parent if images_dir is None else Path(images_dir)
            names = table[IMAGE_COLUMN].where(table[IMAGE_COLUMN].notna(), None)
            names = names.map(lambda n: n.strip() if isinstance(n, str) and n.strip() else None)
            file_loc, found = resolve_images(
                ids, names, folder, missing_images, report, f"column {IMAGE_COLUMN!r}", keep
            )
            keep = keep & found
        result = finish(ids, file_loc, counts, extras, SMOOTH_OR_FEATURED, report, keep)
    report.seconds = timer.seconds
    return result
