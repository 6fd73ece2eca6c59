"""`zoobot report --out R.html`: one self-contained page and its numbers, on hand-written iterations."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from zoobot.catalog import define_experiment, save_experiment
from zoobot.cli import app
from zoobot.loop.experiment import create_experiment, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec
from zoobot.loop.layout import COMPARISON_FILE, TEST_PREDICTIONS, iteration_dir
from zoobot.reports import learning_curve
from zoobot.savings import DEFINITION, paired_savings
from zoobot.schema import get_schema
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.uncertainty import LEVELS, coverage

runner = CliRunner()
SCHEMA = get_schema("decals-dr5:smooth-or-featured")
N_TRAIN, N_VAL, N_TEST, N_POOL, PER_ITERATION, ITERATIONS = 10, 5, 12, 40, 5, 3
SEEDS = (42, 43, 44)
IDENTITY = {"schema": SCHEMA.name, "test_ids_sha256": "t", "start_labelled_ids_sha256": "s", "oracle": {"kind": "simulated"}}
COLUMN = "true_surface_brightness"
SECTIONS = ("curves", "savings", "acquired", "distributions", "coverage")


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """(catalog_dir, shard_dir) of a 67-galaxy simulation at 32 px."""
    root = tmp_path_factory.mktemp("simulation")
    catalog = make_synthetic_catalog(N_TRAIN + N_VAL + N_TEST + N_POOL, root / "synthetic", size=32, channels=3, seed=1)
    experiment = define_experiment(catalog, SCHEMA, retirement=1, seed=0, simulation_size=N_POOL)
    save_experiment(experiment, SCHEMA, root / "catalogs", {})
    write_shards(experiment.simulation_labelled, experiment.simulation_unlabelled, root / "shards", SCHEMA,
                 val_size=N_VAL, test_size=N_TEST, size=32, channels=3)
    return root / "catalogs", root / "shards"


def write_run(folder: Path, simulation, acquisition: str, seed: int, losses, with_records: bool = True) -> Path:
    """An experiment with complete iterations written by hand, as the loop leaves them: metrics,
    acquired.csv (scores and predicted fractions) and the last iteration's test predictions."""
    catalog_dir, shard_dir = simulation
    create_experiment(folder, plan_experiment(catalog_dir, shard_dir, acquisition=AcquisitionSpec(function=acquisition),
                                              subjects_per_iteration=PER_ITERATION, seed=seed))
    rng = np.random.default_rng(seed + (0 if acquisition == "bald" else 100))
    pool = ShardReader(shard_dir).ids("pool")
    order = rng.permutation(len(pool))
    for n, loss in enumerate(losses, start=1):
        done = iteration_dir(folder, n)
        done.mkdir(parents=True)
        metrics = {"iteration": n, "n_labelled": N_TRAIN + PER_ITERATION * (n - 1), "votes_used": 40 * n + seed,
                   "test_loss": loss, "test_mae": loss / 10, "identity": IDENTITY}
        (done / "metrics.json").write_text(json.dumps(metrics))
        acquired = pd.DataFrame({"id_str": pool[order[PER_ITERATION * (n - 1): PER_ITERATION * n]]})
        if with_records:
            acquired["score"] = rng.random(PER_ITERATION)
            fractions = SCHEMA.expected_fractions(rng.gamma(2, 1, size=(PER_ITERATION, SCHEMA.n_outputs)))  # (galaxy, answer)
            for k, answer in enumerate(SCHEMA.answer_columns):
                acquired[f"{answer}_fraction"] = fractions[:, k]
        acquired.to_csv(done / "acquired.csv", index=False)
        if with_records and n == len(losses):
            np.save(done / TEST_PREDICTIONS, rng.gamma(20, 0.5, size=(N_TEST, 4, SCHEMA.n_outputs)))  # (galaxy, sample, alpha)
        (done / "final_state.json").write_text("{}")
    return folder


def losses_of(acquisition: str, seed: int) -> list[float]:
    noise = np.random.default_rng(seed).normal(0, 0.01, ITERATIONS)
    speed = 1.5 if acquisition == "bald" else 1.0
    return [float(1.0 / (1 + speed * n) + e) for n, e in zip(range(ITERATIONS), noise)]


@pytest.fixture(scope="module")
def comparison(simulation, tmp_path_factory):
    """A `zoobot compare` folder: bald and random, three paired seeds, three iterations each."""
    root = tmp_path_factory.mktemp("comparison")
    runs = []
    for seed in SEEDS:
        for acquisition in ("bald", "random"):
            name = f"{acquisition}_seed{seed}"
            write_run(root / name, simulation, acquisition, seed, losses_of(acquisition, seed))
            runs.append({"acquisition": acquisition, "seed": seed, "folder": name})
    (root / COMPARISON_FILE).write_text(json.dumps({"runs": runs, "total_iterations": ITERATIONS}))
    return root


