"""The Panoptes oracle against a local stand-in of the Panoptes API, fault by fault.

The real panoptes-client talks to ``panoptes_standin.PanoptesStandIn`` on 127.0.0.1; volunteers
post classifications to it as the Zooniverse front end does. Each known failure mode of a live
run has a test: 5xx, a response lost after the call took effect, a lost image upload, a stale
subject set, the per-user subject limit, duplicated and overlapping classifications, a kill
during an upload or a collection.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from panoptes_standin import FAST, TASK_MAP, PanoptesStandIn, Volunteers, oracle_settings, write_pool_catalog
from zoobot.checks import SettingsError
from zoobot.loop.ledger import LABELLED, REQUESTED, Ledger
from zoobot.oracles import open_oracle, oracle_settings as make_settings
from zoobot.oracles.panoptes_session import PanoptesError, TransientError
from zoobot.oracles.panoptes_upload import EXPERIMENT_TAG, SubjectLimitError
from zoobot.schema import SMOOTH_OR_FEATURED

SCHEMA = SMOOTH_OR_FEATURED
IDS = [f"g{i:02d}" for i in range(6)]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def standin():
    server = PanoptesStandIn(hang_s=0.4)
    yield server
    server.close()


@pytest.fixture
def credentials(standin, monkeypatch):
    monkeypatch.setenv("PANOPTES_USERNAME", standin.username)
    monkeypatch.setenv("PANOPTES_PASSWORD", standin.password)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A pool catalog with PNG images, shared by the tests of this module (none changes it)."""
    return write_pool_catalog(tmp_path_factory.mktemp("pool"), IDS)


def open_panoptes(standin, catalog, folder, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    return open_oracle("panoptes", oracle_settings(standin, catalog, **overrides), folder, SCHEMA)


def assert_uploaded_once(standin, ids):
    """Each galaxy has exactly one subject, with its image, in exactly one set, once."""
    members = [s for set_id in standin.subject_sets for s in standin.set_members(set_id)]
    assert len(members) == len(set(members)), "a subject was linked twice"
    for id_str in ids:
        subjects = standin.subjects_of(id_str)
        assert len(subjects) == 1, f"{id_str} has subjects {subjects}"
        assert standin.has_media(subjects[0]), f"{id_str}'s image is missing"
        assert subjects[0] in members, f"{id_str} is in no subject set"
    assert len(standin.subjects) == len(ids)
    assert not standin.unspent(), "a fault never fired"


# -- request ----------------------------------------------------------------------------------------


def test_request_uploads_each_galaxy_once_with_image_and_metadata(standin, credentials, tmp_path):
    catalog = write_pool_catalog(tmp_path / "catalogs", IDS, fits_ids={"g05"})
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS[:4], 1)
    oracle.request(IDS[2:], 2)  # g02, g03 keep iteration 1
    oracle.request(IDS, 2)
    assert_uploaded_once(standin, IDS)
    sets = {s["display_name"]: s for s in standin.subject_sets.values()}
    assert sorted(sets) == ["zoobot exp iteration 1", "zoobot exp iteration 2"]
    assert sorted(standin.workflow_sets) == sorted(standin.subject_sets)
    first = [standin.subjects[s]["metadata"]["id_str"] for s in sets["zoobot exp iteration 1"]["subjects"]]
    assert first == IDS[:4]
    metadata = standin.subjects[standin.subjects_of("g02")[0]]["metadata"]
    assert metadata["iteration"] == 1 and metadata["ra"] == pytest.approx(150.4) and EXPERIMENT_TAG in metadata
    png = standin.media[standin.subjects_of("g00")[0] + "-0"]
    assert png == (Path(catalog).parent / "images" / "g00.png").read_bytes()  # PNG sent as it is
    fits_subject = standin.subjects_of("g05")[0]
    assert standin.subjects[fits_subject]["locations"] == ["image/png"]  # FITS converted to PNG
    assert Image.open(io.BytesIO(standin.media[fits_subject + "-0"])).size == (424, 424)
    oracle.close()


