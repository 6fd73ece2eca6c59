"""The loop's train step on two CPU processes (gloo): its own process group, the iteration unchanged."""
import json

import pytest

from zoobot.catalog import define_experiment, save_experiment
from zoobot.checkpoints import load_model
from zoobot.loop.experiment import create_experiment, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
from zoobot.loop.iteration import run_iteration
from zoobot.loop.layout import completed_iterations, iteration_dir
from zoobot.loop.train_process import needs_process_group
from zoobot.schema import get_schema
from zoobot.shards import write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

SCHEMA = get_schema("decals-dr5:smooth-or-featured")


def test_only_more_than_one_device_or_node_needs_a_process_group():
    assert not needs_process_group(TrainSettings(devices="1"))
    assert needs_process_group(TrainSettings(devices="2")) and needs_process_group(TrainSettings(devices="1", num_nodes=2))


def test_an_iteration_trains_on_two_cpu_processes(tmp_path):
    catalog = make_synthetic_catalog(40, tmp_path / "synthetic", size=32, channels=3, seed=4)
    defined = define_experiment(catalog, SCHEMA, retirement=1, seed=0, simulation_size=20)
    save_experiment(defined, SCHEMA, tmp_path / "catalogs", {})
    write_shards(defined.simulation_labelled, defined.simulation_unlabelled, tmp_path / "shards", SCHEMA,
                 val_size=5, test_size=5, size=32, channels=3)
    settings = TrainSettings(epochs=1, progress_bar=False, accelerator="cpu", devices="2", strategy="ddp", batch_size=4)
    plan = plan_experiment(
        tmp_path / "catalogs", tmp_path / "shards", model=ModelSpec(settings, False),
        acquisition=AcquisitionSpec(function="bald"), seed=1, quick_test=True,
    )
    experiment = create_experiment(tmp_path / "exp", plan)
    metrics = run_iteration(experiment)
    assert completed_iterations(experiment) == [1] and metrics["n_acquired"] > 0
    folder = iteration_dir(experiment, 1)
    record = json.loads((folder / "train_result.json").read_text())
    assert record["settings"]["devices"] == "2" and record["epochs_trained"] == 1
    load_model(folder / record["checkpoint"])  # the checkpoint rank 0 saved, inside the iteration
    child = json.loads((folder / "train_process" / "result.json").read_text())
    assert child["epochs_trained"] == 1 and child["world_size"] == 2  # trained by two ranks
