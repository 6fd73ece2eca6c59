import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoobot.catalog import load_catalog, read_table, schema_spec_of, validate_catalog
from zoobot.cli import app
from zoobot.schema import BAR, DECALS_DR5, GZ2, SMOOTH_OR_FEATURED, Question, Schema
from zoobot.synthetic import (
    Morphology,
    galaxy_streams,
    make_synthetic_catalog,
    render,
    sample_morphology,
    simulate_votes,
    summarize,
    tile_images,
)

runner = CliRunner()
N_GALAXIES = 400


@pytest.fixture(scope="module")
def population() -> tuple[pd.DataFrame, pd.DataFrame]:
    """True morphology and DECaLS votes of N_GALAXIES galaxies (no images)."""
    truths, votes = [], []
    for index in range(N_GALAXIES):
        morph_rng, _, vote_rng = galaxy_streams(7, index)
        morph = sample_morphology(morph_rng)
        truths.append(morph.to_dict())
        votes.append(simulate_votes(morph, DECALS_DR5, vote_rng))
    return pd.DataFrame(truths), pd.DataFrame(votes)[DECALS_DR5.answer_columns]


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("synthetic")
    calls = []
    catalog = make_synthetic_catalog(
        24, out_dir, size=32, channels=3, seed=3, progress=lambda done, total: calls.append((done, total))
    )
    return out_dir, catalog, calls


def morphology(**changes) -> Morphology:
    """The first featured disk of seed 0, with some parameters changed."""
    index = 0
    while True:
        morph = sample_morphology(galaxy_streams(0, index)[0])
        if morph.kind == "featured" and morph.merger == "none":
            return replace(morph, **changes)
        index += 1


def fractions(votes: pd.DataFrame, schema: Schema = DECALS_DR5) -> pd.DataFrame:
    return pd.DataFrame(schema.vote_fractions(votes[schema.answer_columns].to_numpy()), columns=schema.answer_columns)


# ------------------------------------------------------------------------------ images


@pytest.mark.parametrize("size, channels", [(32, 3), (48, 1)])
def test_render_shape_dtype_and_a_bright_centre(size, channels):
    morph = morphology(surface_brightness=10.0, disk_amplitude=10.0)
    image = render(morph, size, channels, np.random.default_rng(0))
    assert image.shape == (channels, size, size)
    assert image.dtype == np.uint8
    centre = image[:, size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2].mean()
    corner = image[:, :4, :4].mean()
    assert centre > corner + 60


def test_render_colour_bulge_is_redder_than_arms():
    morph = morphology(surface_brightness=15.0, disk_amplitude=15.0, n_arms=2, arm_amplitude=0.8,
                       pitch_angle=20.0, inclination=10.0, bulge_to_total=0.4)
    image = render(morph, 64, 3, np.random.default_rng(0)).astype(float)
    red_minus_blue = image[0] - image[2]
    centre = red_minus_blue[30:34, 30:34].mean()
    ring = red_minus_blue[(image.sum(axis=0) > 150) & (np.hypot(*np.mgrid[-32:32, -32:32]) > 8)].mean()
    assert centre > ring


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="expected 1 .* or 3"):
        render(morphology(), 32, 2)
    with pytest.raises(ValueError, match="at least 16"):
        render(morphology(), 8, 3)


def test_render_is_deterministic_given_the_rng():
    morph = morphology()
    first = render(morph, 32, 3, np.random.default_rng(5))
    assert np.array_equal(first, render(morph, 32, 3, np.random.default_rng(5)))
    assert not np.array_equal(first, render(morph, 32, 3, np.random.default_rng(6)))


def test_a_fixed_seed_still_gives_the_same_first_galaxy():
    """Checksums of galaxy 0 of seed 0, recorded from the code before synthetic.py was split."""
    morph_rng, image_rng, vote_rng = galaxy_streams(0, 0)
    morph = sample_morphology(morph_rng)
    image = render(morph, 64, 3, image_rng)
    votes = simulate_votes(morph, DECALS_DR5, vote_rng)
    assert morph.kind == "featured"
    assert hashlib.sha256(image.tobytes()).hexdigest() == (
        "02d6d816e6df0e3a634a93d77f078ad5971516124c9fe422d9431528936149e7"
    )
    assert hashlib.sha256(repr(list(votes.values())).encode()).hexdigest() == (
        "453f050324c5e8aaf43f2493ceeb9197deb7a3e638b6453040c408dcaaece2e1"
    )


