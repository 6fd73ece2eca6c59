"""Training: data, augmentation, checkpoints with their config, warm starts, bf16, DDP, `zoobot train`."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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
    again = runner.invoke(app, args)  # refuses to mix with the earlier checkpoints
    assert again.exit_code == 1 and "overwrite" in again.output
    bad_schema = runner.invoke(app, [*args, "--schema", "gz2", "--overwrite"])
    assert bad_schema.exit_code == 1 and "no vote columns" in bad_schema.output