def test_a_5xx_on_create_is_retried_without_duplicates(standin, credentials, catalog, tmp_path):
    standin.fault("POST", "/api/subjects", "5xx", times=2)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_a_create_that_timed_out_after_success_is_found_not_made_again(standin, credentials, catalog, tmp_path):
    standin.fault("POST", "/api/subjects", "timeout", times=1, skip=2)  # the third create: made, answer lost
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    assert standin.n_calls("POST", "/api/subjects") == len(IDS)
    assert standin.n_calls("PUT", r"/api/subjects/\d+") == 1  # a fresh upload location for the found one
    oracle.close()


def test_a_subject_set_create_that_timed_out_is_found(standin, credentials, catalog, tmp_path):
    standin.fault("POST", "/api/subject_sets", "timeout")
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS[:2], 1)
    assert len(standin.subject_sets) == 1
    assert_uploaded_once(standin, IDS[:2])
    oracle.close()


@pytest.mark.parametrize("kind", ["lose_media", "5xx", "timeout"])
def test_a_failed_image_upload_is_detected_and_sent_again(standin, credentials, catalog, tmp_path, kind):
    standin.fault("PUT", r"/upload/\w+", kind, times=2)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_an_image_that_never_arrives_stops_the_request_and_a_rerun_finishes_it(standin, credentials, catalog, tmp_path):
    standin.fault("PUT", r"/upload/\w+", "lose_media", times=99)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retries=1)
    with pytest.raises(PanoptesError, match="did not arrive after 2 uploads; run again"):
        oracle.request(IDS, 1)
    standin.faults.clear()
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_a_stale_subject_set_is_reloaded_and_linked(standin, credentials, catalog, tmp_path):
    standin.fault("POST", r"/api/subject_sets/\d+/links/subjects", "stale", times=2)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", link_batch_size=4)
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    assert standin.n_calls("GET", r"/api/subject_sets/\d+") == 2  # one reload per stale answer
    assert standin.n_calls("POST", r"/api/subject_sets/\d+/links/subjects") == 4  # 2 batches + 2 stale
    oracle.close()


def test_a_link_that_timed_out_after_success_is_not_sent_again(standin, credentials, catalog, tmp_path):
    standin.fault("POST", r"/api/subject_sets/\d+/links/subjects", "timeout")
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS, 1)  # the stand-in refuses to link a subject twice (422)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_the_subject_limit_stops_with_a_clear_message_and_a_rerun_resumes(standin, credentials, catalog, tmp_path):
    standin.subject_limit = 4
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    with pytest.raises(SubjectLimitError) as error:
        oracle.request(IDS, 1)
    message = str(error.value)
    assert "User has uploaded 4 subjects of 4 maximum" in message
    assert "4 of the 6 galaxies requested in iteration 1 are uploaded" in message
    assert "contact@zooniverse.org" in message and "run again" in message
    assert len(standin.set_members(next(iter(standin.subject_sets)))) == 4  # what was uploaded is linked
    standin.subject_limit = None  # Zooniverse raised the limit
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_a_5xx_that_lasts_stops_the_request_and_a_rerun_finishes_it(standin, credentials, catalog, tmp_path):
    standin.fault("POST", "/api/subjects", "5xx", times=3, skip=2)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retries=2)
    with pytest.raises(TransientError, match="still failing after 3 attempts.*run again later"):
        oracle.request(IDS, 1)
    oracle.close()
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    oracle.close()


def test_unknown_galaxies_and_missing_images_are_refused_before_uploading(standin, credentials, tmp_path):
    catalog = write_pool_catalog(tmp_path / "catalogs", IDS)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    with pytest.raises(KeyError, match="no image for nope"):
        oracle.request(["g00", "nope"], 1)
    (Path(catalog).parent / "images" / "g01.png").unlink()
    with pytest.raises(FileNotFoundError, match="images of g01"):
        oracle.request(["g00", "g01"], 1)
    assert not standin.subjects
    oracle.close()


# -- collect -----------------------------------------------------------------------------------------


def uploaded(standin, oracle, ids, iteration=1):
    oracle.request(ids, iteration)
    return {id_str: standin.subjects_of(id_str)[0] for id_str in ids}