@pytest.fixture(scope="module")
def page(comparison, tmp_path_factory):
    """(result, html text, json numbers) of `zoobot report COMPARISON --out R.html --column ...`."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    result = runner.invoke(app, ["report", str(comparison), "--out", str(out), "--column", COLUMN])
    assert result.exit_code == 0, result.output
    return result, out.read_text(), json.loads(out.with_suffix(".json").read_text())


def test_the_page_is_self_contained_and_has_every_section(page):
    result, text, _ = page
    assert "report saved to" in result.output
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in text and f'href="#{anchor}"' in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"|src=\'data:image/png;base64,([^\']+)\'', text)
    thumbnails = 2 * ITERATIONS * PER_ITERATION  # the first seed of each acquisition, every acquired galaxy
    figures = 5  # curves, savings, fraction and column histograms, coverage
    assert len(images) == thumbnails + figures
    for groups in images:
        assert base64.b64decode("".join(groups)).startswith(b"\x89PNG")
    assert DEFINITION in text.replace("&#x27;", "'") and "min to max over seeds" in text


def test_the_json_numbers_are_what_report_and_savings_compute(page, comparison, simulation):
    result, _, numbers = page
    for run in numbers["runs"]:
        expected = learning_curve(Path(run["folder"]))
        assert pd.DataFrame(run["curve"])[expected.columns].equals(expected), run["name"]
    assert [(r["acquisition"], r["seed"]) for r in numbers["runs"]] == [(a, s) for a in ("bald", "random") for s in SEEDS]
    pairs = [(learning_curve(comparison / f"bald_seed{s}"), learning_curve(comparison / f"random_seed{s}")) for s in SEEDS]
    (savings,) = numbers["savings"]
    assert (savings["active"], savings["baseline"], savings["seeds"]) == ("bald", "random", list(SEEDS))
    for axis in ("n_labelled", "votes_used"):
        expected = paired_savings(pairs, metric="test_loss", axis=axis)
        got = savings["axes"][axis]
        assert got["estimate"] == expected.estimate and got["verdict"] == expected.verdict
        assert tuple(got["interval"]) == expected.interval and got["loss_gap"] == expected.loss_gap
        assert got["pair_savings"] == [p.saving for p in expected.pairs]
        assert expected.verdict in result.output.replace("\n", " ")  # what report_runs printed
    reader = ShardReader(simulation[1])
    for entry in numbers["coverage"]:
        folder = comparison / f"{entry['acquisition']}_seed{entry['seed']}"
        predictions = np.load(iteration_dir(folder, ITERATIONS) / TEST_PREDICTIONS)
        expected = coverage(predictions, reader.votes(reader.split_positions("test")), SCHEMA, levels=LEVELS)
        assert entry["all"] == expected["all"] and entry["iteration"] == ITERATIONS
    assert len(numbers["coverage"]) == 2 * len(SEEDS)
    first_bald = numbers["acquired"][0]
    assert first_bald["run"] == "bald (bald_seed42)"
    acquired = pd.read_csv(iteration_dir(comparison / "bald_seed42", 2) / "acquired.csv")
    shown = first_bald["iterations"][1]["shown"]
    assert [g["id_str"] for g in shown] == acquired.sort_values("score", ascending=False)["id_str"].tolist()
    assert shown[0]["score"] == acquired["score"].max()


def test_the_histograms_count_every_acquired_galaxy(page, simulation):
    _, _, numbers = page
    distributions = numbers["acquired_distributions"]
    for acquisition in ("bald", "random"):
        for entry in distributions["fraction"]["counts"][acquisition]:
            assert sum(entry["counts"]) == entry["n"] == PER_ITERATION * len(SEEDS)
        for entry in distributions["column"]["counts"][acquisition]:
            assert sum(entry["counts"]) + entry["n_missing"] == PER_ITERATION * len(SEEDS)
    pool = pd.read_parquet(simulation[0] / "simulation_context" / "unlabelled_catalog.parquet")
    assert sum(distributions["column"]["pool_counts"]) == pool[COLUMN].notna().sum() == N_POOL


def test_a_missing_column_is_refused_with_the_available_ones(comparison, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("the previous report")
    result = runner.invoke(app, ["report", str(comparison), "--out", str(out), "--column", "g_mag"])
    assert result.exit_code == 1
    assert "error: --column 'g_mag' is not in the pool catalog" in result.output and f"'{COLUMN}'" in result.output
    assert out.read_text() == "the previous report" and not out.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left
    png = runner.invoke(app, ["report", str(comparison), "--out", str(tmp_path / "curves.png"), "--column", COLUMN])
    assert png.exit_code == 1 and "expected --out R.html" in png.output


def test_png_out_still_writes_only_the_learning_curves(comparison, tmp_path):
    result = runner.invoke(app, ["report", str(comparison), "--out", str(tmp_path / "curves.png")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_runs_made_before_iterations_kept_records_are_reported_without_them(simulation, tmp_path):
    """Folders given one by one; the baseline lacks scores, fractions and test predictions."""
    active = write_run(tmp_path / "active", simulation, "bald", 42, losses_of("bald", 42))
    baseline = write_run(tmp_path / "baseline", simulation, "random", 42, losses_of("random", 42), with_records=False)
    out = tmp_path / "out" / "r.html"
    result = runner.invoke(app, ["report", str(active), "--baseline", str(baseline), "--out", str(out)])
    assert result.exit_code == 0, result.output
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert [r["acquisition"] for r in numbers["runs"]] == ["active", "baseline"]
    assert [c["run"] for c in numbers["coverage"]] == ["active"]
    assert any("baseline: its last iteration kept no test_predictions.npy" in note for note in numbers["notes"])
    assert numbers["savings"][0]["axes"]["n_labelled"]["interval_note"] == "one seed: no interval"
    text = out.read_text()
    assert "scores and fractions<br>not recorded" in text and "column" not in numbers["acquired_distributions"]


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, text, _ = page
    (tmp_path / "r.html").write_text(text)
    shot = tmp_path / "r.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,3000", (tmp_path / "r.html").as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1400)
    assert (pixels < 128).mean() > 0.01  # text and figures were drawn, not a blank page
