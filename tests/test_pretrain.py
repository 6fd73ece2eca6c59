"""Self-supervised pretraining (`zoobot pretrain`), the NT-Xent loss, photometric jitter and the linear probe."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zoobot.augmentation import PhotometricJitter
from zoobot.catalog import define_experiment
from zoobot.checkpoints import read_checkpoint
from zoobot.cli import app
from zoobot.contrastive import nt_xent
from zoobot.models import create_model
from zoobot.pretrain import PretrainSettings, choose_l2, linear_probe, probe_checkpoint
from zoobot.pretrained import load_pretrained
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog

SIZE = 32
runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """train 14, val 8, test 8, pool 30 galaxies at 32 px."""
    folder = tmp_path_factory.mktemp("pretrain_shards")
    catalog = make_synthetic_catalog(60, folder / "synthetic", size=SIZE, seed=3)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0, simulation_size=30)
    write_shards(experiment.simulation_labelled, experiment.simulation_unlabelled, folder / "shards", DECALS_DR5,
                 val_size=8, test_size=8, size=SIZE)
    return folder / "shards"


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrained")
    result = runner.invoke(app, ["pretrain", str(shards), "--out", str(out), "--epochs", "2", "--batch-size", "8",
                                 "--accelerator", "cpu", "--devices", "1", "--no-progress", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "pretrained on 30 galaxies (pool) for 2 epochs" in result.output
    return out


def direct_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """The formula, one view at a time."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n, batch = len(z), len(z1)
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        others = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / temperature) / others)
    return total / n


def test_nt_xent_equals_the_formula_and_prefers_matching_views():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 3, generator=generator)
    z2 = z1 + 0.1 * torch.randn(5, 3, generator=generator)
    for temperature in (0.1, 0.5, 2.0):
        assert float(nt_xent(z1, z2, temperature)) == pytest.approx(direct_nt_xent(z1, z2, temperature), rel=1e-5)
    shuffled = z2[torch.tensor([1, 2, 3, 4, 0])]
    assert float(nt_xent(z1, z2, 0.1)) < float(nt_xent(z1, shuffled, 0.1)) - 1.0
    with pytest.raises(ValueError, match="at least 2 galaxies"):
        nt_xent(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="one shape"):
        nt_xent(z1, z2[:, :2])


def test_photometric_jitter_keeps_shape_and_dtype_and_zero_is_the_identity():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(PhotometricJitter(0, 0, 0)(images), images)
    torch.manual_seed(0)
    jittered = PhotometricJitter(0.2, 0.2, 4.0)(images)
    assert jittered.dtype == torch.uint8 and jittered.shape == images.shape
    assert not torch.equal(jittered, images)
    assert (jittered.float() - images.float()).abs().mean() < 40  # mild
    with pytest.raises(ValueError, match=r"brightness: expected a number in \[0, 1\)"):
        PhotometricJitter(brightness=1.5)


def test_pretrain_writes_a_zoobot_checkpoint_that_pretrained_accepts(pretrained, shards):
    record = json.loads((pretrained / "pretrain_result.json").read_text())
    assert record["splits"] == ["pool"] and record["n_galaxies"] == 30 and record["epochs_trained"] == 2
    assert len(record["loss_per_epoch"]) == 2 and all(math.isfinite(v) for v in record["loss_per_epoch"])
    assert record["seconds"] > 0 and record["settings"]["batch_size"] == 8
    loaded = read_checkpoint(pretrained / "pretrained.ckpt")
    assert loaded.model_config["architecture"] == "zoobot-2019" and loaded.model_config["image_size"] == SIZE
    assert loaded.settings.architecture == "zoobot-2019"
    fresh = create_model("zoobot-2019", schema=DECALS_DR5, image_size=SIZE)
    model = create_model("zoobot-2019", schema=SMOOTH_OR_FEATURED, image_size=SIZE)
    report = load_pretrained(model, pretrained / "pretrained.ckpt")
    assert report["source"] == "zoobot checkpoint (zoobot-2019, schema 'decals-dr5', 3 channels)"
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, loaded.model.backbone.state_dict()[name]), name
    changed = [n for n, t in fresh.backbone.state_dict().items() if not torch.equal(t, model.backbone.state_dict()[n])]
    assert changed  # pretraining moved the weights away from an initialisation