def test_collection_counts_each_volunteer_once_and_skips_empty_answers(standin, credentials, catalog, tmp_path):
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retirement_limit=10)
    subject = uploaded(standin, oracle, IDS[:2])
    people = Volunteers(standin)
    people.classify(subject["g00"], 0, user="ann")
    people.classify(subject["g00"], 1, user="ann")  # ann again: not counted
    people.classify(subject["g00"], 1, session="abc")  # logged out
    people.classify(subject["g00"], 1, session="abc")  # the same logged-out session again
    people.classify(subject["g00"], 0, session="def")  # another logged-out volunteer
    people.classify(subject["g00"], None, user="bob")  # skipped the question
    people.classify(subject["g00"], 0, user="bob")  # bob's real answer still counts
    people.classify(subject["g01"], 1, user="ann", annotations=[])  # nothing at all
    deliveries = oracle.collect(2)
    assert [(d.delivery_id, d.counts, d.complete) for d in deliveries] == [("panoptes:g00:1", (3, 1), False)]
    report = oracle.report()
    assert report["classifications"] == {"counted": 4, "duplicate": 2, "empty": 2, "late": 0}
    oracle.close()


def test_unknown_answers_are_counted_and_reported_not_guessed(standin, credentials, catalog, tmp_path, caplog):
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    subject = uploaded(standin, oracle, IDS[:1])
    people = Volunteers(standin)
    people.classify(subject["g00"], 7, user="ann")  # no answer 7 in T0
    people.classify(subject["g00"], 1, user="bob", annotations=[{"task": "T0", "value": 1}, {"task": "T9", "value": 0}])
    with caplog.at_level("WARNING", logger="zoobot.oracles"):
        deliveries = oracle.collect(2)
    assert [d.counts for d in deliveries] == [(0, 1)]  # bob's T0 vote; ann's 7 is not guessed
    report = oracle.report()
    assert report["unknown_answers"] == 2
    assert "T0: 7 (1)" in report["unknown_answers_seen"] and "T9 (task not in the map) (1)" in report["unknown_answers_seen"]
    assert "not in the task map" in caplog.text and "T0: 7 (1)" in caplog.text
    oracle.close()


def test_overlapping_pages_and_a_5xx_count_no_classification_twice(standin, credentials, catalog, tmp_path):
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", page_size=3, retirement_limit=40)
    subject = uploaded(standin, oracle, IDS[:3])
    people = Volunteers(standin)
    for n in range(5):
        for id_str in IDS[:3]:
            people.classify(subject[id_str], n % 2, user=f"v{n}")
    standin.fault("GET", "/api/classifications/project", "overlap", times=3, skip=1)
    standin.fault("GET", "/api/classifications/project", "5xx", times=1, skip=2)
    deliveries = oracle.collect(2)
    assert not standin.unspent()
    assert {d.id_str: d.counts for d in deliveries} == {i: (3, 2) for i in IDS[:3]}
    assert oracle.report()["classifications"]["counted"] == 15
    assert oracle.report()["last_classification_id"] == int(standin.classifications[-1]["id"])
    oracle.close()


def test_partial_votes_arrive_until_the_retirement_limit(standin, credentials, catalog, tmp_path):
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retirement_limit=3)
    subject = uploaded(standin, oracle, IDS[:2])
    ledger = Ledger(tmp_path / "ledger.sqlite", SCHEMA.n_answers, create=True)
    ledger.add_galaxies(IDS[:2])
    ledger.mark_requested(IDS[:2], 1)
    people = Volunteers(standin)
    people.classify(subject["g00"], 0, user="a")
    people.classify(subject["g00"], 1, user="b")
    ledger.record(oracle.collect(2), 2)
    assert ledger.ids(REQUESTED) == IDS[:2]
    people.classify(subject["g00"], 1, user="c")  # the third: complete
    people.classify(subject["g00"], 0, user="d")  # late: beyond the limit
    people.classify(subject["g01"], 0, user="a")
    third = oracle.collect(3)
    assert [(d.delivery_id, d.counts, d.complete) for d in third] == [
        ("panoptes:g00:2", (0, 1), True), ("panoptes:g01:1", (1, 0), False)]
    ledger.record(third, 3)
    assert ledger.ids(LABELLED) == ["g00"] and ledger.ids(REQUESTED) == ["g01"]
    people.classify(subject["g00"], 0, user="e")  # still late
    assert oracle.collect(4) == []
    assert oracle.report()["classifications"]["late"] == 2
    ids, votes = ledger.labelled_votes()
    assert ids == ["g00"] and votes.tolist() == [[1, 2]]
    ledger.close()
    oracle.close()


