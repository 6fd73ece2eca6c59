"""Pretrained encoders and finetuning controls: `--pretrained`, `--trainable-blocks`, `--layer-decay`."""

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from zoobot.catalog import define_experiment
from zoobot.checkpoints import read_checkpoint
from zoobot.cli import app
from zoobot.finetuning import backbone_blocks, parameter_groups
from zoobot.models import create_model
from zoobot.pretrained import load_pretrained
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training import train_model
from zoobot.training_settings import TrainSettings

SIZE = 32


def settings(**changes) -> TrainSettings:
    base = dict(architecture="zoobot-2019", epochs=1, batch_size=8, accelerator="cpu", devices="1",
                progress_bar=False, seed=0, min_epochs=0)
    return TrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pretrained_shards")
    catalog = make_synthetic_catalog(40, folder / "synthetic", size=SIZE, seed=5)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    write_shards(experiment.labelled, experiment.unlabelled, folder / "shards", DECALS_DR5, val_size=8, size=SIZE)
    return folder / "shards"


def run(shards: Path, out: Path, schema, train_settings: TrainSettings):
    reader = ShardReader(shards)
    train_ids, val_ids = list(reader.ids("train")), list(reader.ids("val"))
    train_counts = reader.votes(reader.split_positions("train"))
    val_counts = reader.votes(reader.split_positions("val"))
    if schema is SMOOTH_OR_FEATURED:  # the DECaLS root's first two answers
        train_counts, val_counts = train_counts[:, :2], val_counts[:, :2]
    return train_model(reader, schema, train_ids, train_counts, val_ids, val_counts, train_settings, out)


@pytest.fixture(scope="module")
def tree_checkpoint(shards, tmp_path_factory) -> Path:
    """A zoobot-2019 checkpoint trained on the whole DECaLS tree."""
    return Path(run(shards, tmp_path_factory.mktemp("tree"), DECALS_DR5, settings()).best_checkpoint)


def backbone_of(checkpoint: Path) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("model.backbone."):]: v for k, v in state.items() if k.startswith("model.backbone.")}


def test_a_checkpoint_of_another_schema_gives_its_backbone_and_a_new_head(tree_checkpoint):
    model = create_model("zoobot-2019", schema=SMOOTH_OR_FEATURED)
    fresh_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_pretrained(model, tree_checkpoint)
    assert report["source"] == "zoobot checkpoint (zoobot-2019, schema 'decals-dr5', 3 channels)"
    expected = backbone_of(tree_checkpoint)
    assert report["loaded"] == len(expected) > 0 and report["ignored"] == []
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert all(torch.equal(v, fresh_head[k]) for k, v in model.head.state_dict().items())


def test_timm_weights_files_load_by_name_and_their_classifier_is_ignored(tmp_path):
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    state = source.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "encoder.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "encoder.pth")
    for name in ("encoder.safetensors", "encoder.pth"):
        model = create_model("test_efficientnet", schema=DECALS_DR5)
        report = load_pretrained(model, tmp_path / name)
        assert report["ignored"] == ["classifier.bias", "classifier.weight"]
        assert report["source"].startswith("timm-format weights")
        for key, tensor in model.backbone.state_dict().items():
            assert torch.equal(tensor, state[key]), key


def test_weights_that_do_not_fit_are_listed(tmp_path, tree_checkpoint):
    other = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    save_file(other.state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match=r"\d+ backbone tensors the file lacks: blocks\.0\.0.*\(and \d+ more\); \d+ tensors of the file the "
                                         r"backbone lacks: conv1.*tensors with other shapes \(file vs model\): bn1.bias \(32,\) vs \(24,\)"):
        load_pretrained(create_model("test_efficientnet", schema=DECALS_DR5), tmp_path / "resnet.safetensors")
    grey = create_model("zoobot-2019", schema=DECALS_DR5, channels=1)
    with pytest.raises(ValueError, match=r"1 tensors with other shapes \(file vs model\): features.0.weight "
                                         r"\(32, 3, 3, 3\) vs \(32, 1, 3, 3\).*--greyscale"):
        load_pretrained(grey, tree_checkpoint)
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match="torch.load cannot read it"):
        load_pretrained(grey, tmp_path / "notes.pth")
    (tmp_path / "resnet.onnx").write_text("")
    with pytest.raises(ValueError, match=r"expected a file ending in \.safetensors"):
        load_pretrained(grey, tmp_path / "resnet.onnx")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_pretrained(grey, tmp_path / "missing.safetensors")