def test_train_starts_from_the_pretrained_backbone(pretrained, shards, tmp_path):
    # with the backbone frozen (--trainable-blocks 0), the trained model's backbone is the pretrained one
    result = runner.invoke(app, ["train", str(shards), "--out", str(tmp_path / "run"), "--architecture", "zoobot-2019",
                                 "--epochs", "1", "--batch-size", "8", "--accelerator", "cpu", "--devices", "1",
                                 "--no-progress", "--eval-samples", "2", "--pretrained", str(pretrained / "pretrained.ckpt"),
                                 "--trainable-blocks", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    trained = read_checkpoint(Path(metrics["best_checkpoint"])).model.backbone.state_dict()
    start = read_checkpoint(pretrained / "pretrained.ckpt").model.backbone.state_dict()
    assert trained.keys() == start.keys()
    assert all(torch.equal(trained[k], start[k]) for k in start)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--split", "moon"], "expected one or more of"),
        (["--batch-size", "1"], "batch_size: expected an integer >= 2"),
        (["--batch-size", "64"], "give 30 galaxies, fewer than the batch size 64"),
        (["--split", "train", "--split", "train"], "each split once"),
        (["--temperature", "0"], "temperature: expected a number > 0"),
    ],
)
def test_pretrain_refuses_bad_options(shards, tmp_path, options, message):
    result = runner.invoke(app, ["pretrain", str(shards), "--out", str(tmp_path / "out"), "--no-progress", "--batch-size", "8", *options])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "pretrained.ckpt").exists()


def test_pretrain_refuses_an_empty_split(tmp_path):
    catalog = make_synthetic_catalog(20, tmp_path / "synthetic", size=SIZE, seed=4)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    write_shards(experiment.labelled, experiment.unlabelled, tmp_path / "shards", DECALS_DR5, val_size=4, size=SIZE)
    assert ShardReader(tmp_path / "shards").counts["test"] == 0
    result = runner.invoke(app, ["pretrain", str(tmp_path / "shards"), "--out", str(tmp_path / "out"), "--split", "test"])
    assert result.exit_code == 1 and "hold 0 galaxies; pretraining needs at least 2" in result.output, result.output


def test_the_probe_scores_separable_features_perfectly_and_noise_near_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 5))
    features[:, 0] += 6 * labels  # one feature separates the classes
    scores = linear_probe(features[:100], labels[:100], features[100:], labels[100:], l2=1e-3)
    assert scores["accuracy"] == 1.0 and scores["fit_accuracy"] == 1.0 and scores["log_loss"] < 0.05
    noise = rng.normal(size=(200, 5))
    chance = linear_probe(noise[:100], labels[:100], noise[100:], labels[100:], l2=1.0)
    assert 0.3 < chance["accuracy"] < 0.7 and chance["log_loss"] > 0.6
    assert choose_l2(noise[:100], labels[:100], 2) >= 0.1  # noise wants a strong penalty
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(np.full((4, 2), np.nan), labels[:4], features[:2, :2], labels[:2])


def test_probe_checkpoint_and_cli(pretrained, shards, tmp_path):
    result = probe_checkpoint(pretrained / "pretrained.ckpt", shards, fit_split="train", score_split="val", l2=0.1)
    assert result["question"] == DECALS_DR5.questions[0].name
    for name in ("pretrained", "random", "constant"):
        assert 0 <= result[name]["accuracy"] <= 1 and math.isfinite(result[name]["log_loss"])
        assert result[name]["n_score"] == 8
    out = tmp_path / "probe.json"
    cli = runner.invoke(app, ["probe", str(pretrained / "pretrained.ckpt"), str(shards), "--fit-split", "train",
                              "--score-split", "val", "--l2", "0.1", "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert "pretrained  log loss" in cli.output and json.loads(out.read_text())["fit_split"] == "train"
    bad = runner.invoke(app, ["probe", str(pretrained / "pretrained.ckpt"), str(shards), "--fit-split", "pool"])
    assert bad.exit_code == 1 and "split 'pool' has 0 galaxies with votes" in bad.output, bad.output


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_galaxies"):
        PretrainSettings(max_galaxies=1)
    assert PretrainSettings(splits=["pool", "train"]).splits == ("pool", "train")


def test_pretrain_on_two_ddp_processes(shards, tmp_path):
    # Lightning relaunches the command once per extra rank, so it runs as `python -m zoobot`
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "zoobot", "--threads", "1", "pretrain", str(shards), "--out", str(tmp_path),
               "--epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
               "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "pretrain_result.json").read_text())
    assert record["n_galaxies"] == 30 and len(record["loss_per_epoch"]) == 1
    load_pretrained(create_model("zoobot-2019", schema=SMOOTH_OR_FEATURED), tmp_path / "pretrained.ckpt")