def test_a_galaxy_retired_by_panoptes_is_complete(standin, credentials, catalog, tmp_path):
    standin.retire_after = 2  # the workflow's own retirement rule, below the oracle's limit
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retirement_limit=40)
    subject = uploaded(standin, oracle, IDS[:2])
    people = Volunteers(standin)
    people.classify(subject["g00"], 0, user="a")
    people.classify(subject["g00"], 0, user="b")
    people.classify(subject["g01"], 1, user="a")
    deliveries = oracle.collect(2)
    assert [(d.id_str, d.counts, d.complete) for d in deliveries] == [("g00", (2, 0), True), ("g01", (0, 1), False)]
    oracle.close()


def test_collect_hands_the_same_deliveries_over_again_in_the_same_iteration(standin, credentials, catalog, tmp_path):
    oracle = open_panoptes(standin, catalog, tmp_path / "exp", retirement_limit=5)
    subject = uploaded(standin, oracle, IDS[:2])
    people = Volunteers(standin)
    people.classify(subject["g00"], 0, user="a")
    first = oracle.collect(2)
    people.classify(subject["g00"], 1, user="b")
    again = oracle.collect(2)
    assert [d.delivery_id for d in again] == ["panoptes:g00:1", "panoptes:g00:2"]
    assert again[0] == first[0]
    assert oracle.collect(3) == []
    oracle.close()


def test_collect_before_any_request_does_not_log_in(standin, catalog, tmp_path, monkeypatch):
    monkeypatch.delenv("PANOPTES_USERNAME", raising=False)
    monkeypatch.delenv("PANOPTES_PASSWORD", raising=False)
    oracle = open_panoptes(standin, catalog, tmp_path / "exp")
    assert oracle.collect(1) == []
    assert standin.calls == []
    oracle.close()


# -- credentials ---------------------------------------------------------------------------------------


def test_the_password_is_never_stored_logged_or_shown(standin, credentials, catalog, tmp_path, caplog, monkeypatch):
    caplog.set_level("DEBUG")
    experiment = tmp_path / "exp"
    standin.fault("POST", "/api/subjects", "timeout")
    standin.fault("PUT", r"/upload/\w+", "5xx")
    oracle = open_panoptes(standin, catalog, experiment)
    subject = uploaded(standin, oracle, IDS[:3])
    Volunteers(standin).classify(subject["g00"], 0, user="a")
    oracle.collect(2)
    oracle.close()
    assert not standin.unspent()
    errors = []
    for password in ("wrong-" + standin.password, standin.password + "x"):
        monkeypatch.setenv("PANOPTES_PASSWORD", password)
        oracle = open_panoptes(standin, catalog, tmp_path / "other")
        with pytest.raises(PanoptesError) as error:
            oracle.request(IDS[:1], 1)
        errors.append((password, str(error.value)))
        oracle.close()
    for password, text in errors:
        assert "login as 'zoobot-tester'" in text and "Invalid login or password" in text
        assert password not in text and standin.password not in text
    assert standin.password not in caplog.text
    for path in experiment.rglob("*"):
        if path.is_file():
            assert standin.password.encode() not in path.read_bytes(), path


def test_credentials_come_from_a_file_or_the_environment(standin, catalog, tmp_path, monkeypatch):
    monkeypatch.delenv("PANOPTES_USERNAME", raising=False)
    monkeypatch.delenv("PANOPTES_PASSWORD", raising=False)
    oracle = open_panoptes(standin, catalog, tmp_path / "a")
    with pytest.raises(PanoptesError, match="no Panoptes credentials: set PANOPTES_USERNAME and PANOPTES_PASSWORD"):
        oracle.request(IDS[:1], 1)
    oracle.close()
    secrets = tmp_path / "panoptes.yaml"
    secrets.write_text(f"username: {standin.username}\npassword: {standin.password}\n")
    oracle = open_panoptes(standin, catalog, tmp_path / "b", credentials_file=str(secrets))
    oracle.request(IDS[:1], 1)
    assert len(standin.subjects) == 1
    oracle.close()
    secrets.write_text(f"user: {standin.username}\n")
    oracle = open_panoptes(standin, catalog, tmp_path / "c", credentials_file=str(secrets))
    with pytest.raises(PanoptesError, match="expected a mapping with 'username' and 'password', got \\['user'\\]"):
        oracle.request(IDS[1:2], 1)
    oracle.close()


