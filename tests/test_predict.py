"""MC prediction: head-only sampling, streaming, TTA, bf16, the Parquet writer, metrics, `zoobot predict`."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from scipy import special, stats
from typer.testing import CliRunner

import zoobot.prediction_writer as prediction_writer
from zoobot.catalog import define_experiment, write_catalog
from zoobot.cli import app
from zoobot.images import iter_catalog_batches
from zoobot.metrics import evaluate_predictions
from zoobot.models import create_model
from zoobot.predict import evaluate_split, predict_batches, samples_per_view
from zoobot.prediction_writer import predict_to_parquet, prediction_columns, read_predictions, write_predictions
from zoobot.schema import DECALS_DR5, GZ2, SMOOTH_OR_FEATURED, Question, Schema
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training import train_model
from zoobot.training_settings import TrainSettings
from zoobot.transforms import dihedral_view
from zoobot.uncertainty import credible_interval, predictive_intervals, question_votes

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic catalogs and shards: 20 train, 8 eval, 14 pool galaxies at 32 px."""
    folder = tmp_path_factory.mktemp("predict")
    catalog = make_synthetic_catalog(42, folder / "synthetic", size=SIZE, seed=7)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    labelled, pool = experiment.labelled.iloc[:28], experiment.labelled.iloc[28:]
    write_shards(labelled, pool, folder / "shards", DECALS_DR5, val_size=8, size=SIZE)
    return {"folder": folder, "shards": folder / "shards", "pool_catalog": pool}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("zoobot-2019", DECALS_DR5, channels=3, dropout_rate=0.3, image_size=SIZE)


def collect(batches):
    ids, predictions = zip(*batches)
    return np.concatenate(ids), np.concatenate(predictions)


# ---------------------------------------------------------------- predict_batches

def test_streams_every_pool_galaxy_with_distinct_dropout_samples(data, model):
    reader = ShardReader(data["shards"])
    model.train()
    seen_modes = []
    batches = []
    for ids, predictions in predict_batches(model, reader, split="pool", n_samples=6, batch_size=4):
        seen_modes.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(), model.training))
        batches.append((ids, predictions))
    ids, predictions = collect(batches)
    assert list(ids) == list(reader.ids("pool")) and [len(b[0]) for b in batches] == [4, 4, 4, 2]
    assert predictions.shape == (14, 6, DECALS_DR5.n_answers) and predictions.dtype == np.float32
    assert np.isfinite(predictions).all() and (predictions >= 0.01).all()  # Dirichlet alpha in [0.01, 100]
    assert (predictions.std(axis=1) > 0).all()  # the head's dropout is on in eval mode
    assert set(seen_modes) == {(True, False, True)}  # the caller's modes are untouched between batches


def test_head_only_sampling_equals_the_models_own_forward(data, model):
    reader = ShardReader(data["shards"])
    images = torch.as_tensor(reader.images(reader.split_positions("val")))
    torch.manual_seed(1)
    _, predictions = collect(predict_batches(model, reader, split="val", n_samples=5, batch_size=8, channels_last=False))
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        expected = model(images, n_samples=5).numpy()
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)


def test_ids_come_back_in_the_order_asked(data, model):
    reader = ShardReader(data["shards"])
    wanted = [reader.ids("pool")[3], reader.ids("train")[0], reader.ids("pool")[0]]
    ids, predictions = collect(predict_batches(model, reader, ids=wanted, n_samples=2, batch_size=2))
    assert list(ids) == wanted and predictions.shape[:2] == (3, 2)
    with pytest.raises(ValueError, match="exactly one"):
        next(predict_batches(model, reader, ids=wanted, split="pool"))
    with pytest.raises(KeyError, match="nope"):
        next(predict_batches(model, reader, ids=["nope"]))
    with pytest.raises(ValueError, match="tta_views=4 needs"):
        next(predict_batches(model, reader, split="pool", n_samples=3, tta_views=4))


