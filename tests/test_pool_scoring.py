"""Scoring on Lightning's predict loop: work units, resume, and 2 processes (gloo) equal to one."""
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoobot.pool_scoring as pool_scoring
from zoobot.catalog import define_experiment
from zoobot.models import create_model
from zoobot.pool_scoring import ScoringJob, score_shards
from zoobot.predict import predict_batches
from zoobot.schema import DECALS_DR5, schema_to_dict
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

SIZE = 32
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic shards: 10 labelled, 26 pool galaxies at 32 px; a tiny model and its checkpoint."""
    folder = tmp_path_factory.mktemp("pool_scoring")
    catalog = make_synthetic_catalog(36, folder / "synthetic", size=SIZE, seed=3)
    experiment = define_experiment(catalog, DECALS_DR5, seed=0)
    labelled, pool = experiment.labelled.iloc[:10], experiment.labelled.iloc[10:]
    write_shards(labelled, pool, folder / "shards", DECALS_DR5, val_size=2, test_size=2, size=SIZE)
    torch.manual_seed(0)
    model = create_model("zoobot-2019", DECALS_DR5, channels=3, dropout_rate=0.3, image_size=SIZE).eval()
    checkpoint = folder / "model.ckpt"
    torch.save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model_config": model.config, "schema": schema_to_dict(DECALS_DR5),
                             "settings": asdict(TrainSettings(architecture="zoobot-2019"))},
    }, checkpoint)
    return {"folder": folder, "shards": folder / "shards", "model": model, "checkpoint": checkpoint}


JOB = dict(n_samples=4, batch_size=4, unit_size=6, acquisition="bald", top_k=5, seed=7)


def test_units_resume_and_match_an_uninterrupted_run(data, tmp_path, monkeypatch):
    reader = ShardReader(data["shards"])
    positions = reader.split_positions("pool")
    job = ScoringJob(samples=True, **JOB)
    whole = score_shards(data["model"], reader, positions, job, tmp_path / "whole")
    assert whole.n_units == 5 and whole.n_units_skipped == 0 and whole.n_galaxies == 26
    catalog = pd.read_parquet(whole.catalog)
    assert list(catalog["id_str"]) == list(reader.ids("pool"))
    samples = np.load(whole.samples)
    assert samples.shape == (26, 4, DECALS_DR5.n_answers) and not np.allclose(samples[:, 0], samples[:, 1])  # masks differ
    scores = pd.read_parquet(whole.scores)
    best = scores.sort_values(["score", "id_str"], ascending=[False, True]).head(5)
    assert list(whole.selection.ids) == list(best["id_str"])  # merged unit top-k lists = global top-k

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the merge")

    monkeypatch.setattr(pool_scoring, "merge_parts", killed)
    with pytest.raises(KeyboardInterrupt):
        score_shards(data["model"], reader, positions, job, tmp_path / "resumed")
    monkeypatch.undo()
    for path in (tmp_path / "resumed" / "parts").glob("unit_000003*"):
        path.unlink()  # as if killed while unit 3 was scored
    resumed = score_shards(data["model"], reader, positions, job, tmp_path / "resumed")
    assert resumed.n_units_skipped == 4
    pd.testing.assert_frame_equal(pd.read_parquet(resumed.catalog), catalog)
    np.testing.assert_array_equal(np.load(resumed.samples), samples)
    assert list(resumed.selection.ids) == list(whole.selection.ids)
    assert not (tmp_path / "resumed" / "parts").exists()


def test_a_rerun_with_other_options_refuses_stale_parts(data, tmp_path, monkeypatch):
    reader = ShardReader(data["shards"])
    positions = reader.split_positions("pool")
    monkeypatch.setattr(pool_scoring, "merge_parts", lambda *a, **k: None)
    score_shards(data["model"], reader, positions, ScoringJob(**JOB), tmp_path)
    with pytest.raises(ValueError, match="different scoring job"):
        score_shards(data["model"], reader, positions, ScoringJob(**{**JOB, "n_samples": 5}), tmp_path)


def test_one_unit_scores_like_predict_batches(data, tmp_path):
    reader = ShardReader(data["shards"])
    positions = reader.split_positions("pool")
    job = ScoringJob(n_samples=3, batch_size=8, unit_size=100, seed=2, samples=True, catalog=False)
    result = score_shards(data["model"], reader, positions, job, tmp_path)
    torch.manual_seed(2 * 1_000_003)  # unit 0's seed
    expected = np.concatenate([p for _, p in predict_batches(data["model"], reader, split="pool", n_samples=3, batch_size=8)])
    np.testing.assert_array_equal(np.load(result.samples), expected)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def cli_predict(data, out: Path, devices: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    command = [
        sys.executable, "-m", "zoobot", "--threads", "1", "predict", str(data["checkpoint"]), "--shard-dir",
        str(data["shards"]), "--split", "pool", "--out", str(out), "--n-samples", "4", "--batch-size", "4",
        "--unit-size", "6", "--precision", "32-true", "--acquisition", "bald", "--top-k", "5", "--seed", "7",
        "--save-samples", "--accelerator", "cpu", "--devices", str(devices),
        "--strategy", "ddp" if devices > 1 else "auto",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_on_gloo_equal_one(data, tmp_path):
    one = cli_predict(data, tmp_path / "one.parquet", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli_predict(data, tmp_path / "two.parquet", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two.parquet"), pd.read_parquet(tmp_path / "one.parquet"))
    np.testing.assert_array_equal(np.load(tmp_path / "two_samples.npy"), np.load(tmp_path / "one_samples.npy"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "two_scores.parquet"), pd.read_parquet(tmp_path / "one_scores.parquet")
    )
    acquired = pd.read_csv(tmp_path / "one_acquired.csv", dtype={"id_str": str})
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two_acquired.csv", dtype={"id_str": str}), acquired)
    assert len(acquired) == 5
    assert not (tmp_path / "two.parquet.parts").exists()
