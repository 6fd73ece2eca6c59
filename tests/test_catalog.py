import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from zoobot.catalog import (
    CatalogError,
    define_experiment,
    load_catalog,
    read_table,
    save_experiment,
    schema_spec_of,
    validate_catalog,
    write_catalog,
)
from zoobot.cli import app
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED

runner = CliRunner()


def make_catalog(folder: Path, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """A smooth-or-featured catalog with real (empty) image files."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / "images" / f"g{i}.png"
        path.write_bytes(b"")
        smooth = int(rng.integers(0, 10))
        rows.append(
            {
                "id_str": f"g{i}",
                "file_loc": str(path),
                "smooth-or-featured_smooth": smooth,
                "smooth-or-featured_featured": int(rng.integers(0, 10)),
            }
        )
    return pd.DataFrame(rows)


def test_valid_catalog_passes(tmp_path):
    catalog = validate_catalog(make_catalog(tmp_path), SMOOTH_OR_FEATURED)
    assert catalog["smooth-or-featured_smooth"].dtype == np.int64
    assert len(catalog) == 20


def test_missing_id_column(tmp_path):
    catalog = make_catalog(tmp_path).drop(columns="id_str")
    with pytest.raises(CatalogError, match="no 'id_str' column"):
        validate_catalog(catalog, SMOOTH_OR_FEATURED)


def test_duplicate_ids_are_named(tmp_path):
    catalog = make_catalog(tmp_path)
    catalog.loc[3, "id_str"] = "g1"
    with pytest.raises(CatalogError, match=r"must be unique; duplicated ids g1 \(1 in all\)"):
        validate_catalog(catalog, SMOOTH_OR_FEATURED)


def test_missing_files_are_named(tmp_path):
    catalog = make_catalog(tmp_path)
    Path(catalog.loc[2, "file_loc"]).unlink()
    with pytest.raises(CatalogError, match=r"1 missing files, e.g. g2: "):
        validate_catalog(catalog, SMOOTH_OR_FEATURED)
    validate_catalog(catalog, SMOOTH_OR_FEATURED, check_files=False)


def test_missing_vote_column(tmp_path):
    catalog = make_catalog(tmp_path).drop(columns="smooth-or-featured_featured")
    with pytest.raises(CatalogError, match="smooth-or-featured_featured.*missing"):
        validate_catalog(catalog, SMOOTH_OR_FEATURED)


@pytest.mark.parametrize(
    "value, problem",
    [(np.nan, "empty or not a number"), (2.5, "not a whole number"), (-1, "is negative")],
)
def test_bad_vote_counts_name_column_and_ids(tmp_path, value, problem):
    catalog = make_catalog(tmp_path)
    catalog["smooth-or-featured_smooth"] = catalog["smooth-or-featured_smooth"].astype(float)
    catalog.loc[[4, 7], "smooth-or-featured_smooth"] = value
    with pytest.raises(CatalogError) as error:
        validate_catalog(catalog, SMOOTH_OR_FEATURED)
    message = str(error.value)
    assert "'smooth-or-featured_smooth'" in message
    assert problem in message
    assert "g4, g7 (2 in all)" in message


def test_many_offending_ids_are_summarised(tmp_path):
    catalog = make_catalog(tmp_path, n=30)
    catalog["smooth-or-featured_smooth"] = -1
    with pytest.raises(CatalogError, match=r"g0, g1, g2, g3, g4, \.\.\. \(30 in all\)"):
        validate_catalog(catalog, SMOOTH_OR_FEATURED)


def test_load_catalog_resolves_relative_paths_and_reads_schema(tmp_path):
    catalog = make_catalog(tmp_path)
    catalog["file_loc"] = [f"images/g{i}.png" for i in range(len(catalog))]
    write_catalog(catalog, tmp_path / "master.parquet", SMOOTH_OR_FEATURED)
    assert schema_spec_of(tmp_path / "master.parquet") == "smooth-or-featured"
    loaded, schema = load_catalog(tmp_path / "master.parquet")
    assert schema == SMOOTH_OR_FEATURED
    assert Path(loaded.loc[0, "file_loc"]).is_absolute()
    catalog.to_csv(tmp_path / "master.csv", index=False)
    with pytest.raises(CatalogError, match="records no schema"):
        load_catalog(tmp_path / "master.csv")
    with pytest.raises(CatalogError, match="does not exist"):
        read_table(tmp_path / "nothing.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CatalogError, match=r"x.json: expected a CSV or Parquet table .* got a '.json' file"):
        read_table(tmp_path / "x.json")


def junk(folder: Path, name: str) -> Path:
    """A file of random bytes, as a mis-named or corrupted download would be."""
    path = folder / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize(
    "name, found",
    [
        ("junk.csv", r"not UTF-8 text \(byte 0x[0-9a-f]{2}: "),
        ("junk.csv.gz", "not complete gzip"),
        ("junk.parquet", r"not readable Parquet \(.*magic bytes"),
        ("empty.parquet", "not readable Parquet"),
        ("empty.csv", "an empty file"),
        ("junk.xlsx", r"named .csv \(.csv.gz, .txt\) or .parquet; got a '.xlsx' file"),
        ("junk", "got a name without a suffix"),
    ],
)
def test_read_table_says_what_it_expected_and_found(tmp_path, name, found):
    path = junk(tmp_path, name) if name.startswith("junk") else tmp_path / name
    path.touch()
    with pytest.raises(CatalogError) as error:
        read_table(path)
    message = str(error.value)
    assert message.startswith(f"catalog {path}: expected a CSV or Parquet table with id_str, file_loc and vote columns")
    assert re.search(found, message), message
    with pytest.raises(CatalogError, match="got a folder"):
        read_table(tmp_path)


def test_a_repeated_column_is_refused_as_ambiguous(tmp_path):
    catalog = make_catalog(tmp_path, n=4)
    repeated = pd.concat([catalog, catalog[["smooth-or-featured_smooth"]] + 1], axis=1)
    repeated.to_csv(tmp_path / "master.csv", index=False)
    assert "smooth-or-featured_smooth.1" in pd.read_csv(tmp_path / "master.csv").columns  # pandas' silent rename
    message = r"columns smooth-or-featured_smooth \(1 in all\) appear more than once.*ambiguous.*delete or rename"
    with pytest.raises(CatalogError, match=message):
        read_table(tmp_path / "master.csv")
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path / "master.csv", SMOOTH_OR_FEATURED)
    columns = [pa.array(repeated.iloc[:, i]) for i in range(repeated.shape[1])]
    pq.write_table(pa.Table.from_arrays(columns, names=list(repeated.columns)), tmp_path / "master.parquet")
    with pytest.raises(CatalogError, match=message):
        read_table(tmp_path / "master.parquet")


def test_define_experiment_splits_at_retirement(tmp_path):
    catalog = make_catalog(tmp_path, n=40)
    experiment = define_experiment(catalog, SMOOTH_OR_FEATURED, retirement=8, seed=1)
    totals = lambda df: df[SMOOTH_OR_FEATURED.answer_columns].sum(axis=1)  # noqa: E731
    assert (totals(experiment.labelled) >= 8).all()
    assert (totals(experiment.unlabelled) < 8).all()
    assert len(experiment.labelled) + len(experiment.unlabelled) == 40
    again = define_experiment(catalog, SMOOTH_OR_FEATURED, retirement=8, seed=1)
    assert list(again.labelled["id_str"]) == list(experiment.labelled["id_str"])
    other = define_experiment(catalog, SMOOTH_OR_FEATURED, retirement=8, seed=2)
    assert list(other.labelled["id_str"]) != list(experiment.labelled["id_str"])


def test_simulation_hides_votes_in_the_oracle(tmp_path):
    catalog = make_catalog(tmp_path, n=40)
    experiment = define_experiment(catalog, SMOOTH_OR_FEATURED, retirement=1, simulation_size=10)
    columns = SMOOTH_OR_FEATURED.answer_columns
    assert len(experiment.oracle) == 10
    assert (experiment.simulation_unlabelled[columns] == 0).all().all()
    assert set(experiment.oracle["id_str"]) == set(experiment.simulation_unlabelled["id_str"])
    assert not set(experiment.oracle["id_str"]) & set(experiment.simulation_labelled["id_str"])
    original = catalog.set_index("id_str").loc[experiment.oracle["id_str"], columns]
    np.testing.assert_array_equal(original.to_numpy(), experiment.oracle[columns].to_numpy())
    with pytest.raises(CatalogError, match="simulation-size must be between"):
        define_experiment(catalog, SMOOTH_OR_FEATURED, simulation_size=len(experiment.labelled))


def test_save_experiment_refuses_existing_dir_and_leaves_no_temp(tmp_path):
    catalog = make_catalog(tmp_path, n=10)
    experiment = define_experiment(catalog, SMOOTH_OR_FEATURED, simulation_size=3)
    out = save_experiment(experiment, SMOOTH_OR_FEATURED, tmp_path / "exp", {"seed": 42})
    assert (out / "simulation_context" / "oracle.parquet").exists()
    assert schema_spec_of(out / "labelled_catalog.parquet") == "smooth-or-featured"
    with pytest.raises(FileExistsError):
        save_experiment(experiment, SMOOTH_OR_FEATURED, tmp_path / "exp", {})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.tmp")]


def test_define_experiment_cli(tmp_path):
    catalog = make_catalog(tmp_path, n=30)
    catalog.to_csv(tmp_path / "master.csv", index=False)
    result = runner.invoke(
        app,
        [
            "define-experiment", str(tmp_path / "master.csv"),
            "--question", "smooth-or-featured", "--out", str(tmp_path / "exp"),
            "--retirement", "5", "--simulation-size", "5",
        ],
    )
    assert result.exit_code == 0, result.output
    labelled = pd.read_parquet(tmp_path / "exp" / "simulation_context" / "labelled_catalog.parquet")
    assert len(labelled) > 0


def test_define_experiment_cli_reports_bad_catalog(tmp_path):
    catalog = make_catalog(tmp_path, n=10)
    catalog.loc[0, "smooth-or-featured_smooth"] = -3
    catalog.to_csv(tmp_path / "master.csv", index=False)
    result = runner.invoke(
        app,
        [
            "define-experiment", str(tmp_path / "master.csv"),
            "--schema", "smooth-or-featured", "--out", str(tmp_path / "exp"),
        ],
    )
    assert result.exit_code == 1
    assert "is negative for ids g0" in result.output
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("name", ["junk.csv", "junk.parquet", "repeated.csv"])
def test_define_experiment_cli_refuses_unreadable_catalogs_without_writing(tmp_path, name):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if name == "repeated.csv":
        catalog = make_catalog(inputs, n=4)
        pd.concat([catalog, catalog[["smooth-or-featured_smooth"]]], axis=1).to_csv(inputs / name, index=False)
    else:
        junk(inputs, name)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(
        app,
        ["define-experiment", str(inputs / name),
         "--schema", "smooth-or-featured", "--out", str(tmp_path / "exp")],
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    expected = "appear more than once" if name == "repeated.csv" else "expected a CSV or Parquet table"
    assert f"error: catalog {inputs / name}: " in result.output and expected in result.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a temporary folder


def test_cli_needs_schema_for_an_ambiguous_question(tmp_path):
    make_catalog(tmp_path).to_csv(tmp_path / "master.csv", index=False)
    result = runner.invoke(
        app,
        ["define-experiment", str(tmp_path / "master.csv"),
         "--question", "bar_strength", "--out", str(tmp_path / "exp")],
    )
    assert result.exit_code == 1
    assert "needs --schema" in result.output


def test_decals_tree_catalog_validates(tmp_path):
    catalog = make_catalog(tmp_path, n=5)[["id_str", "file_loc"]]
    for column in DECALS_DR5.answer_columns:
        catalog[column] = 1
    assert len(validate_catalog(catalog, DECALS_DR5)) == 5


def test_votes_only_catalog_needs_no_images_flag(tmp_path):
    catalog = make_catalog(tmp_path, n=10)
    catalog["file_loc"] = None
    write_catalog(catalog, tmp_path / "votes.parquet", SMOOTH_OR_FEATURED)
    with pytest.raises(CatalogError, match="has no images.*--no-images"):
        load_catalog(tmp_path / "votes.parquet")
    loaded, _ = load_catalog(tmp_path / "votes.parquet", check_files=False)
    assert loaded["file_loc"].isna().all()
    args = ["define-experiment", str(tmp_path / "votes.parquet"),
            "--out", str(tmp_path / "exp")]
    assert runner.invoke(app, args).exit_code == 1
    result = runner.invoke(app, args + ["--no-images"])
    assert result.exit_code == 0, result.output