def test_tile_images_lays_out_a_grid():
    images = [np.full((3, 32, 32), i, dtype=np.uint8) for i in range(10)]
    grid = tile_images(images, n_columns=4, gap=2)
    assert grid.shape == (3 * 34 - 2, 4 * 34 - 2, 3)
    assert grid[34, 34 * 1, 0] == 5  # row 1, column 1 holds image 5


# ------------------------------------------------------------------------------ morphology


def test_sampling_is_deterministic_and_covers_every_kind(population):
    truth, _ = population
    again = sample_morphology(galaxy_streams(7, 11)[0]).to_dict()
    assert again == truth.iloc[11].to_dict()
    kinds = truth["kind"].value_counts(normalize=True)
    assert 0.3 < kinds["smooth"] < 0.55 and 0.4 < kinds["featured"] < 0.7
    assert 0.003 < kinds["artifact"] < 0.08
    featured = truth[truth["kind"] == "featured"]
    assert set(featured["bar"]) == {"strong", "weak", "none"}
    assert featured["n_arms"].max() >= 5 and (featured["n_arms"] == 0).any()
    assert set(featured["winding"]) >= {"tight", "medium", "loose"}
    assert (truth["merger"] == "merger").any()
    assert (truth.loc[truth["kind"] == "smooth", "disk_amplitude"] == 0).all()


# ------------------------------------------------------------------------------ votes


@pytest.mark.parametrize("schema", [DECALS_DR5, GZ2, SMOOTH_OR_FEATURED, BAR], ids=lambda s: s.name)
def test_votes_are_consistent_down_the_tree(schema):
    for index in range(150):
        morph_rng, _, vote_rng = galaxy_streams(1, index)
        votes = simulate_votes(sample_morphology(morph_rng), schema, vote_rng)
        assert list(votes) == schema.answer_columns
        assert all(isinstance(k, int) and k >= 0 for k in votes.values())
        for question in schema.questions:
            total = sum(votes[col] for col in question.columns())
            if question.asked_after:
                assert total == sum(votes[col] for col in question.asked_after), (index, question.name)


def test_about_forty_volunteers_per_galaxy(population):
    _, votes = population
    volunteers = votes[DECALS_DR5.questions[0].columns()].sum(axis=1)
    assert 38.0 < volunteers.mean() < 42.0
    assert volunteers.std() > 3.0  # the number varies from galaxy to galaxy
    assert (volunteers >= 1).all()
    more = simulate_votes(morphology(), DECALS_DR5, np.random.default_rng(0), n_volunteers=200)
    assert sum(more[col] for col in DECALS_DR5.questions[0].columns()) > 150


def test_votes_respond_to_morphology(population):
    truth, votes = population
    share = fractions(votes)
    featured = share["smooth-or-featured_featured-or-disk"]
    assert featured[truth["kind"] == "featured"].mean() > featured[truth["kind"] == "smooth"].mean() + 0.3
    artifact = share["smooth-or-featured_artifact"]
    assert artifact[truth["kind"] == "artifact"].mean() > 0.4 > artifact[truth["kind"] != "artifact"].mean()

    face_on_disks = (truth["kind"] == "featured") & (truth["inclination"] < 60)
    bar_seen = (share["bar_strong"] + share["bar_weak"])[face_on_disks & (votes["bar_no"] + votes["bar_weak"] > 0)]
    barred = truth.loc[bar_seen.index, "bar"] != "none"
    assert bar_seen[barred].mean() > bar_seen[~barred].mean() + 0.3

    edge_on = share["disk-edge-on_yes"][truth["kind"] == "featured"]
    assert edge_on[truth["inclination"] > 82].mean() > 0.7 > 0.2 > edge_on[truth["inclination"] < 60].mean()


def test_faint_features_are_missed_more_often():
    bright, faint = morphology(disk_amplitude=25.0, surface_brightness=25.0), morphology(
        disk_amplitude=1.0, surface_brightness=1.0
    )
    rng = np.random.default_rng(0)
    featured = {
        name: np.mean([simulate_votes(m, DECALS_DR5, rng)["smooth-or-featured_featured-or-disk"] for _ in range(30)])
        for name, m in (("bright", bright), ("faint", faint))
    }
    assert featured["bright"] > featured["faint"] + 5