# -- settings --------------------------------------------------------------------------------------------


def test_bad_settings_are_refused_naming_the_field(standin, catalog, tmp_path):
    good = oracle_settings(standin, catalog)
    cases = {
        "project_id": ("my-project", "panoptes oracle.project_id: expected a Panoptes id"),
        "retirement_limit": (0, "panoptes oracle.retirement_limit: expected an integer >= 1, got 0"),
        "subject_set_name": ("zoobot {run}", "panoptes oracle.subject_set_name: expected a name pattern with {iteration}"),
        "endpoint": ("www.zooniverse.org", "panoptes oracle.endpoint: expected a URL"),
        "task_map": ({"schema": "gz2"}, "panoptes oracle.task_map: missing 'tasks'"),
    }
    for field, (value, message) in cases.items():
        with pytest.raises(SettingsError, match=message.replace("{", r"\{").replace("}", r"\}")):
            make_settings("panoptes", {**good, field: value})
    wrong_schema = {**good, "task_map": {"schema": "gz2", "tasks": {
        "T0": {"question": "t01_smooth_or_features", "answers": ["a01_smooth", "a02_features_or_disk"]}}}}
    with pytest.raises(ValueError, match="expected a task map for the experiment's schema 'smooth-or-featured', got one for 'gz2'"):
        open_oracle("panoptes", wrong_schema, tmp_path, SCHEMA)


def test_for_experiment_reads_the_task_map_file_and_names_missing_fields(tmp_path):
    from zoobot.oracles.panoptes_settings import PanoptesSettings

    (tmp_path / "unlabelled_catalog.parquet").write_bytes(b"")
    with pytest.raises(SettingsError, match="missing 'workflow_id', 'task_map' in the oracle config"):
        PanoptesSettings.for_experiment(tmp_path, 0, project_id=1)
    task_map = tmp_path / "tasks.yaml"
    task_map.write_text("schema: smooth-or-featured\ntasks:\n  T0:\n    question: smooth-or-featured\n    answers: [smooth, featured]\n")
    settings = PanoptesSettings.for_experiment(tmp_path, 0, project_id=1, workflow_id="22", task_map=str(task_map))
    assert settings.task_map == TASK_MAP and settings.project_id == "1"
    assert settings.catalog_path == str((tmp_path / "unlabelled_catalog.parquet").resolve())
    with pytest.raises(SettingsError, match="unknown settings \\['workflow'\\]"):
        PanoptesSettings.for_experiment(tmp_path, 0, project_id=1, workflow=2, workflow_id=2, task_map=str(task_map))


# -- kill and resume ---------------------------------------------------------------------------------------


CHILD = textwrap.dedent("""
    import json, sys
    from zoobot.oracles import open_oracle
    from zoobot.schema import SMOOTH_OR_FEATURED
    settings, folder, action = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    oracle = open_oracle("panoptes", settings, folder, SMOOTH_OR_FEATURED)
    if action == "request":
        oracle.request(json.loads(sys.argv[4]), 1)
    else:
        print(len(oracle.collect(2)))
""")


