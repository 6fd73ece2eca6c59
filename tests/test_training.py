"""Training: data, augmentation, checkpoints with their config, warm starts, bf16, DDP, `zoobot train`."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from zoobot.catalog import define_experiment
from zoobot.cli import app
from zoobot.schema import DECALS_DR5, SMOOTH_OR_FEATURED
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.augmentation import GalaxyAugmentation
from zoobot.checkpoints import load_model, read_checkpoint
from zoobot.shard_dataset import ShardDataModule, ShardVoteDataset
from zoobot.training import train_model
from zoobot.training_settings import TrainSettings

SIZE = 32


def tiny_settings(**changes) -> TrainSettings:
    base = dict(
        architecture="zoobot-2019", epochs=1, batch_size=8, accelerator="cpu", devices="1",
        progress_bar=False, seed=0,
    )
    return TrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """40 labelled synthetic galaxies (30 train, 10 eval) and 8 pool galaxies at 32 px."""
    folder = tmp_path_factory.mktemp("train_shards")
    catalog = make_synthetic_catalog(48, folder / "synthetic", size=SIZE, seed=3)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    labelled = experiment.labelled.iloc[:40]
    pool = experiment.labelled.iloc[40:]
    write_shards(labelled, pool, folder / "shards", DECALS_DR5, val_size=10, size=SIZE)
    return folder / "shards"


def split_votes(reader: ShardReader, split: str):
    return list(reader.ids(split)), reader.votes(reader.split_positions(split))


def train(shards: Path, save_dir: Path, settings: TrainSettings, schema=DECALS_DR5, **kwargs):
    reader = ShardReader(shards)
    train_ids, train_counts = split_votes(reader, "train")
    val_ids, val_counts = split_votes(reader, "val")
    if schema is SMOOTH_OR_FEATURED:  # smooth vs featured-or-disk votes of the DECaLS question
        train_counts, val_counts = train_counts[:, :2], val_counts[:, :2]
    return train_model(shards, schema, train_ids, train_counts, val_ids, val_counts, settings, save_dir, **kwargs)


def state_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("trained")
    return train(shards, save_dir, tiny_settings(epochs=2, save_top_k=2)), save_dir


# ---------------------------------------------------------------- data and augmentation

def test_dataset_fetches_whole_batches_with_the_callers_votes(shards):
    reader = ShardReader(shards)
    positions = reader.split_positions("train")[:5]
    counts = np.arange(5 * DECALS_DR5.n_answers).reshape(5, -1)  # not the manifest's votes
    dataset = ShardVoteDataset(reader, positions, counts)
    images, batch_counts = dataset.__getitems__([4, 0, 2])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, SIZE, SIZE)
    np.testing.assert_array_equal(images.numpy(), reader.images(positions[[4, 0, 2]]))
    np.testing.assert_array_equal(batch_counts.numpy(), counts[[4, 0, 2]])
    grey, _ = ShardVoteDataset(reader, positions, counts, greyscale=True).__getitems__([0, 1])
    assert grey.shape == (2, 1, SIZE, SIZE) and grey.dtype == torch.uint8


def test_datamodule_loaders_in_worker_processes(shards):
    reader = ShardReader(shards)
    positions = reader.split_positions("train")
    counts = reader.votes(positions)
    dataset = ShardVoteDataset(reader, positions, counts, GalaxyAugmentation(SIZE))
    data = ShardDataModule(dataset, ShardVoteDataset(reader, positions, counts), batch_size=8, num_workers=1)
    train_batches = list(data.train_dataloader())
    assert [len(images) for images, _ in train_batches] == [8, 8, 8]  # 30 galaxies: ragged batch dropped
    eval_batches = list(data.val_dataloader())
    assert [len(images) for images, _ in eval_batches] == [8, 8, 8, 6]
    np.testing.assert_array_equal(torch.cat([c for _, c in eval_batches]).numpy(), counts)
    np.testing.assert_array_equal(torch.cat([i for i, _ in eval_batches]).numpy(), reader.images(positions))


def test_augmentation_draws_a_view_per_galaxy():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, SIZE, SIZE), dtype=torch.uint8)
    flips = GalaxyAugmentation(SIZE, rotate=False, crop=False)(images)
    views = [images, images.flip(-1), images.flip(-2), images.flip(-1).flip(-2)]
    which = [next(v for v, view in enumerate(views) if torch.equal(out, view[i])) for i, out in enumerate(flips)]
    assert len(set(which)) == 4  # 64 galaxies: every flip combination occurs, one per galaxy
    for batched in (True, False):
        full = GalaxyAugmentation(SIZE, batched=batched)(images)
        assert full.dtype == torch.uint8 and full.shape == images.shape
        assert not torch.equal(full, images)
    with pytest.raises(ValueError, match="uint8"):
        GalaxyAugmentation(SIZE)(images.float())


@pytest.mark.parametrize("batched", [True, False])
def test_rotations_and_crops_keep_the_galaxy_centred_and_differ_per_galaxy(batched):
    torch.manual_seed(1)
    blob = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)
    blob[..., 13:19, 13:19] = 200  # a bright centred "galaxy"
    bar = blob.clone()
    bar[..., 15:17, 2:30] = 200  # with a long horizontal bar through it
    views = GalaxyAugmentation(SIZE, batched=batched)(bar.repeat(16, 1, 1, 1))
    assert len({v.numpy().tobytes() for v in views}) == 16  # one random view per galaxy
    centre = views[:, 0, 12:20, 12:20].float().mean(dim=(1, 2))
    assert (centre > 100).all()  # rotation is about the centre; crops shift it by <= 16%
    assert orientation_spread(views[:, 0]) > 90  # the bar points every which way


def orientation_spread(images: torch.Tensor) -> float:
    """Range, in degrees, of the principal-axis angles of bright pixels, each in [0, 180)."""
    angles = []
    for image in images.float():
        y, x = torch.nonzero(image > 100, as_tuple=True)
        x, y = x.float() - x.float().mean(), y.float() - y.float().mean()
        angle = 0.5 * torch.atan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())
        angles.append(float(torch.rad2deg(angle)) % 180)
    return max(angles) - min(angles)


# ---------------------------------------------------------------- training and checkpoints

def test_training_writes_best_checkpoint_history_and_logs(trained):
    result, save_dir = trained
    assert result.best_checkpoint.is_file() and result.best_checkpoint.parent == save_dir / "checkpoints"
    assert result.epochs_trained == 2 and [h["epoch"] for h in result.history] == [0, 1]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in result.history)
    assert result.best_val_loss == pytest.approx(min(h["val_loss"] for h in result.history))
    assert len(list((save_dir / "checkpoints").glob("*.ckpt"))) == 2  # save_top_k=2
    assert not list(save_dir.rglob(".*tmp*"))  # no half-written files
    record = json.loads((save_dir / "train_result.json").read_text())
    assert Path(record["best_checkpoint"]) == result.best_checkpoint
    assert (save_dir / "logs" / "version_0" / "metrics.csv").read_text().count("\n") >= 3


def test_checkpoint_alone_rebuilds_the_model(trained, shards):
    result, _ = trained
    loaded = read_checkpoint(result.best_checkpoint)
    assert loaded.settings == tiny_settings(epochs=2, save_top_k=2)
    assert loaded.schema == DECALS_DR5
    assert loaded.model_config["architecture"] == "zoobot-2019" and loaded.model_config["image_size"] == SIZE
    model = load_model(result.best_checkpoint)
    assert not model.training
    state = torch.load(result.best_checkpoint, weights_only=True)["state_dict"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[f"model.{name}"])
    images = torch.as_tensor(ShardReader(shards).images(np.arange(4)))
    assert model(images, n_samples=3).shape == (4, 3, DECALS_DR5.n_answers)


def test_warm_start_loads_the_checkpoint_weights(trained, shards, tmp_path):
    result, _ = trained
    start = load_model(result.best_checkpoint)
    # a learning rate of ~0 keeps the weights where the warm start put them
    warm = train(shards, tmp_path / "warm", tiny_settings(learning_rate=1e-20, seed=5), warm_start=result.best_checkpoint)
    after = load_model(warm.best_checkpoint)
    for (name, a), b in zip(start.state_dict().items(), after.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # a fresh seed-5 init would differ everywhere


def test_warm_start_from_a_checkpoint_saved_before_the_softplus_link_keeps_its_link(trained, shards, tmp_path, caplog):
    result, _ = trained
    record = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    del record["hyper_parameters"]["model_config"]["head_link"]  # as written before head_link existed
    old = tmp_path / "old.ckpt"
    torch.save(record, old)
    assert load_model(old).head.link == "sigmoid"
    warm = train(shards, tmp_path / "warm", tiny_settings(), warm_start=old)
    assert load_model(warm.best_checkpoint).head.link == "sigmoid"
    assert "first Dirichlet link" in caplog.text


def test_warm_start_from_another_schema_is_a_clear_error(trained, shards, tmp_path):
    result, _ = trained
    with pytest.raises(ValueError, match="warm start.*same architecture, schema"):
        train(shards, tmp_path / "x", tiny_settings(), schema=SMOOTH_OR_FEATURED, warm_start=result.best_checkpoint)


def test_bf16_mixed_trains_on_cpu(shards, tmp_path):
    result = train(shards, tmp_path, tiny_settings(precision="bf16-mixed", augment=False))
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.best_val_loss)


def test_greyscale_binomial_model(shards, tmp_path):
    result = train(shards, tmp_path, tiny_settings(greyscale=True), schema=SMOOTH_OR_FEATURED)
    model = load_model(result.best_checkpoint)
    assert model.channels == 1 and model.likelihood == "binomial" and model.n_outputs == 1


def test_bad_inputs_name_the_problem(shards, tmp_path):
    reader = ShardReader(shards)
    ids, counts = split_votes(reader, "train")
    val_ids, val_counts = split_votes(reader, "val")
    settings = tiny_settings()

    def run(train_ids=ids, train_counts=counts, **kwargs):
        return train_model(shards, DECALS_DR5, train_ids, train_counts, val_ids, val_counts, settings, tmp_path, **kwargs)

    nan_counts = counts.astype(float)
    nan_counts[2, 0] = np.nan
    with pytest.raises(ValueError, match=f"never NaN.*{ids[2]}"):
        run(train_counts=nan_counts)
    with pytest.raises(ValueError, match=r"expected shape \(30, 34\)"):
        run(train_counts=counts[:, :5])
    with pytest.raises(ValueError, match="not-a-galaxy.*make-shards"):
        run(train_ids=[*ids[:-1], "not-a-galaxy"])
    with pytest.raises(ValueError, match="duplicated"):
        run(train_ids=[ids[0], *ids[:-1]])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "old.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite"):
        run()
    with pytest.raises(ValueError, match="batch_size"):
        TrainSettings(batch_size=0)


@pytest.fixture
def foreign_files(tmp_path) -> dict[str, Path]:
    """Files that are not zoobot checkpoints, each named by what it holds."""
    files = {
        "random bytes": tmp_path / "random.ckpt",
        "JSON": tmp_path / "config.json",
        "a torch file without zoobot's config": tmp_path / "plain.ckpt",
        "a tensor": tmp_path / "tensor.pt",
    }
    files["random bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    files["JSON"].write_text(json.dumps({"state_dict": {}, "hyper_parameters": {}}))
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}}, files["a torch file without zoobot's config"])
    torch.save(torch.zeros(3), files["a tensor"])
    return files


def test_foreign_files_are_not_checkpoints(foreign_files):
    for path in foreign_files.values():
        with pytest.raises(ValueError, match=f"{path.name} is not a zoobot checkpoint.*SAVE_DIR/checkpoints"):
            read_checkpoint(path)
    with pytest.raises(ValueError, match=r"hyper_parameters without \['model_config', 'schema', 'settings'\]"):
        read_checkpoint(foreign_files["a torch file without zoobot's config"])


def test_cli_predict_names_a_file_that_is_not_a_checkpoint(foreign_files, tmp_path):
    runner = CliRunner()
    for what, path in foreign_files.items():
        done = runner.invoke(app, [
            "predict", str(path), "--catalog", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o.parquet"),
        ])
        assert done.exit_code == 1 and isinstance(done.exception, SystemExit), what
        assert done.output.startswith("error: ") and "is not a zoobot checkpoint" in done.output, what
        assert "Traceback" not in done.output, what


def test_settings_and_checkpoint_reading_do_not_import_lightning():
    code = (
        "import sys, zoobot.training_settings; assert 'torch' not in sys.modules, 'torch';"
        "import zoobot.checkpoints; assert 'lightning' not in sys.modules, 'lightning'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- DDP

DDP_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from lightning.pytorch.callbacks import Callback
    from zoobot.schema import DECALS_DR5
    from zoobot.shards import ShardReader
    from zoobot.training import train_model
    from zoobot.training_settings import TrainSettings

    class HashWeights(Callback):
        def on_fit_end(self, trainer, module):
            digest = hashlib.sha256()
            for name, tensor in sorted(module.model.state_dict().items()):
                digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
            out = Path(sys.argv[2]) / f"hash_rank{trainer.global_rank}_of_{trainer.world_size}.txt"
            out.write_text(f"{digest.hexdigest()} {trainer.global_step}")

    shards, save_dir = Path(sys.argv[1]), Path(sys.argv[2])
    reader = ShardReader(shards)
    train, vals = reader.split_positions("train"), reader.split_positions("val")
    settings = TrainSettings(architecture="zoobot-2019", epochs=2, batch_size=4, accelerator="cpu",
                             devices="2", strategy="ddp", progress_bar=False, seed=0)
    train_model(shards, DECALS_DR5, reader.ids("train"), reader.votes(train), reader.ids("val"),
                reader.votes(vals), settings, save_dir, callbacks=[HashWeights()])
    """
)