def test_votes_are_deterministic_given_the_rng():
    morph = morphology()
    first = simulate_votes(morph, DECALS_DR5, np.random.default_rng(9))
    assert first == simulate_votes(morph, DECALS_DR5, np.random.default_rng(9))


def test_unknown_question_is_named():
    schema = Schema("odd", (Question("colour", ("red", "blue")),))
    with pytest.raises(ValueError, match="no volunteer model for question 'colour'"):
        simulate_votes(morphology(), schema, np.random.default_rng(0))


# ------------------------------------------------------------------------------ catalogs


def test_catalog_passes_validation_and_reads_back(catalog_dir):
    out_dir, catalog, calls = catalog_dir
    assert calls[-1] == (24, 24) and len(calls) == 24
    validate_catalog(catalog, DECALS_DR5)
    on_disk = read_table(out_dir / "master_catalog.parquet")
    assert not on_disk["file_loc"].str.startswith("/").any()  # relative: the folder can move
    assert schema_spec_of(out_dir / "master_catalog.parquet") == "decals-dr5"
    loaded, schema = load_catalog(out_dir / "master_catalog.parquet")
    assert schema is DECALS_DR5 and list(loaded["id_str"]) == list(catalog["id_str"])
    assert {"true_kind", "true_bar", "true_n_arms", "true_inclination"} <= set(loaded.columns)
    image = np.asarray(Image.open(loaded["file_loc"].iloc[0]))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert not list(out_dir.glob("**/.*tmp*"))  # nothing half-written left behind


def test_catalog_galaxies_do_not_depend_on_the_catalog_size(catalog_dir, tmp_path):
    _, catalog, _ = catalog_dir
    smaller = make_synthetic_catalog(5, tmp_path, size=32, seed=3)
    columns = ["id_str", *DECALS_DR5.answer_columns, "true_kind", "true_inclination"]
    pd.testing.assert_frame_equal(smaller[columns], catalog[columns].head(5))
    first = np.asarray(Image.open(smaller["file_loc"].iloc[0]))
    assert np.array_equal(first, np.asarray(Image.open(catalog["file_loc"].iloc[0])))


def test_catalog_refuses_to_overwrite(catalog_dir):
    out_dir, _, _ = catalog_dir
    with pytest.raises(FileExistsError, match="already exists"):
        make_synthetic_catalog(2, out_dir, size=32)


def test_define_experiment_runs_on_the_synthetic_catalog(catalog_dir, tmp_path):
    out_dir, _, _ = catalog_dir
    save_dir = tmp_path / "experiment"
    result = runner.invoke(
        app,
        ["define-experiment", str(out_dir / "master_catalog.parquet"),
         "--out", str(save_dir), "--retirement", "1", "--simulation-size", "10"],
    )
    assert result.exit_code == 0, result.output
    labelled = pd.read_parquet(save_dir / "labelled_catalog.parquet")
    oracle = pd.read_parquet(save_dir / "simulation_context" / "oracle.parquet")
    assert len(labelled) == 24 and len(oracle) == 10


def test_synthesize_command(tmp_path):
    out_dir = tmp_path / "out"
    preview = tmp_path / "grid.png"
    args = ["synthesize", "--out", str(out_dir), "--n-galaxies", "6", "--size", "32",
            "--channels", "1", "--seed", "2", "--preview", str(preview)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    catalog, _ = load_catalog(out_dir / "master_catalog.parquet")
    assert len(catalog) == 6
    assert np.asarray(Image.open(catalog["file_loc"].iloc[0])).shape == (32, 32)
    assert Image.open(preview).size == (6 * 34 - 2, 32)
    summary = summarize(catalog)
    assert summary["fraction_smooth"] + summary["fraction_featured"] + summary["fraction_artifact"] == pytest.approx(1)

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = runner.invoke(app, ["synthesize", "--out", str(tmp_path / "x"), "--channels", "2"])
    assert bad.exit_code == 1 and "expected 1 or 3" in bad.output