def test_blocks_cover_every_parameter_once_and_groups_follow_the_decay():
    for architecture in ("zoobot-2019", "test_efficientnet"):
        model = create_model(architecture, schema=DECALS_DR5)
        names = [n for block in backbone_blocks(model.backbone) for n in block]
        assert sorted(names) == sorted(n for n, _ in model.backbone.named_parameters())
    model = create_model("zoobot-2019", schema=DECALS_DR5)
    blocks = backbone_blocks(model.backbone)
    assert len(blocks) == 7  # six convolutions, then the dense layer
    groups = parameter_groups(model, learning_rate=1e-3, weight_decay=0.0, trainable_blocks=2, layer_decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("backbone block 5", pytest.approx(2.5e-4)), ("backbone block 6", pytest.approx(5e-4)), ("head", 1e-3)
    ]
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == set(blocks[5] + blocks[6])
    with pytest.raises(ValueError, match=r"trainable_blocks: expected a whole number from 0 .* to 7"):
        parameter_groups(model, 1e-3, 0.0, trainable_blocks=8)
    with pytest.raises(ValueError, match="TrainSettings.layer_decay: expected a number in \\(0, 1\\]"):
        settings(layer_decay=1.5)
    with pytest.raises(ValueError, match="TrainSettings.trainable_blocks: expected a whole number >= 0"):
        settings(trainable_blocks=-1)


def test_finetuning_the_last_block_from_a_pretrained_tree_model(shards, tree_checkpoint, tmp_path):
    result = run(shards, tmp_path / "finetuned", SMOOTH_OR_FEATURED,
                 settings(pretrained=str(tree_checkpoint), trainable_blocks=1, epochs=2))
    before, after = backbone_of(tree_checkpoint), backbone_of(Path(result.best_checkpoint))
    frozen = [k for k in before if not k.startswith("dense.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["dense.0.weight"], after["dense.0.weight"])  # the last block learnt
    record = json.loads((tmp_path / "finetuned" / "train_result.json").read_text())
    assert record["history"][-1]["lr"] == pytest.approx(1e-3)  # the head's rate


def test_cli_train_with_pretrained(shards, tree_checkpoint, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["train", str(shards), "--out", str(tmp_path / "cli"), "--architecture", "zoobot-2019",
                               "--schema", "decals-dr5:smooth-or-featured", "--epochs", "1", "--min-epochs", "0",
                               "--batch-size", "8", "--accelerator", "cpu", "--no-progress", "--eval-samples", "2",
                               "--pretrained", str(tree_checkpoint), "--trainable-blocks", "0"])
    assert done.exit_code == 0, done.output
    best = json.loads((tmp_path / "cli" / "train_result.json").read_text())["best_checkpoint"]
    saved = read_checkpoint(Path(best)).settings
    assert saved.pretrained == str(tree_checkpoint.resolve()) and saved.trainable_blocks == 0
    both = runner.invoke(app, ["train", str(shards), "--out", str(tmp_path / "both"), "--pretrained", str(tree_checkpoint),
                               "--from-checkpoint", str(tree_checkpoint)])
    assert both.exit_code == 1 and "--from-checkpoint and --pretrained both give starting weights" in both.output
    missing = runner.invoke(app, ["train", str(shards), "--out", str(tmp_path / "missing"), "--architecture",
                                  "zoobot-2019", "--pretrained", str(tmp_path / "nope.safetensors"), "--accelerator", "cpu"])
    assert missing.exit_code == 1 and "nope.safetensors do not exist" in missing.output
