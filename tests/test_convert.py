"""Catalog converters: GZ2, GZ DECaLS, Kaggle and Panoptes exports -> master catalogs."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from zoobot.catalog import SCHEMA_METADATA_KEY, load_catalog
from zoobot.cli import app
from zoobot.convert import (
    DECALS_DR12,
    ConversionError,
    convert_decals,
    convert_gz2,
    convert_kaggle,
    VoteTally,
    convert_panoptes,
    load_task_map,
    parse_task_map,
    write_conversion,
)
from zoobot.convert.kaggle import KAGGLE_QUESTIONS, apportion, kaggle_columns
from zoobot.schema import DECALS_DR5, GZ2

runner = CliRunner()
FIXTURES = "format_fixtures"


# --------------------------------------------------------------------------- GZ2

def write_gz2_table(folder: Path, n: int = 6, seed: int = 0, images: bool = True) -> tuple[Path, pd.DataFrame]:
    """A small table in the Hart et al. 2016 layout, with empty image files named {dr7objid}.jpg."""
    rng = np.random.default_rng(seed)
    ids = [str(587732591714893851 + i) for i in range(n)]  # too long for float64: must stay text
    table = {"dr7objid": ids, "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 60, n)}
    for column in GZ2.answer_columns:
        counts = rng.integers(0, 30, n)
        table[f"{column}_count"] = counts
        table[f"{column}_fraction"] = counts / 30
        table[f"{column}_debiased"] = counts / 31
    frame = pd.DataFrame(table)
    path = folder / "gz2.csv"
    frame.to_csv(path, index=False)
    if images:
        (folder / "images").mkdir(exist_ok=True)
        for i in ids:
            (folder / "images" / f"{i}.jpg").write_bytes(b"")
    return path, frame


def test_gz2_copies_counts_and_joins_images_by_id_column(tmp_path):
    path, frame = write_gz2_table(tmp_path)
    result = convert_gz2(path, tmp_path / "images", image_pattern="{dr7objid}.jpg")
    catalog = result.catalog
    assert result.schema is GZ2
    assert list(catalog.columns[:2]) == ["id_str", "file_loc"]
    assert list(catalog["id_str"]) == list(frame["dr7objid"])  # exact 18-digit ids
    for column in GZ2.answer_columns:
        assert catalog[column].dtype == np.int64
        np.testing.assert_array_equal(catalog[column], frame[f"{column}_count"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in catalog["file_loc"])
    assert {"ra", "dec"} <= set(catalog.columns)
    assert not any(c.endswith("_debiased") for c in catalog.columns)
    assert result.report.n_read == result.report.n_kept == result.report.n_galaxies == 6


def test_gz2_filename_mapping_and_debiased(tmp_path):
    path, frame = write_gz2_table(tmp_path, images=False)
    (tmp_path / "images").mkdir()
    mapping = pd.DataFrame({"objid": frame["dr7objid"], "sample": "original", "asset_id": range(100, 106)})
    mapping.to_csv(tmp_path / "mapping.csv", index=False)
    for asset in mapping["asset_id"]:
        (tmp_path / "images" / f"{asset}.jpg").write_bytes(b"")
    result = convert_gz2(path, tmp_path / "images", mapping_path=tmp_path / "mapping.csv", debiased=True)
    assert [Path(p).name for p in result.catalog["file_loc"]] == [f"{a}.jpg" for a in range(100, 106)]
    column = "t03_bar_a06_bar"
    np.testing.assert_allclose(result.catalog[f"{column}_debiased"], frame[f"{column}_debiased"])


def test_gz2_unmapped_galaxy_fails_or_is_dropped_with_reason(tmp_path):
    path, frame = write_gz2_table(tmp_path, images=False)
    (tmp_path / "images").mkdir()
    mapping = pd.DataFrame({"objid": frame["dr7objid"][:5], "asset_id": range(5)})
    mapping.to_csv(tmp_path / "mapping.csv", index=False)
    for asset in range(5):
        (tmp_path / "images" / f"{asset}.jpg").write_bytes(b"")
    missing_id = frame["dr7objid"].iloc[5]
    with pytest.raises(ConversionError, match=f"no row in the filename mapping.*{missing_id}"):
        convert_gz2(path, tmp_path / "images", mapping_path=tmp_path / "mapping.csv")
    result = convert_gz2(path, tmp_path / "images", mapping_path=tmp_path / "mapping.csv", missing_images="drop")
    assert len(result.catalog) == 5
    (dropped,) = result.report.dropped
    assert dropped.count == 1 and dropped.examples == [missing_id] and "mapping" in dropped.reason
    assert result.report.n_kept == 5


def test_gz2_missing_image_fails_or_is_dropped_with_reason(tmp_path):
    path, frame = write_gz2_table(tmp_path)
    gone = frame["dr7objid"].iloc[2]
    (tmp_path / "images" / f"{gone}.jpg").unlink()
    with pytest.raises(ConversionError, match=f"1 of 6 galaxies have no image.*{gone}.*--drop-missing-images"):
        convert_gz2(path, tmp_path / "images", image_pattern="{dr7objid}.jpg")
    result = convert_gz2(path, tmp_path / "images", image_pattern="{dr7objid}.jpg", missing_images="drop")
    assert gone not in set(result.catalog["id_str"]) and len(result.catalog) == 5
    assert result.report.dropped[0].examples == [gone]


def test_gz2_without_images_leaves_file_loc_empty(tmp_path):
    path, _ = write_gz2_table(tmp_path, images=False)
    result = convert_gz2(path)
    assert result.catalog["file_loc"].isna().all()
    with pytest.raises(ConversionError, match="need --images"):
        convert_gz2(path, image_pattern="{dr7objid}.jpg")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.drop(columns=["t03_bar_a06_bar_count"]), "t03_bar_a06_bar_count"),
        (lambda t: t.assign(t12_new_a40_thing_count=[7, 0, 0, 0, 0, 0]), r"t12_new_a40_thing_count \(7 votes\)"),
        (lambda t: t.assign(t01_smooth_or_features_a01_smooth_count=[1.5, 1, 1, 1, 1, 1]), "not a whole number"),
        (lambda t: t.assign(t02_edgeon_a04_yes_count=[1, -1, 1, 1, 1, 1]), "is negative"),
        (lambda t: t.assign(t02_edgeon_a04_yes_count=[1, None, 1, 1, 1, 1]), "empty or not a number"),
        (lambda t: t.assign(dr7objid=["1", "1", "2", "3", "4", "5"]), "repeated ids 1"),
        (lambda t: t.drop(columns=["dr7objid"]), "no id column"),
    ],
    ids=["missing-column", "unknown-answer", "fraction", "negative", "nan", "duplicate-id", "no-id"],
)
def test_gz2_bad_tables_fail_clearly(tmp_path, edit, message):
    path, frame = write_gz2_table(tmp_path, images=False)
    edit(frame).to_csv(path, index=False)
    with pytest.raises(ConversionError, match=message):
        convert_gz2(path)


def test_gz2_real_fixture_with_filename_mapping(shared_data):
    folder = shared_data / FIXTURES / "galaxy_zoo_2"
    table = pd.read_csv(folder / "gz2_hart16.csv", dtype={"dr7objid": str})
    result = convert_gz2(
        folder / "gz2_hart16.csv", folder / "images",
        mapping_path=folder / "gz2_filename_mapping.csv", debiased=True,
    )
    catalog = result.catalog.set_index("id_str").loc[table["dr7objid"]]
    np.testing.assert_array_equal(
        catalog[GZ2.answer_columns].to_numpy(), table[[f"{c}_count" for c in GZ2.answer_columns]].to_numpy()
    )
    assert catalog.loc["587726016142835881", "file_loc"].endswith("/16126.jpg")
    assert "t01_smooth_or_features_a01_smooth_debiased" in catalog.columns


def test_gz2_real_sdss_450_and_stripe82(shared_data):
    sdss = convert_gz2(shared_data / "gz2_sdss_450" / "labels.csv", shared_data / "gz2_sdss_450")
    assert len(sdss.catalog) == 450 and sdss.report.n_dropped == 0
    assert all(Path(p).is_file() for p in sdss.catalog["file_loc"])
    stripe = convert_gz2(shared_data / "gz2_stripe82_votes" / "gz2_table5_stripe82_coadd.csv")
    assert len(stripe.catalog) == 19761
    assert stripe.catalog["id_str"].iloc[0] == "8647474690312307154"
    assert stripe.catalog[GZ2.answer_columns].to_numpy().sum() > 19761 * 10


# --------------------------------------------------------------------------- DECaLS

def test_decals_real_tables_both_trees(shared_data):
    folder = shared_data / FIXTURES / "galaxy_zoo_decals"
    dr5 = convert_decals(folder / "gz_decals_volunteers_5.csv", folder, debiased=True)
    assert dr5.schema is DECALS_DR5
    table = pd.read_csv(folder / "gz_decals_volunteers_5.csv")
    np.testing.assert_array_equal(dr5.catalog[DECALS_DR5.answer_columns], table[DECALS_DR5.answer_columns])
    assert list(dr5.catalog["id_str"]) == list(table["iauname"])
    assert all(Path(p).name == f"{i}.png" for i, p in zip(dr5.catalog["id_str"], dr5.catalog["file_loc"]))
    assert "bar_strong_debiased" in dr5.catalog.columns
    assert any("merging_total-votes differs" in note for note in dr5.report.notes)  # the public table's quirk

    dr12 = convert_decals(folder / "gz_decals_volunteers_1_and_2.csv", folder)
    assert dr12.schema is DECALS_DR12
    assert dr12.catalog["bar_yes"].sum() == 6 and dr12.catalog["merging_neither"].iloc[0] == 47
    assert dr12.report.n_galaxies == 6


def write_decals_table(folder: Path, n: int = 4) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(1)
    table = {"iauname": [f"J00000{i}.00+000000.0" for i in range(n)], "ra": np.arange(n)}
    for question in DECALS_DR5.questions:
        counts = rng.integers(0, 10, (n, len(question.answers)))
        table[f"{question.name}_total-votes"] = counts.sum(axis=1)
        for column, values in zip(question.columns(), counts.T):
            table[column] = values
            table[f"{column}_fraction"] = values / 10
    frame = pd.DataFrame(table)
    path = folder / "decals.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.assign(**{"bar_maybe": [3, 0, 1, 0]}), r"bar_maybe \(4 votes\)"),
        (lambda t: t.assign(**{"problem_total-votes": [2, 2, 2, 2]}), r"questions .* problem \(8 votes\)"),
        (lambda t: t.drop(columns=["bar_weak", "how-rounded_round"]), "match no GZ DECaLS tree"),
        (lambda t: t.drop(columns=["iauname"]), "iauname"),
    ],
    ids=["unknown-answer", "unknown-question", "no-tree", "no-id"],
)
def test_decals_bad_tables_fail_clearly(tmp_path, edit, message):
    path, frame = write_decals_table(tmp_path)
    edit(frame).to_csv(path, index=False)
    with pytest.raises(ConversionError, match=message):
        convert_decals(path)


def test_decals_images_by_iauname_in_subfolders(tmp_path):
    path, frame = write_decals_table(tmp_path)
    for i, name in enumerate(frame["iauname"]):
        folder = tmp_path / "png" / f"part{i % 2}" / name[:4]
        folder.mkdir(parents=True, exist_ok=True)
        if i != 3:
            (folder / f"{name}.png").write_bytes(b"")
    with pytest.raises(ConversionError, match="J000003.00"):
        convert_decals(path, tmp_path / "png")
    result = convert_decals(path, tmp_path / "png", schema="decals-dr5", missing_images="drop")
    assert len(result.catalog) == 3 and result.report.dropped[0].examples == ["J000003.00+000000.0"]
    (tmp_path / "png" / "copy").mkdir()
    (tmp_path / "png" / "copy" / f"{frame['iauname'][0]}.png").write_bytes(b"")
    with pytest.raises(ConversionError, match="several image files"):
        convert_decals(path, tmp_path / "png")
    with pytest.raises(ConversionError, match="expected one of"):
        convert_decals(path, schema="decals-dr8")


# --------------------------------------------------------------------------- Kaggle

def test_apportion_sums_exactly_and_rounds_to_nearest():
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet(np.ones(5), size=200)
    totals = rng.integers(0, 60, 200)
    counts = apportion(totals, fractions)
    np.testing.assert_array_equal(counts.sum(axis=1), totals)
    assert np.abs(counts - totals[:, None] * fractions).max() < 1
    np.testing.assert_array_equal(apportion(np.array([10]), np.array([[0.25, 0.35, 0.4]])), [[3, 3, 4]])


def test_kaggle_real_fixture_pseudo_counts_follow_the_tree(shared_data):
    folder = shared_data / FIXTURES / "galaxy_zoo_challenge"
    result = convert_kaggle(folder / "training_solutions_rev1.csv", 40, folder / "images_training_rev1")
    catalog = result.catalog
    counts = catalog[GZ2.answer_columns].to_numpy()
    index = {c: i for i, c in enumerate(GZ2.answer_columns)}
    for question, (start, stop) in zip(GZ2.questions, GZ2.answer_groups):
        reached = counts[:, start:stop].sum(axis=1)
        if question.asked_after:
            expected = counts[:, [index[c] for c in question.asked_after]].sum(axis=1)
        else:
            expected = np.full(len(catalog), 40)
        np.testing.assert_array_equal(reached, expected, err_msg=question.name)
    table = pd.read_csv(folder / "training_solutions_rev1.csv", dtype={"GalaxyID": str}).set_index("GalaxyID")
    row = catalog.set_index("id_str").loc["100008"]
    # Class2.2 / (Class2.1 + Class2.2) = 1 for 100008; Class3.1 / Class2.2 = 0.0623...
    assert row["t02_edgeon_a05_no_fraction"] == pytest.approx(1.0)
    assert row["t03_bar_a06_bar_fraction"] == pytest.approx(table.loc["100008", "Class3.1"] / 0.616853, rel=1e-5)
    assert row["t01_smooth_or_features_a01_smooth"] == 15  # round(0.383147 * 40)
    assert row["t03_bar_a06_bar"] == 2  # round(0.0623 * 25)
    assert any("pseudo-counts for 40" in note for note in result.report.notes)


def write_kaggle_table(folder: Path) -> tuple[Path, pd.DataFrame]:
    """Two galaxies: 1 is 25% smooth / 75% featured face-on without spiral; 2 is all smooth."""
    frame = pd.DataFrame(np.zeros((2, 37)), columns=list(kaggle_columns()))
    frame["Class1.1"], frame["Class1.2"] = [0.25, 1.0], [0.75, 0.0]
    frame["Class7.1"], frame["Class7.3"] = [0.25, 0.5], [0.0, 0.5]
    for column in ("Class2.2", "Class3.2", "Class4.2", "Class5.2"):
        frame[column] = [0.75, 0.0]
    frame["Class6.2"] = 1.0
    frame.insert(0, "GalaxyID", ["1", "2"])
    path = folder / "training_solutions_rev1.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_kaggle_synthetic_fractions_and_counts(tmp_path):
    path, _ = write_kaggle_table(tmp_path)
    catalog = convert_kaggle(path, 8).catalog.set_index("id_str")
    assert catalog.loc["1", "t01_smooth_or_features_a01_smooth"] == 2
    assert catalog.loc["1", "t04_spiral_a09_no_spiral"] == 6
    assert catalog.loc["2", "t07_rounded_a18_cigar_shaped_fraction"] == 0.5
    assert catalog.loc["2", "t07_rounded_a16_completely_round"] == 4
    assert catalog.loc["2", "t06_odd_a15_no"] == 8
    assert (catalog["kaggle_assumed_votes"] == 8).all()
    assert catalog["file_loc"].isna().all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.drop(columns=["Class5.3"]), "Class5.3"),
        (lambda t: t.assign(**{"Class12.1": 0.0}), "Class12.1"),
        (lambda t: t.assign(**{"Class3.2": [0.2, 0.0]}), r"Class3\.\* should sum to Class2\.2.*GalaxyIDs 1 "),
        (lambda t: t.assign(**{"Class1.1": [1.5, 1.0]}), r"outside \[0, 1\]"),
        (lambda t: t.assign(**{"Class9.1": [None, 0.0]}), "not a number"),
    ],
    ids=["missing", "unknown-answer", "tree", "range", "nan"],
)
def test_kaggle_bad_tables_fail_clearly(tmp_path, edit, message):
    path, frame = write_kaggle_table(tmp_path)
    edit(frame).to_csv(path, index=False)
    with pytest.raises(ConversionError, match=message):
        convert_kaggle(path, 40)


def test_kaggle_needs_a_positive_assumed_vote_count(tmp_path):
    path, _ = write_kaggle_table(tmp_path)
    with pytest.raises(ConversionError, match="assumed-votes"):
        convert_kaggle(path, 0)
    assert len(KAGGLE_QUESTIONS) == 11 and len(kaggle_columns()) == 37 == GZ2.n_answers


# --------------------------------------------------------------------------- Panoptes

TASK_MAP = {
    "schema": "decals-dr5",
    "workflow_id": 100,
    "image_field": "!filename",
    "id_field": "iauname",
    "ignore_tasks": ["T9"],
    "tasks": {
        "T0": {
            "question": "smooth-or-featured",
            "answers": {"Smooth": "smooth", "Features or Disk": "featured-or-disk", "Star or Artifact": "artifact"},
        },
        "T1": {"question": "disk-edge-on", "answers": ["yes", "no"]},  # by answer index
        "T2": {"question": "merging", "answers": {"0": "none", "1": "minor-disturbance", "Merger": "merger"}},
    },
}


def classification(cid, user, subject, annotations, *, user_id="", ip="", workflow=100, version="12.3",
                   created="2020-01-01 10:00:00 UTC", iauname=None, filename=None):
    iauname = iauname or f"J{subject}"
    return {
        "classification_id": str(cid), "user_name": user, "user_id": str(user_id), "user_ip": ip,
        "workflow_id": str(workflow), "workflow_name": "GZ", "workflow_version": version,
        "created_at": created, "gold_standard": "", "expert": "", "metadata": "{}",
        "annotations": annotations if isinstance(annotations, str) else json.dumps(annotations),
        "subject_data": json.dumps({str(subject): {"retired": None, "iauname": iauname,
                                                   "!filename": filename or f"{iauname}.png"}}),
        "subject_ids": str(subject),
    }


def write_export(folder: Path, rows: list[dict]) -> Path:
    path = folder / "classifications.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def smooth(value="Smooth"):
    return [{"task": "T0", "task_label": "Is the galaxy simply smooth?", "value": value}]


def standard_export(folder: Path) -> Path:
    rows = [
        classification(1, "alice", 501, smooth() + [{"task": "T2", "value": 0}], user_id=11),
        classification(2, "bob", 501, [
            {"task": "T0", "value": "Features or Disk"}, {"task": "T1", "value": 1},
            {"task": "T2", "value": ["Merger", 1]}, {"task": "T9", "value": []},
        ], user_id=12, created="2020-01-01 11:00:00 UTC"),
        classification(2, "bob", 501, smooth(), user_id=12),  # same classification_id again
        classification(3, "alice", 501, smooth("Star or Artifact"), user_id=11,
                       created="2020-01-02 09:00:00 UTC"),  # alice again: repeat of a galaxy
        classification(4, "not-logged-in-9f1", 502, smooth(), ip="9f1", version="11.9"),  # old version
        classification(5, "not-logged-in-9f1", 502, smooth(), ip="9f1", version="12.10"),
        classification(6, "not-logged-in-9f1", 502, smooth(), ip="9f1", version="12.10",
                       created="2020-01-03 10:00:00 UTC"),  # same logged-out volunteer (same ip)
        classification(7, "carol", 777, [{"task": "A", "value": "x"}], user_id=13, workflow=200),
        classification(8, "dave", 503, [{"task": "T0", "value": None}], user_id=14),  # skipped question
        classification(9, "erin", 504, [{"task": "T0", "value": [{"task": "T1", "value": 0}]}], user_id=15),  # combo
        classification(10, "erin", 505, smooth(), user_id=15, iauname="J501"),  # J501 uploaded twice
        classification(11, "frank", 501, smooth(), user_id=16, created="2021-06-01 00:00:00 UTC"),
        classification(12, "gina", 506, smooth(), user_id=17),
    ]
    for row in rows:
        if row["subject_ids"] == "506":
            row["subject_ids"] = "506;507"  # several subjects at once
    return write_export(folder, rows)


def images_for(folder: Path, names) -> Path:
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for name in names:
        (images / f"{name}.png").write_bytes(b"")
    return images


def test_panoptes_aggregates_documented_export_layout(tmp_path):
    path = standard_export(tmp_path)
    images = images_for(tmp_path, ["J501", "J502", "J503", "J504"])
    result = convert_panoptes(
        path, parse_task_map(TASK_MAP), images, min_workflow_version="12.3", until="2021-01-01"
    )
    catalog = result.catalog.set_index("id_str")
    assert set(catalog.index) == {"J501", "J502", "J503", "J504"}
    j501 = catalog.loc["J501"]
    assert j501["smooth-or-featured_smooth"] == 2  # alice's first and erin's (subject 505 is J501 too)
    assert j501["smooth-or-featured_featured-or-disk"] == 1 and j501["smooth-or-featured_artifact"] == 0
    assert j501["disk-edge-on_no"] == 1
    assert (j501["merging_none"], j501["merging_minor-disturbance"], j501["merging_merger"]) == (1, 1, 1)
    assert j501["n_classifications"] == 3
    assert catalog.loc["J502", "smooth-or-featured_smooth"] == 1  # one logged-out volunteer, by ip
    assert catalog.loc["J503", DECALS_DR5.answer_columns].sum() == 0  # skipped: no vote
    assert catalog.loc["J504", "disk-edge-on_yes"] == 1  # nested combo annotation
    assert catalog.loc["J502", "file_loc"] == str((images / "J502.png").resolve())

    report = result.report
    reasons = {d.reason: (d.count, d.examples) for d in report.dropped}
    assert reasons["other workflow 200 (kept workflow 100)"] == (1, ["7"])
    assert reasons["workflow_version below 12.3"] == (1, ["4"])
    assert reasons["created on or after 2021-01-01"] == (1, ["11"])
    assert reasons["repeated classification_id (first row kept)"] == (1, ["2"])
    assert reasons["classification of several subjects at once (not one galaxy)"] == (1, ["12"])
    assert reasons["repeat classification of a galaxy by the same volunteer (earliest kept)"] == (2, ["3", "6"])
    assert report.n_read == 13 and report.n_kept == 6 and report.n_galaxies == 4
    assert any("shown as several subjects" in n for n in report.notes)
    assert any("1 annotations had no answer" in n for n in report.notes)


def test_panoptes_keep_repeats_since_and_no_images(tmp_path):
    path = standard_export(tmp_path)
    task_map = parse_task_map({k: v for k, v in TASK_MAP.items() if k != "id_field"})
    result = convert_panoptes(path, task_map, dedupe_users=False, since="2020-01-02")
    catalog = result.catalog.set_index("id_str")
    # ids are subject ids without id_field; only classifications 3, 6, 11 (and 7, other workflow) are that late
    assert catalog.loc["501", "smooth-or-featured_artifact"] == 1
    assert catalog.loc["501", "smooth-or-featured_smooth"] == 1
    assert catalog.loc["502", "smooth-or-featured_smooth"] == 1
    assert catalog["file_loc"].isna().all()
    assert "created before 2020-01-02" in {d.reason for d in result.report.dropped}


def test_panoptes_task_map_files(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps(TASK_MAP))
    (tmp_path / "map.yaml").write_text(
        "schema: gz2\ntasks:\n  T0:\n    question: t03_bar\n    answers: {0: a06_bar, 'No bar': t03_bar_a07_no_bar}\n"
    )
    assert load_task_map(tmp_path / "map.json").tasks["T1"].answers == {"0": "disk-edge-on_yes", "1": "disk-edge-on_no"}
    assert load_task_map(tmp_path / "map.yaml").tasks["T0"].answers == {"0": "t03_bar_a06_bar", "No bar": "t03_bar_a07_no_bar"}
    (tmp_path / "bool.yaml").write_text("schema: decals-dr5\ntasks:\n  T1:\n    question: disk-edge-on\n    answers: [yes, no]\n")
    with pytest.raises(ConversionError, match="Quote answer names"):
        load_task_map(tmp_path / "bool.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConversionError, match="not valid JSON"):
        load_task_map(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema": "gz9"}, "unknown schema 'gz9'"),
        ({"tasks": {"T0": {"question": "bars", "answers": ["yes"]}}}, "no question 'bars'"),
        ({"tasks": {"T0": {"question": "bar", "answers": ["maybe"]}}}, "does not have; its answers are"),
        ({"colour": "red"}, "unknown keys"),
        ({"ignore_tasks": ["T0"]}, "both mapped and in ignore_tasks"),
    ],
)
def test_panoptes_bad_task_maps_fail_clearly(change, message):
    with pytest.raises(ConversionError, match=message):
        parse_task_map({**TASK_MAP, **change})


def test_panoptes_unknown_answers_are_listed_with_counts(tmp_path):
    rows = [classification(i, f"u{i}", 501, smooth("Smoth"), user_id=i) for i in range(3)]
    rows.append(classification(9, "u9", 501, [{"task": "T1", "value": 5}], user_id=9))
    rows.append(classification(10, "u10", 501, [{"task": "T7", "value": 0}], user_id=10))
    task_map = parse_task_map(TASK_MAP)
    with pytest.raises(ConversionError, match=r"tasks that the task map .* does not cover: T7 \(1 annotations\)"):
        convert_panoptes(write_export(tmp_path, rows), task_map)
    with pytest.raises(ConversionError, match=r"T0: 'Smoth' \(3\), T1: 5 \(1\)"):
        convert_panoptes(write_export(tmp_path, rows[:4]), task_map)


def test_vote_tally_counts_one_classification_at_a_time():
    """The tally needs no export: a live oracle feeds it annotations as they arrive."""
    tally = VoteTally(parse_task_map(TASK_MAP))
    tally.add("J1", {"task": "T0", "value": "Smooth"})
    tally.add("J1", {"task": "T0", "value": "Smooth"})  # the fast path, seen before
    tally.add("J2", {"task": "T0", "value": [{"task": "T1", "value": 0}]})  # combo task
    tally.add("J2", {"task": "T2", "value": ["Merger", 1]})  # multiple choice
    tally.add("J2", {"task": "T1", "value": None})  # skipped
    tally.add("J2", {"task": "T9", "value": "anything"})  # ignored task
    tally.raise_unknown("api")  # everything was known
    counts = pd.DataFrame(tally.counts(["J2", "J3", "J1"]), index=["J2", "J3", "J1"], columns=DECALS_DR5.answer_columns)
    assert counts.loc["J1", "smooth-or-featured_smooth"] == 2 and counts.loc["J1"].sum() == 2
    assert counts.loc["J2", ["disk-edge-on_yes", "merging_minor-disturbance", "merging_merger"]].tolist() == [1, 1, 1]
    assert counts.loc["J2"].sum() == 3 and counts.loc["J3"].sum() == 0
    assert tally.empty == 1
    with pytest.raises(ValueError, match=r"J1 \(1 in all\) are missing"):
        tally.counts(["J2"])
    with pytest.raises(ValueError, match=r"repeats of J2"):
        tally.counts(["J1", "J2", "J2"])
    tally.add("J1", {"task": "T7", "value": 0})
    with pytest.raises(ConversionError, match=r"^api: tasks that the task map .* does not cover: T7"):
        tally.raise_unknown("api")


def test_panoptes_bad_json_names_the_classification(tmp_path):
    rows = [classification(1, "a", 501, smooth(), user_id=1), classification(2, "b", 501, "[{'task': 'T0'", user_id=2)]
    with pytest.raises(ConversionError, match=r"'annotations' is not valid JSON in 1 classifications: 2 \(line 3\)"):
        convert_panoptes(write_export(tmp_path, rows), parse_task_map(TASK_MAP))


def test_panoptes_input_errors(tmp_path):
    task_map = parse_task_map({**TASK_MAP, "workflow_id": None})
    rows = [classification(1, "a", 501, smooth(), user_id=1), classification(2, "b", 502, smooth(), workflow=7)]
    path = write_export(tmp_path, rows)
    with pytest.raises(ConversionError, match=r"several workflows: .*--workflow-id"):
        convert_panoptes(path, task_map)
    with pytest.raises(ConversionError, match="no classifications of workflow 8"):
        convert_panoptes(path, task_map, workflow_id=8)
    with pytest.raises(ConversionError, match="J501"):  # no image for the galaxy
        convert_panoptes(path, task_map, images_for(tmp_path, []), workflow_id=100)
    with pytest.raises(ConversionError, match="workflow-version"):
        convert_panoptes(path, task_map, workflow_id=100, min_workflow_version="v12")
    pd.read_csv(path, dtype=str).drop(columns=["annotations"]).to_csv(path, index=False)
    with pytest.raises(ConversionError, match="annotations"):
        convert_panoptes(path, task_map, workflow_id=100)


# --------------------------------------------------------------------------- CLI

def test_cli_converts_writes_schema_and_prints_report(tmp_path):
    path, _ = write_kaggle_table(tmp_path)
    out = tmp_path / "master.parquet"
    result = runner.invoke(app, ["convert", "kaggle", str(path), "--assumed-votes", "10", "--no-images", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 galaxies (schema gz2)" in result.output
    assert re.search(r"read\s*│\s*2\s*│.*\n.*kept\s*│\s*2\s*│.*\n.*dropped\s*│\s*0\s*│", result.output), result.output
    assert pq.read_schema(out).metadata[SCHEMA_METADATA_KEY] == b"gz2"
    again = runner.invoke(app, ["convert", "kaggle", str(path), "--assumed-votes", "10", "--no-images", "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    neither = runner.invoke(app, ["convert", "kaggle", str(path), "--assumed-votes", "10", "--out", str(tmp_path / "x.parquet")])
    assert neither.exit_code == 1 and "--no-images" in neither.output
    bad = runner.invoke(app, ["convert", "gz2", str(path), "--id-column", "GalaxyID", "--no-images", "--out", str(tmp_path / "y.parquet")])
    assert bad.exit_code == 1 and "t01_smooth_or_features_a01_smooth_count" in bad.output
    assert not (tmp_path / "y.parquet").exists()


def test_converted_fixtures_feed_define_experiment(shared_data, tmp_path):
    fixtures = shared_data / FIXTURES
    commands = {
        "gz2": ["gz2", str(fixtures / "galaxy_zoo_2" / "gz2_hart16.csv"), "--images",
                str(fixtures / "galaxy_zoo_2" / "images"), "--mapping",
                str(fixtures / "galaxy_zoo_2" / "gz2_filename_mapping.csv")],
        "decals": ["decals", str(fixtures / "galaxy_zoo_decals" / "gz_decals_volunteers_5.csv"),
                   "--images", str(fixtures / "galaxy_zoo_decals")],
        "kaggle": ["kaggle", str(fixtures / "galaxy_zoo_challenge" / "training_solutions_rev1.csv"),
                   "--assumed-votes", "40", "--images", str(fixtures / "galaxy_zoo_challenge" / "images_training_rev1")],
        "sdss450": ["gz2", str(shared_data / "gz2_sdss_450" / "labels.csv"), "--images",
                    str(shared_data / "gz2_sdss_450")],
    }
    for name, command in commands.items():
        out = tmp_path / f"{name}.parquet"
        converted = runner.invoke(app, ["convert", *command, "--out", str(out)])
        assert converted.exit_code == 0, converted.output
        experiment = runner.invoke(app, ["define-experiment", str(out), "--out", str(tmp_path / name)])
        assert experiment.exit_code == 0, experiment.output
        labelled = pd.read_parquet(tmp_path / name / "labelled_catalog.parquet")
        assert len(labelled) == len(pd.read_parquet(out)) > 0


def test_write_conversion_round_trips_through_load_catalog(tmp_path):
    path, frame = write_gz2_table(tmp_path)
    result = convert_gz2(path, tmp_path / "images", image_pattern="{dr7objid}.jpg")
    out = write_conversion(result, tmp_path / "master.parquet")
    catalog, schema = load_catalog(out)
    assert schema.name == "gz2" and list(catalog["id_str"]) == list(frame["dr7objid"])
    with pytest.raises(ConversionError, match=".parquet"):
        write_conversion(result, tmp_path / "master.csv")
