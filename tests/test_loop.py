"""The active-learning loop end to end on tiny synthetic galaxies, including kill-and-resume."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from zoobot.catalog import define_experiment, save_experiment
from zoobot.cli import app
from zoobot.loop.experiment import create_experiment, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
from zoobot.loop import iteration as iteration_module
from zoobot.loop.iteration import run_iteration
from zoobot.loop.layout import INSTRUCTIONS_DIR, completed_iterations, identity, identity_differences, iteration_dir
from zoobot.loop.instructions import load_instructions
from zoobot.loop.ledger import REQUESTED, Ledger
from zoobot.schema import get_schema
from zoobot.shards import ShardReader, write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

SCHEMA = get_schema("decals-dr5:smooth-or-featured")
N_TRAIN, N_VAL, N_TEST, N_POOL, PER_ITERATION = 20, 10, 10, 80, 10


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """(catalog_dir, shard_dir) of a 120-galaxy simulation at 32 px."""
    root = tmp_path_factory.mktemp("simulation")
    catalog = make_synthetic_catalog(N_TRAIN + N_VAL + N_TEST + N_POOL, root / "synthetic", size=32, channels=3, seed=3)
    experiment = define_experiment(catalog, SCHEMA, retirement=1, seed=0, simulation_size=N_POOL)
    save_experiment(experiment, SCHEMA, root / "catalogs", {})
    write_shards(
        experiment.simulation_labelled, experiment.simulation_unlabelled, root / "shards", SCHEMA,
        val_size=N_VAL, test_size=N_TEST, size=32, channels=3,
    )
    return root / "catalogs", root / "shards"


def make_experiment(simulation, experiment_dir, function="bald", warm_start=False, random_fraction=0.0, **oracle_options):
    catalog_dir, shard_dir = simulation
    plan = plan_experiment(
        catalog_dir, shard_dir, model=ModelSpec(TrainSettings(epochs=1, progress_bar=False), warm_start),
        acquisition=AcquisitionSpec(function=function, random_fraction=random_fraction),
        oracle_options=oracle_options, seed=5, quick_test=True,
    )
    return create_experiment(experiment_dir, plan)


def ledger_state(experiment_dir):
    ledger = Ledger(experiment_dir / "ledger.sqlite", SCHEMA.n_answers)
    ids, votes = ledger.labelled_votes()
    state = ledger.snapshot(), ids, votes.tolist()
    ledger.close()
    return state


def test_instructions_rebuild_from_disk(simulation, tmp_path):
    make_experiment(simulation, tmp_path / "exp", function="random", warm_start=True)
    model, acquisition, instructions = load_instructions(tmp_path / "exp" / "instructions").__dict__.values()
    assert model.train.architecture == "zoobot-2019"
    assert model.warm_start
    assert acquisition.function == "random"
    assert acquisition.n_samples == 2
    assert instructions.subjects_per_iteration == PER_ITERATION
    assert instructions.schema == SCHEMA.name
    ledger = Ledger(tmp_path / "exp" / "ledger.sqlite", SCHEMA.n_answers)
    assert ledger.counts() == {"unlabelled": N_POOL, "requested": 0, "labelled": N_TRAIN}
    ledger.close()


def test_iterations_acquire_collect_and_record_metrics(simulation, tmp_path):
    experiment = make_experiment(simulation, tmp_path / "exp", warm_start=True)
    for _ in range(3):
        run_iteration(experiment)
    assert completed_iterations(experiment) == [1, 2, 3]
    assert not list((experiment / "iterations").glob(".*partial"))
    ledger = Ledger(experiment / "ledger.sqlite", SCHEMA.n_answers)
    # votes requested in iteration n arrive in iteration n + 1
    assert ledger.counts() == {"unlabelled": N_POOL - 3 * PER_ITERATION, "requested": PER_ITERATION,
                               "labelled": N_TRAIN + 2 * PER_ITERATION}
    assert ledger.requested_in(3) == ledger.ids(REQUESTED)
    ledger.close()
    metrics = pd.read_csv(experiment / "metrics.csv")
    assert metrics["n_labelled"].tolist() == [20, 30, 40]
    assert metrics["n_acquired"].tolist() == [PER_ITERATION] * 3
    assert metrics["deliveries_collected"].tolist() == [0, PER_ITERATION, PER_ITERATION]
    assert np.isfinite(metrics["test_loss"]).all()
    first = iteration_dir(experiment, 1)
    acquired = pd.read_csv(first / "acquired.csv", dtype={"id_str": str})["id_str"]
    scores = pd.read_parquet(first / "scores.parquet").set_index("id_str")["score"]
    assert len(scores) == N_POOL
    assert scores.loc[acquired].min() >= scores.drop(acquired).max()  # BALD top-k
    table = pd.read_csv(first / "acquired.csv", dtype={"id_str": str})
    assert list(table.columns) == ["id_str", "score", "random_pick", *(f"{c}_fraction" for c in SCHEMA.answer_columns)]
    assert not table["random_pick"].any()
    np.testing.assert_allclose(table["score"], scores.loc[table["id_str"]].to_numpy())
    np.testing.assert_allclose(table.filter(like="_fraction").sum(axis=1), 1.0, rtol=1e-5)
    assert np.load(first / "test_predictions.npy").shape == (N_TEST, 2, SCHEMA.n_outputs)  # quick test: 2 samples
    train_record = json.loads((iteration_dir(experiment, 2) / "train_result.json").read_text())
    assert (iteration_dir(experiment, 2) / train_record["checkpoint"]).exists()
    with pytest.raises(ValueError, match="next iteration to run is 4"):
        run_iteration(experiment, iteration=2)


def test_random_fraction_mixes_flagged_uniform_picks_into_the_batch(simulation, tmp_path):
    experiment = make_experiment(simulation, tmp_path / "exp", random_fraction=0.3)
    run_iteration(experiment)
    first = iteration_dir(experiment, 1)
    table = pd.read_csv(first / "acquired.csv", dtype={"id_str": str})
    scores = pd.read_parquet(first / "scores.parquet").set_index("id_str")["score"]
    assert len(table) == PER_ITERATION and table["id_str"].is_unique
    assert table["random_pick"].tolist() == [False] * 7 + [True] * 3  # round(0.3 * 10) explore
    top, explore = table[~table["random_pick"]], table[table["random_pick"]]
    others = scores.drop(top["id_str"])
    assert scores.loc[top["id_str"]].min() >= others.max()  # BALD's top 7 of the pool
    np.testing.assert_allclose(explore["score"], scores.loc[explore["id_str"]].to_numpy())  # scored, not chosen by score
    ledger = Ledger(experiment / "ledger.sqlite", SCHEMA.n_answers)
    assert sorted(ledger.requested_in(1)) == sorted(table["id_str"])
    ledger.close()
    again = make_experiment(simulation, tmp_path / "again", random_fraction=0.3)
    run_iteration(again)
    repeat = pd.read_csv(iteration_dir(again, 1) / "acquired.csv", dtype={"id_str": str})
    assert repeat["id_str"].tolist() == table["id_str"].tolist()  # the same seed draws the same picks
    with pytest.raises(ValueError, match=r"AcquisitionSpec.random_fraction: expected a number in \[0.0, 1.0\], got 1.5"):
        AcquisitionSpec(random_fraction=1.5)


def run_cli_until(experiment, line, iterations):
    """Run `zoobot run` in a subprocess; SIGKILL it as soon as it logs `line` (None: let it finish)."""
    command = [sys.executable, "-c", "from zoobot.cli import main; main()", "run", str(experiment),
               "--iterations", str(iterations)]
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = []
    for text in process.stdout:
        output.append(text)
        if line is not None and line in text:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    if line is None:
        assert process.returncode == 0, "".join(output)
    else:
        assert process.returncode == -signal.SIGKILL, f"never saw {line!r}:\n{''.join(output)}"


class Crash(Exception):
    """Stands in for a process dying between two steps."""


def run_crashing_before(experiment, step, monkeypatch):
    """Run one iteration in-process, dying just before ``step`` (a function of loop.iteration)."""
    def crash(*args, **kwargs):
        raise Crash(step)

    with monkeypatch.context() as patch:
        patch.setattr(iteration_module, step, crash)
        with pytest.raises(Crash):
            run_iteration(experiment)


def test_crash_at_any_step_then_resume_gives_the_same_ledger(simulation, tmp_path, monkeypatch):
    reference = make_experiment(simulation, tmp_path / "reference", duplicate_rate=0.5)
    for _ in range(3):
        run_iteration(reference)
    crashed = make_experiment(simulation, tmp_path / "crashed", duplicate_rate=0.5)
    run_crashing_before(crashed, "_request", monkeypatch)  # iteration 1: acquired, not yet requested
    run_iteration(crashed)  # iteration 1 resumes and completes
    run_crashing_before(crashed, "_train", monkeypatch)  # iteration 2: collected, not yet trained
    run_crashing_before(crashed, "_acquire", monkeypatch)  # iteration 2: trained and evaluated
    run_cli_until(crashed, "iteration 3: step collect done", iterations=2)  # one real SIGKILL
    while len(completed_iterations(crashed)) < 3:
        run_iteration(crashed)
    assert completed_iterations(crashed) == [1, 2, 3]
    assert ledger_state(crashed) == ledger_state(reference)
    snapshot, labelled_ids, votes = ledger_state(crashed)
    hidden = pd.read_parquet(simulation[0] / "simulation_context" / "oracle.parquet").set_index("id_str")
    acquired_votes = {i: v for i, v in zip(labelled_ids, votes) if i in hidden.index}
    assert len(acquired_votes) == 2 * PER_ITERATION
    for id_str, counts in acquired_votes.items():  # each vote counted exactly once despite duplicates
        assert counts == hidden.loc[id_str, SCHEMA.answer_columns].tolist()


def test_cli_simulate_and_report(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    runner = CliRunner()
    for name, extra in (("active", []), ("random", ["--baseline"])):
        result = runner.invoke(
            app, ["simulate", str(catalog_dir), str(shard_dir), str(tmp_path / name), "--total-iterations", "2",
                  "--quick-test", "--epochs", "1"] + extra,
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "active"), "--baseline", str(tmp_path / "random")])
    assert result.exit_code == 0, result.output
    assert "learning curve: baseline" in result.output
    assert "label savings of active against baseline at matched test_loss (1 paired seed)" in result.output


def test_create_instructions_needs_a_simulation(simulation, tmp_path):
    _, shard_dir = simulation
    result = CliRunner().invoke(
        app, ["create-instructions", str(tmp_path), str(shard_dir), str(tmp_path / "e")],
    )
    assert result.exit_code == 1
    assert "simulation-size" in result.output
    result = CliRunner().invoke(
        app, ["create-instructions", str(simulation[0]), str(shard_dir), str(tmp_path / "e"), "--oracle", "no-such-kind"],
    )
    assert result.exit_code == 1
    assert "oracle.kind: expected one of ['panoptes', 'simulated', 'web'], got 'no-such-kind'" in result.output
    result = CliRunner().invoke(
        app, ["create-instructions", str(simulation[0]), str(shard_dir), str(tmp_path / "e"), "--oracle", "panoptes"],
    )
    assert result.exit_code == 1
    assert "panoptes oracle: missing 'project_id', 'workflow_id', 'task_map' in the oracle config" in result.output
    assert not (tmp_path / "e").exists()


def test_shards_of_another_simulation_are_refused(simulation, tmp_path):
    """Hidden votes must match the pool, and none may sit in train/eval (label leakage)."""
    catalog_dir, shard_dir = simulation
    catalog = pd.read_parquet(catalog_dir / "labelled_catalog.parquet")
    catalog["file_loc"] = catalog["file_loc"].astype(str)
    other = define_experiment(catalog, SCHEMA, retirement=1, seed=1, simulation_size=N_POOL)
    save_experiment(other, SCHEMA, tmp_path / "other", {})
    result = CliRunner().invoke(
        app, ["create-instructions", str(tmp_path / "other"), str(shard_dir), str(tmp_path / "e")],
    )
    assert result.exit_code == 1
    assert "have no hidden votes" in result.output or "would leak" in result.output
    assert not (tmp_path / "e" / "ledger.sqlite").exists()


def test_running_a_folder_without_a_ledger_fails_clearly(simulation, tmp_path):
    experiment = make_experiment(simulation, tmp_path / "exp")
    (experiment / "ledger.sqlite").unlink()
    with pytest.raises(FileNotFoundError, match="no complete experiment"):
        run_iteration(experiment)
    assert not (experiment / "ledger.sqlite").exists()


def test_create_instructions_refuses_a_bad_plan_before_writing(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    base = ["create-instructions", str(catalog_dir), str(shard_dir), str(tmp_path / "e")]
    cases = {
        ("--acquisition", "bladd"): "AcquisitionSpec.function: expected one of ['bald', 'entropy', 'random'], "
                                    "got 'bladd' (did you mean 'bald'?)",
        ("--n-samples", "0"): "AcquisitionSpec.n_samples: expected an integer >= 1, got 0",
        ("--expected-votes", "0"): "AcquisitionSpec.expected_votes: expected an integer >= 1, got 0",
        ("--selection", "nope"): "AcquisitionSpec.selection: expected one of",
        ("--oracle", "simulatd"): "got 'simulatd' (did you mean 'simulated'?)",
        ("--delay", "-2"): "simulated oracle.delay: expected an integer >= 0, got -2",
        ("--subjects-per-iteration", "0"): "Instructions.subjects_per_iteration: expected an integer >= 1, got 0",
        ("--pretrained", "no_such_encoder.safetensors"): "--pretrained: no_such_encoder.safetensors does not exist",
        ("--layer-decay", "0"): "TrainSettings.layer_decay: expected a number in (0, 1] (1 = off), got 0.0",
    }
    for option, message in cases.items():
        result = CliRunner().invoke(app, base + list(option))
        assert result.exit_code == 1, (option, result.output)
        assert message in result.output, (option, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "e").exists(), option


def test_create_instructions_takes_the_train_steps_devices_and_a_pretrained_encoder(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    encoder = tmp_path / "encoder.safetensors"
    encoder.write_bytes(b"weights saved beforehand")  # read when iteration 1 trains, not now
    result = CliRunner().invoke(app, [
        "create-instructions", str(catalog_dir), str(shard_dir), str(tmp_path / "e"), "--accelerator", "cpu",
        "--devices", "2", "--strategy", "ddp", "--pretrained", str(encoder), "--trainable-blocks", "2",
        "--layer-decay", "0.8",
    ])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "e" / INSTRUCTIONS_DIR / "model_spec.json").read_text())["train"]
    assert (train["accelerator"], train["devices"], train["strategy"], train["num_nodes"]) == ("cpu", "2", "ddp", 1)
    assert (train["pretrained"], train["trainable_blocks"], train["layer_decay"]) == (str(encoder.resolve()), 2, 0.8)


def test_simulate_rerun_with_other_options_is_refused_or_overridden(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    base = ["simulate", str(catalog_dir), str(shard_dir), str(tmp_path / "e"), "--quick-test", "--epochs", "1"]
    assert CliRunner().invoke(app, base + ["--total-iterations", "1"]).exit_code == 0
    saved = (tmp_path / "e" / "instructions" / "acquisition_spec.json").read_text()
    result = CliRunner().invoke(app, base + ["--total-iterations", "2", "--acquisition", "entropy", "--delay", "1"])
    assert result.exit_code == 1
    assert "acquisition_spec.json: function 'bald' -> 'entropy'" in result.output
    assert "instructions.json: oracle.settings.delay 0 -> 1" in result.output
    assert (tmp_path / "e" / "instructions" / "acquisition_spec.json").read_text() == saved
    assert completed_iterations(tmp_path / "e") == [1]
    result = CliRunner().invoke(app, base + ["--total-iterations", "2", "--acquisition", "entropy", "--override"])
    assert result.exit_code == 0, result.output
    assert load_instructions(tmp_path / "e" / "instructions").acquisition.function == "entropy"
    assert completed_iterations(tmp_path / "e") == [1, 2]
    result = CliRunner().invoke(
        app, ["simulate", str(catalog_dir), str(tmp_path / "other"), str(tmp_path / "e"), "--override"]
    )
    assert result.exit_code == 1


def test_experiments_saved_with_the_flat_oracle_format_still_load(simulation, tmp_path):
    experiment = make_experiment(simulation, tmp_path / "exp", reveal_votes=3)
    path = experiment / "instructions" / "instructions.json"
    saved = json.loads(path.read_text())
    settings = saved["oracle"]["settings"]
    saved["oracle"] = {"kind": "simulated", "oracle_path": settings.pop("hidden_votes_path"), **settings}
    path.write_text(json.dumps(saved))
    oracle = load_instructions(experiment / "instructions").instructions.oracle
    assert oracle.settings["reveal_votes"] == 3
    assert oracle.settings["hidden_votes_path"].endswith("oracle.parquet")


def test_old_option_spellings_still_work_with_a_warning(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    result = CliRunner().invoke(
        app, ["create-instructions", "--catalog-dir", str(catalog_dir), "--shard-dir", str(shard_dir),
              "--experiment-dir", str(tmp_path / "e"), "--test"],
    )
    assert result.exit_code == 0, result.output
    assert "warning: --catalog-dir is deprecated" in result.output
    assert "warning: --test is deprecated and will be removed in the next release; use --quick-test" in result.output
    assert load_instructions(tmp_path / "e" / "instructions").acquisition.n_samples == 2  # the quick test
    result = CliRunner().invoke(
        app, ["create-instructions", str(catalog_dir), "--catalog-dir", str(catalog_dir), str(shard_dir)]
    )
    assert result.exit_code == 1
    assert "--catalog-dir is the old spelling of CATALOG_DIR; give only CATALOG_DIR" in result.output


def run_in_process(experiments, total_iterations, parallel=None):
    """Stands in for side_by_side.run_side_by_side (subprocesses) in the fast test."""
    for experiment in experiments:
        while len(completed_iterations(experiment)) < total_iterations:
            run_iteration(experiment)


def test_compare_plans_paired_seeds_and_resumes(simulation, tmp_path, monkeypatch):
    catalog_dir, shard_dir = simulation
    monkeypatch.setattr("zoobot.cli.compare.run_side_by_side", run_in_process)
    out = tmp_path / "comparison"
    base = ["compare", str(catalog_dir), str(shard_dir), str(out), "--acquisitions", "bald,random", "--seeds", "2",
            "--quick-test", "--epochs", "1"]
    assert CliRunner().invoke(app, base + ["--total-iterations", "1"]).exit_code == 0
    runs = json.loads((out / "comparison.json").read_text())["runs"]
    assert [(r["acquisition"], r["seed"]) for r in runs] == [("bald", 42), ("random", 42), ("bald", 43), ("random", 43)]
    identities = {r["folder"]: identity(out / r["folder"]) for r in runs}
    assert identity_differences(identities) == []
    changed = CliRunner().invoke(app, base + ["--total-iterations", "2", "--subjects-per-iteration", "5"])
    assert changed.exit_code == 1 and "subjects_per_iteration 10 -> 5" in changed.output
    assert CliRunner().invoke(app, base + ["--total-iterations", "2"]).exit_code == 0
    assert all(completed_iterations(out / r["folder"]) == [1, 2] for r in runs)


@pytest.mark.slow
def test_compare_runs_paired_seeds_side_by_side_and_resumes(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    out = tmp_path / "comparison"
    base = ["compare", str(catalog_dir), str(shard_dir), str(out), "--acquisitions", "bald,random", "--seeds", "1",
            "--seed", "7", "--quick-test", "--epochs", "1", "--parallel", "2"]
    result = CliRunner().invoke(app, base + ["--total-iterations", "1"])
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "comparison.json").read_text())["runs"]
    assert [(r["acquisition"], r["seed"]) for r in runs] == [("bald", 7), ("random", 7)]
    for run in runs:
        assert completed_iterations(out / run["folder"]) == [1]
    plans = [load_instructions(out / r["folder"] / "instructions") for r in runs]
    assert [p.acquisition.function for p in plans] == ["bald", "random"]
    assert {p.instructions.seed for p in plans} == {7}
    identities = {r["folder"]: identity(out / r["folder"]) for r in runs}
    assert identity_differences(identities) == []
    again = CliRunner().invoke(app, base + ["--total-iterations", "1"])  # nothing left to run
    assert again.exit_code == 0, again.output
    assert all(completed_iterations(out / r["folder"]) == [1] for r in runs)
    bad = CliRunner().invoke(app, base + ["--acquisitions", "bald,bladd"])
    assert bad.exit_code == 1 and "expected distinct names from ['bald', 'entropy', 'random']" in bad.output


def test_identity_differences_name_what_differs():
    same = {"schema": "s", "test_ids_sha256": "a", "oracle": {"kind": "simulated", "delay": 0}}
    other = {**same, "test_ids_sha256": "b", "oracle": {"kind": "simulated", "delay": 1}}
    differences = identity_differences({"bald": same, "random": other, "old": None})
    assert "old records no identity (made before test splits); rerun it" in differences
    assert "test_ids_sha256: bald has 'a', random has 'b'" in differences
    assert any(d.startswith("oracle: bald has") for d in differences)
    assert identity_differences({"a": same, "b": dict(same)}) == []


def test_expected_votes_default_to_what_the_oracle_delivers(simulation, tmp_path):
    catalog_dir, shard_dir = simulation
    revealing = plan_experiment(catalog_dir, shard_dir, oracle_options={"reveal_votes": 5})
    assert revealing.acquisition.expected_votes == 5
    reader = ShardReader(shard_dir)
    train_votes = reader.votes(reader.split_positions("train")).sum(axis=1)  # one question: every vote
    assert plan_experiment(catalog_dir, shard_dir).acquisition.expected_votes == int(np.median(train_votes))
    with pytest.warns(UserWarning, match="expected_votes=40, but the oracle delivers about 5 votes per galaxy"):
        plan_experiment(catalog_dir, shard_dir, acquisition=AcquisitionSpec(expected_votes=40),
                        oracle_options={"reveal_votes": 5})
    result = CliRunner().invoke(app, ["create-instructions", str(catalog_dir), str(shard_dir), str(tmp_path / "e"),
                                      "--reveal-votes", "5", "--expected-votes", "40"])
    assert result.exit_code == 0 and "but the oracle delivers about 5 votes per galaxy" in result.output