def run_until_killed(standin, settings, folder, action, *args, method, path, skip):
    """Run request/collect in a child process; the stand-in SIGKILLs it right after the
    ``skip + 1``-th matching call took effect, before the child reads the answer."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(settings), str(folder), action, *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    standin.fault(method, path, "hook", skip=skip, hook=lambda: os.kill(child.pid, signal.SIGKILL))
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]


def test_an_upload_killed_midway_resumes_without_uploading_anything_twice(standin, credentials, catalog, tmp_path):
    settings = oracle_settings(standin, catalog)
    folder = tmp_path / "exp"
    folder.mkdir()
    run_until_killed(standin, settings, folder, "request", json.dumps(IDS),
                     method="POST", path="/api/subjects", skip=3)  # the 4th subject exists, its id is lost
    assert len(standin.subjects) == 4 and not any(standin.set_members(s) for s in standin.subject_sets)
    oracle = open_oracle("panoptes", settings, folder, SCHEMA)
    oracle.request(IDS, 1)
    assert_uploaded_once(standin, IDS)
    assert standin.n_calls("POST", "/api/subjects") == len(IDS)
    oracle.close()


def test_a_collection_killed_midway_counts_no_vote_twice(standin, credentials, catalog, tmp_path):
    settings = oracle_settings(standin, catalog, page_size=4, retirement_limit=40)
    folder = tmp_path / "exp"
    oracle = open_panoptes(standin, catalog, folder, page_size=4, retirement_limit=40)
    subject = uploaded(standin, oracle, IDS[:3])
    oracle.close()
    people = Volunteers(standin)
    rng = np.random.default_rng(1)
    expected = {i: [0, 0] for i in IDS[:3]}
    for n in range(5):
        for id_str in IDS[:3]:
            answer = int(rng.integers(0, 2))
            expected[id_str][answer] += 1
            people.classify(subject[id_str], answer, user=f"v{n}")
    run_until_killed(standin, settings, folder, "collect",
                     method="GET", path="/api/classifications/project", skip=2)  # killed reading page 3 of 4
    oracle = open_oracle("panoptes", settings, folder, SCHEMA)
    killed = oracle.report()
    assert 0 < killed["classifications"]["counted"] < 15, killed  # pages 1 and 2 were stored
    assert killed["last_classification_id"] == 0 and killed["votes_delivered"] == 0
    ledger = Ledger(tmp_path / "ledger.sqlite", SCHEMA.n_answers, create=True)
    ledger.add_galaxies(IDS[:3])
    ledger.mark_requested(IDS[:3], 1)
    ledger.record(oracle.collect(2), 2)
    ledger.record(oracle.collect(2), 2)
    totals = {i: [0, 0] for i in IDS[:3]}
    for delivery in oracle.collect(2):
        totals[delivery.id_str] = [a + b for a, b in zip(totals[delivery.id_str], delivery.counts)]
    assert totals == expected
    assert oracle.report()["classifications"]["counted"] == 15
    ledger.close()
    oracle.close()


# -- command line -----------------------------------------------------------------------------------------


LIVE_SCHEMA = "decals-dr5:smooth-or-featured"


def live_catalogs(tmp_path):
    """(catalog_dir, shard_dir, task map) of a 40-galaxy experiment whose pool (15) has no votes yet."""
    from zoobot.catalog import define_experiment, save_experiment
    from zoobot.schema import get_schema
    from zoobot.shards import write_shards
    from zoobot.synthetic import make_synthetic_catalog

    schema = get_schema(LIVE_SCHEMA)
    catalog = make_synthetic_catalog(40, tmp_path / "synthetic", size=32, channels=3, seed=3)
    catalog.loc[catalog.index[:15], schema.answer_columns] = 0
    experiment = define_experiment(catalog, schema, retirement=1, seed=0)
    save_experiment(experiment, schema, tmp_path / "catalogs", {})
    write_shards(experiment.labelled, experiment.unlabelled, tmp_path / "shards", schema,
                 val_size=5, test_size=5, size=32, channels=3)
    answers = [c.split("_", 1)[1] for c in schema.answer_columns]
    task_map = {"schema": LIVE_SCHEMA, "tasks": {"T0": {"question": "smooth-or-featured", "answers": answers}}}
    return tmp_path / "catalogs", tmp_path / "shards", task_map


def test_create_instructions_reads_the_oracle_config(standin, tmp_path):
    from zoobot.cli import app
    from zoobot.loop.instructions import load_instructions

    catalog_dir, shard_dir, task_map = live_catalogs(tmp_path)
    config = tmp_path / "panoptes.yaml"
    base = ["create-instructions", str(catalog_dir), str(shard_dir), str(tmp_path / "e"),
            "--oracle", "panoptes", "--oracle-config", str(config)]
    runner = CliRunner()
    cases = {
        "": "no such file",
        "project_id: [": "is not valid YAML or JSON",
        "- 1": "expected a mapping of --oracle panoptes settings, got list",
        "project_id: 1\nworkflow: 2": "unknown settings ['workflow'] for --oracle panoptes",
        "project_id: 1": "missing 'workflow_id', 'task_map' in the oracle config",
        "project_id: 1\nworkflow_id: 2\ntask_map: {schema: gz2, tasks: {}}": "panoptes oracle.task_map: 'tasks' must map",
        "project_id: 1\nworkflow_id: 2\nretirement_limit: -1\ntask_map: " + json.dumps(task_map):
            "panoptes oracle.retirement_limit: expected an integer >= 1, got -1",
        "project_id: 1\nworkflow_id: 2\ntask_map: " + json.dumps(TASK_MAP):
            "expected a task map for the experiment's schema 'decals-dr5:smooth-or-featured', got one for 'smooth-or-featured'",
    }
    for text, message in cases.items():
        if text:
            config.write_text(text)
        result = runner.invoke(app, base)
        assert result.exit_code == 1, (text, result.output)
        assert message in result.output, (text, result.output)
        assert not (tmp_path / "e").exists()
    config.write_text(json.dumps({"project_id": standin.project_id, "workflow_id": standin.workflow_id,
                                  "task_map": task_map, "endpoint": standin.url, "retirement_limit": 20}))
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    plan = load_instructions(tmp_path / "e" / "instructions")
    oracle = plan.instructions.oracle
    assert oracle.kind == "panoptes" and oracle.settings["retirement_limit"] == 20
    assert oracle.settings["catalog_path"] == str((catalog_dir / "unlabelled_catalog.parquet").resolve())
    assert plan.acquisition.expected_votes == 20  # BALD's N: the retirement limit
    assert standin.calls == []  # nothing logs in before there is something to upload


@pytest.mark.slow
def test_two_loop_iterations_with_volunteers_in_between(standin, credentials, tmp_path):
    """Iteration 1 uploads its acquisitions; volunteers classify; iteration 2 labels them
    (about 20 s: two training iterations; run with -m slow)."""
    from zoobot.loop.experiment import create_experiment, plan_experiment
    from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
    from zoobot.loop.iteration import run_iteration
    from zoobot.schema import get_schema
    from zoobot.training_settings import TrainSettings

    catalog_dir, shard_dir, task_map = live_catalogs(tmp_path)
    options = {"project_id": standin.project_id, "workflow_id": standin.workflow_id, "task_map": task_map,
               "endpoint": standin.url, "retirement_limit": 3, **FAST}
    plan = plan_experiment(
        catalog_dir, shard_dir, model=ModelSpec(TrainSettings(epochs=1, progress_bar=False)),
        acquisition=AcquisitionSpec(function="random"), oracle="panoptes", oracle_options=options,
        subjects_per_iteration=4, quick_test=True,
    )
    experiment = create_experiment(tmp_path / "live", plan)
    first = run_iteration(experiment)
    assert len(standin.subjects) == first["n_acquired"] == 4
    people = Volunteers(standin)
    expected = {}
    for n, subject_id in enumerate(sorted(standin.subjects, key=int)):
        answers = [n % 3, (n + 1) % 3, 0]
        for user, answer in zip(("ann", "bob", "cyd"), answers):
            people.classify(subject_id, answer, user=user)
        expected[standin.subjects[subject_id]["metadata"]["id_str"]] = np.bincount(answers, minlength=3).tolist()
    second = run_iteration(experiment)
    assert second["n_labelled"] == first["n_labelled"] + 4
    ledger = Ledger(experiment / "ledger.sqlite", get_schema(LIVE_SCHEMA).n_answers)
    ids, votes = ledger.labelled_votes()
    labelled = dict(zip(ids, votes.tolist()))
    assert {i: labelled[i] for i in expected} == expected
    assert len(ledger.ids(REQUESTED)) == 4  # iteration 2's acquisitions, uploaded and waiting
    ledger.close()
    assert len(standin.subjects) == 8 and len(standin.subject_sets) == 2