def test_streaming_reads_one_batch_at_a_time(data, model, monkeypatch):
    reader = ShardReader(data["shards"])
    calls = []
    original = reader.images
    monkeypatch.setattr(reader, "images", lambda positions, **options: calls.append(len(positions)) or original(positions, **options))
    stream = predict_batches(model, reader, split="pool", n_samples=2, batch_size=5)
    next(stream)
    assert calls == [5]  # not the whole pool


def test_tta_views_split_the_samples():
    assert samples_per_view(15, 4) == [4, 4, 4, 3] and samples_per_view(8, 8) == [1] * 8
    image = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    views = [dihedral_view(image, v) for v in range(8)]
    assert torch.equal(views[0], image) and torch.equal(views[1], torch.rot90(image, 1, (-2, -1)))
    assert torch.equal(views[4], image.flip(-1))
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # all eight symmetries differ


def test_tta_and_bf16_predictions(data, model):
    reader = ShardReader(data["shards"])
    _, tta = collect(predict_batches(model, reader, split="val", n_samples=7, tta_views=3))
    assert tta.shape == (8, 7, DECALS_DR5.n_answers) and np.isfinite(tta).all()
    torch.manual_seed(2)
    _, fp32 = collect(predict_batches(model, reader, split="val", n_samples=3))
    torch.manual_seed(2)
    _, bf16 = collect(predict_batches(model, reader, split="val", n_samples=3, precision="bf16"))
    assert bf16.dtype == np.float32
    fraction = lambda p: DECALS_DR5.expected_fractions(p)  # noqa: E731
    np.testing.assert_allclose(fraction(bf16), fraction(fp32), atol=0.05)


def test_greyscale_model_converts_rgb_shards(data):
    reader = ShardReader(data["shards"])
    grey = create_model("zoobot-2019", SMOOTH_OR_FEATURED, channels=1, image_size=SIZE)
    _, predictions = collect(predict_batches(grey, reader, split="val", n_samples=2))
    assert predictions.shape == (8, 2, 1) and ((predictions > 0) & (predictions < 1)).all()


def test_catalog_batches_decode_the_same_pixels_as_the_shards(data):
    reader = ShardReader(data["shards"])
    catalog = data["pool_catalog"]
    for workers in (0, 2):
        ids, images = collect(iter_catalog_batches(catalog, SIZE, 3, batch_size=4, num_workers=workers))
        assert list(ids) == list(catalog["id_str"]) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, reader.images(reader.positions(ids)))


# ---------------------------------------------------------------- Parquet output