def test_ddp_two_cpu_processes_end_with_the_same_weights(shards, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    save_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(shards), str(save_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = (save_dir / "hash_rank0_of_2.txt").read_text().split()
    rank1 = (save_dir / "hash_rank1_of_2.txt").read_text().split()
    assert rank0 == rank1
    # 30 train galaxies over 2 ranks, batch 4: 15 per rank -> 3 full batches x 2 epochs
    assert rank0[1] == "6"
    assert json.loads((save_dir / "train_result.json").read_text())["epochs_trained"] == 2


# ---------------------------------------------------------------- CLI

def test_cli_train_prints_and_writes_metrics(shards, tmp_path):
    runner = CliRunner()
    save_dir = tmp_path / "cli_run"
    args = [
        "train", str(shards), "--out", str(save_dir), "--architecture", "zoobot-2019",
        "--epochs", "1", "--batch-size", "8", "--accelerator", "cpu", "--no-progress", "--eval-samples", "4",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "smooth-or-featured" in result.output and "overall: loss" in result.output
    record = json.loads((save_dir / "metrics.json").read_text())
    assert record["metrics"]["n_galaxies"] == 10 and record["metrics"]["n_samples"] == 4
    assert set(record["metrics"]["questions"]) == set(DECALS_DR5.question_names)
    assert TrainSettings(**record["settings"]).architecture == "zoobot-2019"
    assert "image-blind baseline" in result.output
    assert isinstance(record["beats_baseline"], bool) and isinstance(record["collapsed"], bool)
    assert record["baseline_loss"] == pytest.approx(record["baseline"]["baseline_loss"]) and record["baseline_loss"] > 0
    if record["collapsed"] or not record["beats_baseline"]:  # one epoch on 30 galaxies: it says so
        assert "collapsed" in result.output or "does not beat the image-blind baseline" in result.output
    again = runner.invoke(app, args)  # refuses to mix with the earlier checkpoints
    assert again.exit_code == 1 and "overwrite" in again.output
    bad_schema = runner.invoke(app, [*args, "--schema", "gz2", "--overwrite"])
    assert bad_schema.exit_code == 1 and "no vote columns" in bad_schema.output


# ---------------------------------------------------------------- learning from few labels

@pytest.fixture(scope="module")
def bright_is_smooth(tmp_path_factory) -> Path:
    """A constructed binomial dataset the images explain: bright discs get smooth votes, faint
    ones featured votes (5 votes each, 90:10). 48 train, 16 val, 16 px; 70 % smooth."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bright_is_smooth")
    rng = np.random.default_rng(0)
    rows = []
    yy, xx = np.mgrid[:16, :16]
    disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 30)[..., None]
    for i in range(64):
        smooth = rng.random() < 0.7
        level = 220 if smooth else 60
        pixels = np.clip(disc * level + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        path = folder / f"g{i}.png"
        Image.fromarray(pixels).save(path)
        k = int(rng.binomial(5, 0.9 if smooth else 0.1))
        rows.append({"id_str": f"g{i}", "file_loc": str(path), SMOOTH_OR_FEATURED.answer_columns[0]: k,
                     SMOOTH_OR_FEATURED.answer_columns[1]: 5 - k})
    catalog = pd.DataFrame(rows)
    write_shards(catalog, catalog.iloc[:0], folder / "shards", SMOOTH_OR_FEATURED, val_size=16, size=16)
    return folder / "shards"


def test_a_tiny_model_leaves_the_prior_within_min_epochs(bright_is_smooth, tmp_path):
    reader = ShardReader(bright_is_smooth)
    train_ids, train_counts = split_votes(reader, "train")
    val_ids, val_counts = split_votes(reader, "val")
    settings = tiny_settings(epochs=8, min_epochs=8, patience=0, learning_rate=3e-3, augment=False)
    result = train_model(reader, SMOOTH_OR_FEATURED, train_ids, train_counts, val_ids, val_counts, settings, tmp_path)
    assert result.left_prior_epoch is not None and result.left_prior_epoch < settings.min_epochs
    assert result.beats_baseline and not result.collapsed
    assert result.best_val_loss < result.baseline_loss
    assert result.epochs_trained == 8  # patience 0, yet no stop before min_epochs
    assert {h["lr"] for h in result.history} == {settings.learning_rate}  # the default: constant
    assert all(h["val_spread"] is not None for h in result.history)
    record = json.loads((tmp_path / "train_result.json").read_text())
    assert record["baseline_loss"] == pytest.approx(result.baseline_loss)
    assert record["beats_baseline"] is True and record["collapsed"] is False


class FakeTrainer:
    """What BaselineAwareStopping reads from a Lightning Trainer."""

    def __init__(self):
        from types import SimpleNamespace

        self.sanity_checking = False
        self.should_stop = False
        self.current_epoch = 0
        self.callback_metrics = {}
        self.strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)


def run_stopping(stopping, val_losses, spreads) -> int:
    """Feed one val loss per epoch; the number of epochs run."""
    trainer = FakeTrainer()
    for epoch, (loss, spread) in enumerate(zip(val_losses, spreads)):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val_loss": torch.tensor(loss), "val_spread": torch.tensor(spread)}
        stopping.on_validation_end(trainer, None)
        if trainer.should_stop:
            return epoch + 1
    return len(val_losses)


def test_early_stopping_waits_for_the_baseline_and_min_epochs():
    from zoobot.training import BaselineAwareStopping

    plateau = [0.70, 0.6999, 0.70, 0.70, 0.70, 0.70, 0.70, 0.70, 0.55, 0.50, 0.51, 0.52, 0.53, 0.54]
    varied = [0.001] * 8 + [0.1] * 6  # predictions differ between galaxies from epoch 8 on
    plain = BaselineAwareStopping(patience=2, min_epochs=0, baseline_loss=0.69, wait_for_baseline=False)
    assert run_stopping(plain, plateau, varied) == 4  # Lightning's EarlyStopping: ended on the plateau
    floor = BaselineAwareStopping(patience=2, min_epochs=6, baseline_loss=0.69, wait_for_baseline=False)
    assert run_stopping(floor, plateau, varied) == 6
    waiting = BaselineAwareStopping(patience=2, min_epochs=0, baseline_loss=0.69, wait_for_baseline=True)
    assert run_stopping(waiting, plateau, varied) == 12  # left the prior at epoch 8, best at 9, 2 more
    assert waiting.left_prior_epoch == 8
    # below the baseline by noise, with the same prediction for every galaxy, is not leaving it
    noise = BaselineAwareStopping(patience=0, min_epochs=0, baseline_loss=0.70, wait_for_baseline=True)
    assert run_stopping(noise, [0.6999, 0.70, 0.70, 0.70], [0.001] * 4) == 4
    assert noise.left_prior_epoch is None


def test_learning_rate_warms_up_then_decays_to_zero():
    from zoobot.training import learning_rate_factor

    cosine = learning_rate_factor(total_steps=100, warmup_steps=10, schedule="cosine")
    factors = [cosine(step) for step in range(101)]
    assert factors[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5) and factors[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    constant = learning_rate_factor(total_steps=100, warmup_steps=500, schedule="constant")  # warm-up capped at half
    assert constant(49) == pytest.approx(50 / 51) and constant(50) == 1.0 and constant(99) == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_epochs": -1}, "min_epochs: expected an integer >= 0, got -1"),
        ({"min_epochs": 2.5}, "min_epochs: expected an integer >= 0"),
        ({"warmup_epochs": True}, "warmup_epochs: expected an integer >= 0"),
        ({"wait_for_baseline": "yes"}, "wait_for_baseline: expected True or False"),
        ({"wait_for_baseline": 1}, "wait_for_baseline: expected True or False"),
        ({"lr_schedule": "cosin"}, r"lr_schedule: expected one of \['cosine', 'constant'\], got 'cosin'"),
        ({"gradient_clip": -1.0}, "gradient_clip: expected a finite number >= 0"),
        ({"gradient_clip": float("nan")}, "gradient_clip: expected a finite number >= 0"),
    ],
)
def test_settings_refuse_bad_values_of_the_new_knobs(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**changes)


def test_settings_defaults_and_old_records_load():
    settings = TrainSettings()
    assert (settings.patience, settings.min_epochs, settings.wait_for_baseline) == (10, 10, True)
    assert (settings.lr_schedule, settings.warmup_epochs, settings.gradient_clip) == ("constant", 0, 0.0)
    TrainSettings(epochs=1)  # min_epochs and warm-up are capped by the run, never an error
    old = {k: v for k, v in asdict(settings).items() if k not in ("min_epochs", "lr_schedule", "gradient_clip")}
    assert TrainSettings(**old) == settings


def test_cli_train_refuses_a_bad_schedule_before_training(shards, tmp_path):
    args = ["train", str(shards), "--out", str(tmp_path / "run"), "--lr-schedule", "cosin", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "lr_schedule: expected one of ['cosine', 'constant'], got 'cosin'" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()
