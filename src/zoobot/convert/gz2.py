"""Galaxy Zoo 2 tables (Willett et al. 2013; Hart et al. 2016) -> a GZ2 master catalog.

The public tables hold, for every answer, ``tNN_<question>_aMM_<answer>_<suffix>`` with suffix
``count`` (raw votes), ``weight``, ``fraction``, ``weighted_fraction``, ``debiased`` and ``flag``.
The zoobot GZ2 schema names its vote columns like the table minus ``_count``, so the counts copy
across one to one. Images join either through Hart's ``gz2_filename_mapping.csv``
(``objid, sample, asset_id`` -> ``{asset_id}.jpg``) or through a pattern over the table's own
columns (``{image_file}``, ``{dr7objid}.jpg``, ...).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.ids import describe_ids
from zoobot.convert.common import (
    ConversionError,
    ConversionReport,
    ConversionResult,
    with_debiased,
    Timer,
    check_ids,
    counts_as_int,
    finish,
    format_names,
    read_csv,
    require_columns,
    resolve_images,
)
from zoobot.schema import GZ2

logger = logging.getLogger(__name__)

#: Id columns tried in order when none is given: Hart 2016 uses dr7objid, Willett 2013 objid.
ID_COLUMNS = ("dr7objid", "objid", "id_str")
ANSWER_COLUMN = re.compile(r"^t\d\d_.+_a\d\d_.+$")
COUNT_COLUMN = re.compile(r"^t\d\d_.+_a\d\d_.+_count$")
MAPPING_ID, MAPPING_ASSET = "objid", "asset_id"


def default_image_pattern(columns, has_mapping: bool) -> str:
    """``{asset_id}.jpg`` with a mapping, else ``{image_file}`` if present, else ``{id_str}.jpg``."""
    if has_mapping:
        return "{asset_id}.jpg"
    if "image_file" in columns:
        return "{image_file}"
    return "{id_str}.jpg"


def _resolve_id_column(table: pd.DataFrame, id_column: str | None, path) -> str:
    if id_column is not None:
        require_columns(table, [id_column], path, "Choose the id column with --id-column.")
        return id_column
    for candidate in ID_COLUMNS:
        if candidate in table.columns:
            return candidate
    raise ConversionError(
        f"{path}: no id column; expected one of {list(ID_COLUMNS)}. Name it with --id-column."
    )


def _join_mapping(ids: pd.Series, table: pd.DataFrame, mapping_path) -> pd.Series:
    """asset_id for every galaxy (None where the mapping has no row)."""
    mapping = read_csv(mapping_path, "filename mapping", str_columns=(MAPPING_ID, MAPPING_ASSET, "sample"))
    require_columns(
        mapping, [MAPPING_ID, MAPPING_ASSET], mapping_path,
        "Expected Hart et al. 2016's gz2_filename_mapping.csv (objid, sample, asset_id).",
    )
    mapping = mapping.dropna(subset=[MAPPING_ID, MAPPING_ASSET]).copy()
    mapping[MAPPING_ID] = mapping[MAPPING_ID].str.strip()
    mapping = mapping[mapping[MAPPING_ID].isin(set(ids))]
    keys = [MAPPING_ID]
    if mapping[MAPPING_ID].duplicated().any() and "sample" in mapping.columns and "sample" in table.columns:
        keys = [MAPPING_ID, "sample"]
    mapping = mapping.drop_duplicates(subset=[*keys, MAPPING_ASSET])
    repeated = mapping.loc[mapping.duplicated(subset=keys, keep=False), MAPPING_ID].unique()
    if len(repeated):
        raise ConversionError(
            f"{mapping_path}: galaxies {describe_ids(repeated)} map to several different asset_ids. "
            "Fix the mapping so each galaxy has one image."
        )
    left = pd.DataFrame({MAPPING_ID: ids.to_numpy()})
    if keys == [MAPPING_ID, "sample"]:
        left["sample"] = table["sample"].astype(str).to_numpy()
    joined = left.merge(mapping[[*keys, MAPPING_ASSET]], on=keys, how="left", validate="many_to_one")
    assets = joined[MAPPING_ASSET].to_numpy(dtype=object)
    assets = np.where(pd.isna(assets), None, assets)
    return pd.Series(assets, index=ids.index, dtype=object)


def convert_gz2(
    table_path: str | Path,
    images_dir: str | Path | None = None,
    mapping_path: str | Path | None = None,
    image_pattern: str | None = None,
    id_column: str | None = None,
    debiased: bool = False,
    missing_images: str = "error",
) -> ConversionResult:
    """Convert a GZ2 vote table into a master catalog with the ``gz2`` schema.

    images_dir: folder holding the images; None writes a votes-only catalog (``file_loc`` empty).
    mapping_path: Hart's filename mapping; galaxies join on ``objid`` and get ``{asset_id}.jpg``.
    image_pattern: file name under ``images_dir`` as a format over the table's columns plus
        ``id_str`` (and ``asset_id`` with a mapping); see :func:`default_image_pattern`.
    debiased: also keep the ``_debiased`` vote fractions, as ``{answer column}_debiased``.
    missing_images: "error" (default) or "drop" galaxies whose image is missing, with a report.
    """
    report = ConversionReport("gz2", str(table_path))
    with Timer() as timer:
        candidates = (id_column,) if id_column else ID_COLUMNS
        table = read_csv(table_path, "GZ2 table", str_columns=candidates)
        report.n_read = len(table)
        column = _resolve_id_column(table, id_column, table_path)
        ids = check_ids(table[column], table_path, column)

        count_columns = [f"{c}_count" for c in GZ2.answer_columns]
        require_columns(
            table, count_columns, table_path,
            "Expected the GZ2 layout of Willett et al. 2013 / Hart et al. 2016 "
            "(tNN_<question>_aMM_<answer>_count for every answer).",
        )
        unknown = [c for c in table.columns if COUNT_COLUMN.match(c) and c not in set(count_columns)]
        if unknown:
            totals = ", ".join(
                f"{c} ({int(pd.to_numeric(table[c], errors='coerce').fillna(0).sum())} votes)" for c in unknown
            )
            raise ConversionError(
                f"{table_path}: answers that the gz2 schema does not have: {totals}. "
                "This table follows another decision tree; it cannot be converted to gz2 as it is."
            )
        counts = counts_as_int(table, count_columns, ids, table_path)
        counts.columns = GZ2.answer_columns

        extras = table[[c for c in table.columns if not ANSWER_COLUMN.match(c) and c != column]].copy()
        if debiased:
            extras = with_debiased(
                extras, table, GZ2.answer_columns, table_path,
                "--debiased needs the tNN_..._debiased columns; drop --debiased for this table.",
            )

        file_loc, keep = None, None
        if images_dir is None:
            if mapping_path is not None or image_pattern is not None:
                raise ConversionError(
                    "--mapping and --image-pattern need --images DIR (the folder the images are in)."
                )
            report.note("no images: file_loc is empty (votes-only catalog)")
        else:
            named = table[[c for c in table.columns if not ANSWER_COLUMN.match(c)]].assign(id_str=ids)
            pattern = image_pattern or default_image_pattern(table.columns, mapping_path is not None)
            keep = np.ones(len(ids), bool)
            if mapping_path is not None:
                named["asset_id"] = _join_mapping(ids, table, mapping_path)
                unmapped = named["asset_id"].isna().to_numpy()
                if unmapped.any():
                    if missing_images == "error":
                        raise ConversionError(
                            f"{unmapped.sum()} of {len(ids)} galaxies have no row in the filename mapping "
                            f"{mapping_path}: ids {describe_ids(ids[unmapped])}. Use the mapping that "
                            "matches this table, or pass --drop-missing-images to leave them out."
                        )
                    report.drop(f"no row in filename mapping {Path(mapping_path).name}", ids[unmapped])
                    keep &= ~unmapped
            names = format_names(named, pattern, table_path).where(keep, None)
            file_loc, found = resolve_images(
                ids, names, images_dir, missing_images, report, f"pattern {pattern!r}", keep
            )
            keep &= found
        result = finish(ids, file_loc, counts, extras, GZ2, report, keep)
    report.seconds = timer.seconds
    return result