def test_parquet_catalog_and_samples(data, model, tmp_path, monkeypatch):
    monkeypatch.setattr(prediction_writer, "ROWS_PER_GROUP", 5)  # several row groups
    reader = ShardReader(data["shards"])
    out = tmp_path / "pool.parquet"
    torch.manual_seed(3)
    summary = predict_to_parquet(model, reader, "pool", out, n_samples=6, save_samples=True, batch_size=4)
    torch.manual_seed(3)
    _, expected = collect(predict_batches(model, reader, split="pool", n_samples=6, batch_size=4))
    table = pd.read_parquet(out)
    assert list(table.columns) == ["id_str", *prediction_columns(DECALS_DR5)]
    assert list(table["id_str"]) == list(reader.ids("pool")) and summary.n_galaxies == 14
    assert pq.ParquetFile(out).num_row_groups >= 2
    assert pq.read_schema(out).metadata[b"zoobot.schema"] == b"decals-dr5"
    samples = np.load(summary.samples)
    assert summary.samples == tmp_path / "pool_samples.npy"
    np.testing.assert_allclose(samples, expected, rtol=1e-6)
    fractions = DECALS_DR5.expected_fractions(samples)  # (galaxy, sample, answer)
    ci_low, ci_high = credible_interval(samples, DECALS_DR5, 0.9)
    pi_low, pi_high = predictive_intervals(samples, DECALS_DR5, 40, (0.9,))  # the pool has no votes: N = 40
    for a, column in enumerate(DECALS_DR5.answer_columns):
        mean = table[f"{column}_fraction"].to_numpy()
        np.testing.assert_allclose(mean, fractions[:, :, a].mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(table[f"{column}_fraction_ci05"], np.percentile(fractions[:, :, a], 5, axis=1), rtol=1e-5)
        np.testing.assert_allclose(table[f"{column}_fraction_ci95"], ci_high[:, a], rtol=1e-5)
        assert (table[f"{column}_fraction_ci05"] <= mean + 1e-6).all() and (mean <= table[f"{column}_fraction_ci95"] + 1e-6).all()
        np.testing.assert_allclose(table[f"{column}_fraction_pi05"], pi_low[0, :, a] / 40, rtol=1e-6)
        np.testing.assert_allclose(table[f"{column}_fraction_pi95"], pi_high[0, :, a] / 40, rtol=1e-6)
        # the predictive interval of 40 volunteers' fraction is wider than the credible interval of its mean
        assert (table[f"{column}_fraction_pi05"] <= table[f"{column}_fraction_ci05"] + 1 / 40).all()
        assert (table[f"{column}_fraction_pi95"] >= table[f"{column}_fraction_ci95"] - 1 / 40).all()
    assert ((table[f"{column}_fraction_pi95"] - table[f"{column}_fraction_pi05"]).mean()
            > (table[f"{column}_fraction_ci95"] - table[f"{column}_fraction_ci05"]).mean())
    assert (table[[f"{q}_pi_votes" for q in DECALS_DR5.question_names]].to_numpy() == 40).all()
    metadata = pq.read_schema(out).metadata
    assert metadata[b"zoobot.default_votes"] == b"40" and metadata[b"zoobot.interval_level"] == b"0.9"
    assert b"40 for every question" in metadata[b"zoobot.pi_votes"]
    for start, stop in DECALS_DR5.answer_groups:
        columns = [f"{c}_fraction" for c in DECALS_DR5.answer_columns[start:stop]]
        np.testing.assert_allclose(table[columns].sum(axis=1), 1.0, rtol=1e-5)
    asked = table[[f"{q}_prob_asked" for q in DECALS_DR5.question_names]].to_numpy()
    assert (asked[:, 0] == 1).all() and ((asked >= 0) & (asked <= 1)).all() and (asked[:, 1:] < 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.parquet", "pool_samples.npy"]


def test_binomial_fractions_are_rho_and_one_minus_rho(data, tmp_path):
    reader = ShardReader(data["shards"])
    binomial = create_model("zoobot-2019", SMOOTH_OR_FEATURED, channels=3, image_size=SIZE)
    torch.manual_seed(4)
    predict_to_parquet(binomial, reader, "val", tmp_path / "b.parquet", n_samples=4, save_samples=True)
    table = pd.read_parquet(tmp_path / "b.parquet")
    rho = np.load(tmp_path / "b_samples.npy")[:, :, 0]  # (galaxy, sample)
    np.testing.assert_allclose(table["smooth-or-featured_smooth_fraction"], rho.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(table["smooth-or-featured_featured_fraction"], 1 - rho.mean(axis=1), rtol=1e-5)


def test_own_votes_set_the_predictive_intervals_of_labelled_galaxies(data, model, tmp_path):
    reader = ShardReader(data["shards"])
    out = tmp_path / "eval.parquet"
    predict_to_parquet(model, reader, "val", out, n_samples=5, save_samples=True, own_votes=True, default_votes=30)
    table = pd.read_parquet(out)
    votes = question_votes(reader.votes(reader.split_positions("val")), DECALS_DR5)  # (galaxy, question)
    assert (votes == 0).any() and (votes > 0).any()  # some questions were never asked
    used = np.where(votes >= 1, votes, 30)
    np.testing.assert_array_equal(table[[f"{q}_pi_votes" for q in DECALS_DR5.question_names]].to_numpy(), used)
    samples = np.load(tmp_path / "eval_samples.npy")
    low, high = predictive_intervals(samples, DECALS_DR5, used, (0.9,))
    n = used[:, DECALS_DR5.question_index_of_answer]  # (galaxy, answer)
    columns = DECALS_DR5.answer_columns
    np.testing.assert_allclose(table[[f"{c}_fraction_pi05" for c in columns]].to_numpy(), low[0] / n, rtol=1e-6)
    np.testing.assert_allclose(table[[f"{c}_fraction_pi95" for c in columns]].to_numpy(), high[0] / n, rtol=1e-6)
    assert b"own votes on the question, 30 where it has none" in pq.read_schema(out).metadata[b"zoobot.pi_votes"]
    with pytest.raises(ValueError, match="default_votes: expected a whole number of volunteers >= 1, got 0"):
        predict_to_parquet(model, reader, "val", tmp_path / "x.parquet", n_samples=2, default_votes=0)
    with pytest.raises(ValueError, match="own_votes needs the manifest's vote columns"):
        predict_to_parquet(model, reader, "val", tmp_path / "x.parquet", n_samples=2, own_votes=True, schema=GZ2)
    assert not (tmp_path / "x.parquet").exists()


def test_read_predictions_gives_back_the_samples_and_the_schema(data, tmp_path):
    custom = Schema("custom", (Question("shape", ("round", "disk")), Question("bar", ("yes", "no"), ("shape_disk",))))
    rng = np.random.default_rng(0)
    alpha = rng.uniform(1, 10, size=(7, 3, custom.n_answers)).astype(np.float32)
    ids = np.array([f"g{i}" for i in range(7)])
    out = tmp_path / "custom.parquet"
    summary = write_predictions(iter([(ids[:4], alpha[:4]), (ids[4:], alpha[4:])]), out, custom, n_galaxies=7,
                                save_samples=True, question_votes=np.array([[3, 0]] * 7))
    read = read_predictions(out)
    assert read.schema == custom and list(read.catalog["id_str"]) == list(ids)  # a custom schema round-trips
    np.testing.assert_array_equal(read.samples, alpha)
    assert (read.catalog["shape_pi_votes"] == 3).all() and (read.catalog["bar_pi_votes"] == 40).all()
    with pytest.raises(ValueError, match="more predictions than the 2 rows of question_votes"):
        write_predictions(iter([(ids, alpha)]), tmp_path / "y.parquet", custom, question_votes=np.ones((2, 2), int))
    with pytest.raises(ValueError, match="expected 9 galaxies \\(rows of question_votes\\), got predictions for 7"):
        write_predictions(iter([(ids, alpha)]), tmp_path / "y.parquet", custom, question_votes=np.ones((9, 2), int))
    empty = write_predictions(iter([]), tmp_path / "empty.parquet", custom)
    assert empty.n_galaxies == 0 and list(pd.read_parquet(tmp_path / "empty.parquet").columns) == ["id_str", *prediction_columns(custom)]

    other = write_predictions(iter([(ids, alpha[::-1].copy())]), tmp_path / "other.parquet", custom, n_galaxies=7, save_samples=True)
    with pytest.raises(ValueError, match="do not belong to"):
        read_predictions(out, samples_path=other.samples)
    summary.samples.unlink()
    with pytest.raises(ValueError, match="custom_samples.npy are missing; predict again with --save-samples"):
        read_predictions(out)
    with pytest.raises(ValueError, match="does not exist"):
        read_predictions(tmp_path / "none.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="expected an id_str column and the schema"):
        read_predictions(tmp_path / "plain.parquet")


def test_a_failure_midway_leaves_no_output(data, model, tmp_path):
    reader = ShardReader(data["shards"])
    out = tmp_path / "pool.parquet"

    def explode(ids, predictions):
        if explode.calls == 2:
            raise RuntimeError("killed")
        explode.calls += 1

    explode.calls = 0
    with pytest.raises(RuntimeError, match="killed"):
        predict_to_parquet(model, reader, "pool", out, n_samples=2, save_samples=True, batch_size=4, on_batch=explode)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- metrics

def test_metrics_of_perfect_and_known_predictions():
    schema = SMOOTH_OR_FEATURED
    counts = np.array([[9, 1], [2, 8], [3, 3], [0, 0], [1, 0]])
    rho = np.array([0.9, 0.2, 0.5, 0.5, 1 - 1e-6])  # the observed fractions
    predictions = np.repeat(rho[:, None, None], 3, axis=1)  # (galaxy, sample, 1), identical samples
    report = evaluate_predictions(predictions, counts, schema, confident_fraction=0.8, min_votes=5)
    question = report["questions"]["smooth-or-featured"]
    assert question["fraction_mae"] == pytest.approx(0, abs=1e-6) and report["mae"] == pytest.approx(0, abs=1e-6)
    assert question["n_galaxies_with_votes"] == 4 and question["n_confident"] == 2 and question["accuracy"] == 1.0
    log_choose = np.log(special.comb(counts.sum(1), counts[:, 0]))  # vote_nll leaves out this constant
    expected_nll = -(stats.binom.logpmf(counts[:, 0], counts.sum(1), rho) - log_choose)
    expected_nll[3] = 0  # no votes: no loss
    assert report["loss"] == pytest.approx(expected_nll.mean(), rel=1e-6)
    assert report["mixture_loss"] == pytest.approx(report["loss"], rel=1e-6)  # one distinct sample
    json.dumps(report, allow_nan=False)  # strict JSON


def test_mixture_loss_rewards_spread_and_accuracy_counts_mistakes():
    schema = SMOOTH_OR_FEATURED
    counts = np.array([[10, 0], [0, 10]])
    spread = np.array([[[0.05], [0.95]], [[0.05], [0.95]]])  # each galaxy: one right, one wrong sample
    report = evaluate_predictions(spread, counts, schema)
    assert report["mixture_loss"] < report["loss"]
    wrong = evaluate_predictions(np.array([[[0.1]], [[0.9]]]), counts, schema)
    assert wrong["questions"]["smooth-or-featured"]["accuracy"] == 0.0
    assert wrong["questions"]["smooth-or-featured"]["fraction_mae"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="NaN or infinite.*rows \\[1\\]"):
        evaluate_predictions(np.array([[[0.5]], [[np.nan]]]), counts, schema)
    with pytest.raises(ValueError, match="expects 1"):
        evaluate_predictions(np.ones((2, 1, 3)), counts, schema)


def test_dirichlet_metrics_use_the_per_question_fractions():
    schema = DECALS_DR5
    rng = np.random.default_rng(0)
    alpha = rng.uniform(1, 50, size=(6, 4, schema.n_answers))
    counts = rng.integers(1, 10, size=(6, schema.n_answers))
    report = evaluate_predictions(alpha, counts, schema, min_votes=1, confident_fraction=0.0)
    fractions = schema.expected_fractions(alpha).mean(axis=1)
    start, stop = schema.answer_groups[0]
    assert np.allclose(fractions[:, start:stop].sum(axis=1), 1)
    observed = counts[:, start:stop] / counts[:, start:stop].sum(axis=1, keepdims=True)
    q0 = report["questions"][schema.question_names[0]]
    assert q0["fraction_mae"] == pytest.approx(np.abs(fractions[:, start:stop] - observed).mean())
    mean_alpha = alpha.mean(axis=1)[0, start:stop]
    expected = -stats.dirichlet_multinomial.logpmf(counts[0, start:stop], mean_alpha, counts[0, start:stop].sum())
    first_galaxy = evaluate_predictions(alpha[:1], counts[:1], schema)
    assert first_galaxy["questions"][schema.question_names[0]]["loss"] == pytest.approx(expected, rel=1e-6)


def test_evaluate_split_scores_against_the_manifest_votes(data, model):
    reader = ShardReader(data["shards"])
    torch.manual_seed(5)
    report = evaluate_split(model, reader, DECALS_DR5, "val", n_samples=3, batch_size=3)
    torch.manual_seed(5)
    _, predictions = collect(predict_batches(model, reader, split="val", n_samples=3, batch_size=3))
    expected = evaluate_predictions(predictions, reader.votes(reader.split_positions("val")), DECALS_DR5)
    assert report == expected and report["n_galaxies"] == 8
    with pytest.raises(ValueError, match="no vote columns.*'gz2'.*made for 'decals-dr5'"):
        evaluate_split(model, reader, GZ2, "val")


# ---------------------------------------------------------------- CLI

def test_cli_predict_from_shards_and_from_a_catalog(data, tmp_path):
    reader = ShardReader(data["shards"])
    settings = TrainSettings(architecture="zoobot-2019", epochs=1, batch_size=8, accelerator="cpu", devices="1", progress_bar=False)
    train_ids, val_ids = reader.ids("train"), reader.ids("val")
    result = train_model(
        data["shards"], DECALS_DR5, train_ids, reader.votes(reader.positions(train_ids)),
        val_ids, reader.votes(reader.positions(val_ids)), settings, tmp_path / "run",
    )
    runner = CliRunner()
    out = tmp_path / "eval.parquet"
    done = runner.invoke(app, [
        "predict", str(result.best_checkpoint), "--shard-dir", str(data["shards"]),
        "--split", "val", "--out", str(out), "--n-samples", "4", "--save-samples", "--tta-views", "2",
    ])
    assert done.exit_code == 0, done.output
    assert "overall: loss" in done.output  # eval has votes: metrics are printed
    assert len(pd.read_parquet(out)) == 8 and np.load(tmp_path / "eval_samples.npy").shape == (8, 4, 34)
    eval_votes = question_votes(reader.votes(reader.split_positions("val")), DECALS_DR5)
    pi_votes = pd.read_parquet(out)[[f"{q}_pi_votes" for q in DECALS_DR5.question_names]].to_numpy()
    np.testing.assert_array_equal(pi_votes, np.where(eval_votes >= 1, eval_votes, 40))  # own votes where known

    catalog_path = tmp_path / "pool_catalog.parquet"
    write_catalog(data["pool_catalog"], catalog_path, DECALS_DR5)
    from_catalog = tmp_path / "from_catalog.parquet"
    done = runner.invoke(app, [
        "predict", "--checkpoint", str(result.best_checkpoint), "--catalog", str(catalog_path),
        "--save-loc", str(from_catalog), "--n-samples", "3", "--batch-size", "5", "--precision", "32", "--votes", "25",
    ])
    assert done.exit_code == 0, done.output
    for old, new in (("--checkpoint", "CHECKPOINT"), ("--save-loc", "--out"), ("--precision 32", "--precision 32-true")):
        assert f"warning: {old} is deprecated and will be removed in the next release; use {new}" in done.output
    table = pd.read_parquet(from_catalog)
    assert list(table["id_str"]) == list(data["pool_catalog"]["id_str"])
    assert list(table.columns) == ["id_str", *prediction_columns(DECALS_DR5)]
    pool_votes = question_votes(data["pool_catalog"][DECALS_DR5.answer_columns].to_numpy(), DECALS_DR5)
    np.testing.assert_array_equal(table[[f"{q}_pi_votes" for q in DECALS_DR5.question_names]], np.where(pool_votes >= 1, pool_votes, 25))

    bad_votes = runner.invoke(app, ["predict", str(result.best_checkpoint), "--catalog", str(catalog_path), "--out", str(out), "--votes", "0"])
    assert bad_votes.exit_code == 1 and "--votes: expected a whole number of volunteers >= 1, got 0" in bad_votes.output
    missing = runner.invoke(app, ["predict", str(result.best_checkpoint), "--out", str(out)])
    assert missing.exit_code == 1 and "exactly one of --shard-dir" in missing.output
    bad = runner.invoke(app, ["predict", str(tmp_path / "none.ckpt"), "--catalog", str(catalog_path), "--out", str(out)])
    assert bad.exit_code == 1 and "does not exist" in bad.output
