"""Iteration step timings in metrics.json; `report`, `status` and `--help` run without PyTorch or Lightning."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoobot.catalog import define_experiment, save_experiment
from zoobot.loop.experiment import create_experiment, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
from zoobot.loop.iteration import MODEL_STEPS, run_iteration, step_overhead
from zoobot.loop.layout import iteration_dir
from zoobot.schema import get_schema
from zoobot.shards import write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

SCHEMA = get_schema("decals-dr5:smooth-or-featured")
SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "lightning", "timm", "torchvision")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """One complete iteration of a 40-galaxy simulation at 32 px."""
    root = tmp_path_factory.mktemp("light")
    catalog = make_synthetic_catalog(40, root / "synthetic", size=32, channels=3, seed=4)
    defined = define_experiment(catalog, SCHEMA, retirement=1, seed=0, simulation_size=20)
    save_experiment(defined, SCHEMA, root / "catalogs", {})
    write_shards(defined.simulation_labelled, defined.simulation_unlabelled, root / "shards", SCHEMA,
                 val_size=5, test_size=5, size=32, channels=3)
    plan = plan_experiment(
        root / "catalogs", root / "shards", model=ModelSpec(TrainSettings(epochs=1, progress_bar=False), False),
        acquisition=AcquisitionSpec(function="bald"), seed=1, quick_test=True,
    )
    folder = create_experiment(root / "exp", plan)
    run_iteration(folder)
    return folder


def test_metrics_time_every_step(experiment):
    metrics = json.loads((iteration_dir(experiment, 1) / "metrics.json").read_text())
    steps = metrics["step_seconds"]
    assert set(steps) == {"startup", "open", "collect", "ledger", "train", "load_model", "evaluate", "acquire",
                          "request", "identity"}
    assert all(seconds >= 0 for seconds in steps.values()) and steps["train"] > 0
    assert 0 < metrics["overhead_fraction"] < 1


def test_overhead_is_what_is_not_training_evaluation_or_scoring():
    seconds = {"startup": 1.0, "collect": 1.0, "train": 6.0, "evaluate": 1.0, "acquire": 1.0}
    assert step_overhead(seconds)["overhead_fraction"] == pytest.approx(0.2)
    assert MODEL_STEPS == ("train", "evaluate", "acquire")


def run_light(*args) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the CLI in a fresh interpreter; returns the result and the heavy modules it imported."""
    code = (
        "import sys\nfrom zoobot.cli import main\nsys.argv = ['zoobot', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\nsys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    heavy = result.stderr.rsplit("HEAVY", 1)[1].strip()
    return result, eval(heavy)


@pytest.mark.parametrize("args", [["--help"], ["report", "--help"], ["status", "--help"]])
def test_help_imports_no_torch(args):
    result, heavy = run_light(*args)
    assert result.returncode == 0, result.stderr
    assert heavy == []


def test_status_and_report_import_no_torch(experiment, tmp_path):
    result, heavy = run_light("status", str(experiment))
    assert result.returncode == 0, result.stderr
    assert "1 iteration complete" in result.stdout and "labelled" in result.stdout
    assert "last test loss" in result.stdout
    assert heavy == []
    result, heavy = run_light("report", str(experiment), "--out", str(tmp_path / "curve.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curve.png").exists()
    assert heavy == []


def test_status_of_a_folder_that_is_no_experiment(tmp_path):
    result, heavy = run_light("status", str(tmp_path))
    assert result.returncode == 1 and "no ledger.sqlite" in result.stderr and heavy == []
