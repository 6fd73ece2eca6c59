"""Galaxy Zoo 1 class table -> smooth-or-featured master catalog, one vote per galaxy."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoobot.catalog import SCHEMA_METADATA_KEY, load_catalog
from zoobot.cli import app
from zoobot.convert import GZ1_CLASSES, ConversionError, convert_gz1
from zoobot.convert.gz1 import parse_classes
from zoobot.schema import SMOOTH_OR_FEATURED

runner = CliRunner()
SMOOTH, FEATURED = SMOOTH_OR_FEATURED.answer_columns
NAMES = {0: "elliptical", 1: "spiral_clockwise", 2: "spiral_anticlockwise", 3: "edge_on", 4: "dont_know", 5: "merger"}
# two of each class; 18-digit SDSS ids, which float64 would corrupt
CLASSES = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]
IDS = [str(588848901537202306 + 7 * i) for i in range(len(CLASSES))]


def write_gz1(folder: Path, classes=CLASSES, ids=IDS, images: bool = True, **columns) -> Path:
    """labels.csv in the GZ1 layout with tiny PNGs under folder/images/."""
    table = pd.DataFrame({
        "image_file": [f"images/{i}.png" for i in ids],
        "OBJID": ids,
        "CLASS": classes,
        "class_name": [NAMES.get(c, "unknown") if isinstance(c, int) else "?" for c in classes],
        **columns,
    })
    path = folder / "labels.csv"
    table.to_csv(path, index=False)
    if images:
        (folder / "images").mkdir(exist_ok=True)
        for i in ids:
            Image.new("RGB", (4, 4), (100, 50, 20)).save(folder / "images" / f"{i}.png")
    return path


def test_one_vote_per_galaxy_and_other_classes_dropped_with_reasons(tmp_path):
    result = convert_gz1(write_gz1(tmp_path))
    catalog, report = result.catalog, result.report
    assert result.schema is SMOOTH_OR_FEATURED
    kept = [i for i, c in zip(IDS, CLASSES) if c in (0, 1, 2, 3)]
    assert list(catalog["id_str"]) == kept  # exact 18-digit ids, input order
    expected_smooth = [int(c == 0) for c in CLASSES if c in (0, 1, 2, 3)]
    np.testing.assert_array_equal(catalog[SMOOTH], expected_smooth)
    np.testing.assert_array_equal(catalog[FEATURED], 1 - np.asarray(expected_smooth))
    assert catalog[SMOOTH].dtype == np.int64 and catalog[FEATURED].dtype == np.int64
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in catalog["file_loc"])
    assert [Path(p).parent for p in catalog["file_loc"]] == [tmp_path.resolve() / "images"] * 8
    assert list(catalog["CLASS"]) == [c for c in CLASSES if c in (0, 1, 2, 3)]
    assert report.n_read == 12 and report.n_kept == report.n_galaxies == 8
    dropped = {d.reason.split(" (")[0]: d for d in report.dropped}
    assert set(dropped) == {"class 4 don't know", "class 5 merger"}
    assert dropped["class 4 don't know"].count == 2
    assert dropped["class 4 don't know"].examples == [IDS[4], IDS[10]]
    assert dropped["class 5 merger"].examples == [IDS[5], IDS[11]]
    assert not any("class_name differs" in n for n in report.notes)  # snake_case names match


def test_classes_are_configurable(tmp_path):
    path = write_gz1(tmp_path)
    result = convert_gz1(path, smooth_classes=(0, 5), featured_classes=(3,))
    by_id = result.catalog.set_index("id_str")
    assert by_id.loc[IDS[5], SMOOTH] == 1 and by_id.loc[IDS[5], FEATURED] == 0  # merger votes smooth
    assert by_id.loc[IDS[3], FEATURED] == 1
    assert IDS[1] not in by_id.index  # clockwise spiral now dropped
    assert {d.reason.split(" (")[0]: d.count for d in result.report.dropped} == {
        "class 1 clockwise spiral": 2, "class 2 anticlockwise spiral": 2, "class 4 don't know": 2,
    }
    assert parse_classes(" 1, 2,3 ", "--featured-classes") == (1, 2, 3)
    with pytest.raises(ConversionError, match="--featured-classes 'spiral'"):
        parse_classes("spiral", "--featured-classes")
    with pytest.raises(ConversionError, match=r"both --smooth-classes and --featured-classes"):
        convert_gz1(path, smooth_classes=(0, 3), featured_classes=(3,))
    with pytest.raises(ConversionError, match=r"\[7\] are not GZ1 class codes"):
        convert_gz1(path, featured_classes=(1, 7))
    with pytest.raises(ConversionError, match="--smooth-classes is empty"):
        convert_gz1(path, smooth_classes=())


def test_missing_columns_named(tmp_path):
    path = write_gz1(tmp_path)
    pd.read_csv(path, dtype=str).drop(columns=["CLASS"]).to_csv(path, index=False)
    with pytest.raises(ConversionError, match=r"expected columns CLASS .*found image_file, OBJID, class_name"):
        convert_gz1(path)
    pd.read_csv(path, dtype=str).assign(CLASS=0).drop(columns=["image_file"]).to_csv(path, index=False)
    with pytest.raises(ConversionError, match="image_file.*--no-images"):
        convert_gz1(path)
    votes_only = convert_gz1(path, no_images=True)
    assert votes_only.catalog["file_loc"].isna().all() and len(votes_only.catalog) == 12


def test_unknown_class_codes_listed_with_counts(tmp_path):
    classes = [0, 7, 7, 1, 9, 3, 0, 1, 2, 3, 4, 7]
    path = write_gz1(tmp_path, classes=classes)
    with pytest.raises(ConversionError) as error:
        convert_gz1(path)
    message = str(error.value)
    assert "7 (3 galaxies), 9 (1 galaxies)" in message
    assert f"{IDS[1]}, {IDS[2]}, {IDS[4]}, {IDS[11]} (4 in all)" in message
    assert "0 elliptical" in message  # says what is expected
    path = write_gz1(tmp_path, classes=[0, 1.5, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
    with pytest.raises(ConversionError, match=rf"whole-number GZ1 class code; found \['1.5'\] for ids {IDS[1]} "):
        convert_gz1(path)
    table = pd.read_csv(path, dtype=str)
    table.loc[3, "CLASS"] = None
    table.to_csv(path, index=False)
    with pytest.raises(ConversionError, match=f"ids {IDS[1]}, {IDS[3]} "):
        convert_gz1(path)


def test_repeated_ids_and_missing_images(tmp_path):
    ids = IDS[:11] + IDS[:1]
    with pytest.raises(ConversionError, match=f"repeated ids {IDS[0]} "):
        convert_gz1(write_gz1(tmp_path, ids=ids))
    path = write_gz1(tmp_path)
    (tmp_path / "images" / f"{IDS[2]}.png").unlink()
    (tmp_path / "images" / f"{IDS[4]}.png").unlink()  # a don't-know galaxy: dropped anyway, not looked up
    with pytest.raises(ConversionError, match=rf"1 of 8 galaxies have no image .*{IDS[2]}: .*{IDS[2]}\.png"):
        convert_gz1(path)
    dropped = convert_gz1(path, missing_images="drop")
    assert len(dropped.catalog) == 7 and IDS[2] not in set(dropped.catalog["id_str"])
    assert [d.examples for d in dropped.report.dropped if d.reason.startswith("image not found")] == [[IDS[2]]]
    # --images: image_file is read relative to another folder
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "images").rename(moved / "images")
    result = convert_gz1(path, images_dir=moved, missing_images="drop")
    assert all(p.startswith(str(moved.resolve())) for p in result.catalog["file_loc"])
    with pytest.raises(ConversionError, match="no image"):
        convert_gz1(path)


def test_cli_writes_schema_and_reports_drops(tmp_path):
    path = write_gz1(tmp_path)
    out = tmp_path / "master.parquet"
    result = runner.invoke(app, ["convert", "gz1", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 8 galaxies (schema smooth-or-featured)" in result.output
    assert "class 5 merger" in result.output and "class 4 don't know" in result.output
    assert pq.read_schema(out).metadata[SCHEMA_METADATA_KEY] == b"smooth-or-featured"
    catalog, schema = load_catalog(out)
    assert schema.name == "smooth-or-featured" and catalog[SMOOTH].sum() == 2
    custom = runner.invoke(app, [
        "convert", "gz1", str(path), "--smooth-classes", "0", "--featured-classes", "1,2",
        "--out", str(tmp_path / "custom.parquet"),
    ])
    assert custom.exit_code == 0 and "wrote 6 galaxies" in custom.output
    bad = runner.invoke(app, ["convert", "gz1", str(path), "--featured-classes", "1,x", "--out", str(tmp_path / "b.parquet")])
    assert bad.exit_code == 1 and "comma-separated GZ1 class codes" in bad.output
    assert not (tmp_path / "b.parquet").exists()


def test_real_gz1_labels_counts(shared_data):
    labels = shared_data / "gz1_sdss_6664" / "labels.csv"
    result = convert_gz1(labels, no_images=True)  # reads only the CSV
    catalog = result.catalog
    assert catalog[SMOOTH].sum() == 4645 and catalog[FEATURED].sum() == 1848
    assert (catalog[SMOOTH] + catalog[FEATURED] == 1).all()
    assert result.report.n_read == 6664 and result.report.n_dropped == 171
    assert {d.reason.split(" (")[0]: d.count for d in result.report.dropped} == {
        "class 4 don't know": 56, "class 5 merger": 115,
    }
    assert catalog["id_str"].str.fullmatch(r"\d{18}").all()
    assert set(GZ1_CLASSES) == set(range(6))
