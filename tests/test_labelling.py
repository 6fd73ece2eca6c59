"""The labelling page (Flask test client): names, the question tree, one vote per person, images
that never leave the experiment, a 4xx for every malformed request, and no vote lost under load."""

import http.client
import io
import json
import os
import threading
import time
import urllib.parse

import pytest
from PIL import Image
from waitress.server import create_server

from web_experiment import SCHEMA, make_catalogs, make_web_experiment
from zoobot.labelling.app import COOKIE, MAX_FORM_BYTES, create_app, open_labelling_app
from zoobot.loop.experiment import plan_experiment
from zoobot.loop.instructions import OracleSpec, save_instructions
from zoobot.loop.ledger import Ledger
from zoobot.oracles import open_oracle
from zoobot.oracles.web import WebOracle, WebOracleSettings
from zoobot.shards import ShardReader

SMOOTH, FEATURED, ARTIFACT = SCHEMA.question("smooth-or-featured").columns()
EDGE_ON, NOT_EDGE_ON = SCHEMA.question("disk-edge-on").columns()
SPIRAL, NO_SPIRAL = SCHEMA.question("has-spiral-arms").columns()


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    return make_catalogs(tmp_path_factory.mktemp("labelling"))


@pytest.fixture
def page(catalogs, tmp_path):
    """(app, oracle, requested ids, other pool ids): 5 pool galaxies requested in iteration 1."""
    experiment = make_web_experiment(catalogs, tmp_path / "exp", votes_needed=2)
    pool = list(ShardReader(catalogs[1]).ids("pool"))
    oracle = open_oracle("web", {"votes_needed": 2}, experiment, SCHEMA)
    oracle.request(pool[:5], 1)
    app = open_labelling_app(experiment)
    return app, oracle, pool[:5], pool[5:]


def signed_in(app, name="ada"):
    client = app.test_client()
    assert client.post("/name", data={"name": name}).status_code == 303
    return client


def assert_clean_error(response, status):
    assert response.status_code == status, response.text[:500]
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_a_name_is_asked_for_and_checked(page):
    app, *_ = page
    client = app.test_client()
    assert client.get("/").headers["Location"].endswith("/name")
    assert client.get("/label").headers["Location"].endswith("/name")
    for bad in ("", " ", "x" * 41, "<script>", "a:b", "ünïcode", "-dash"):
        response = client.post("/name", data={"name": bad})
        assert_clean_error(response, 400)
        assert "set-cookie" not in {k.lower() for k in response.headers.keys()}
    response = client.post("/name", data={"name": "Ada L."})
    assert response.status_code == 303 and COOKIE in response.headers["Set-Cookie"]
    assert "Ada L." in client.get("/label").text
    client.set_cookie(COOKIE, "<bad>")  # a forged cookie is ignored: ask for the name again
    assert client.get("/label").headers["Location"].endswith("/name")


def test_questions_follow_the_tree_and_a_finished_walk_is_one_vote(page):
    app, oracle, requested, _ = page
    client = signed_in(app)
    first = client.get("/label").text
    galaxy = min(requested)  # equal votes: by id
    assert "Smooth or featured?" in first and f"/image?galaxy={galaxy}" in first
    step = client.post("/label", data={"galaxy": galaxy, "a": [FEATURED]})
    assert step.status_code == 200 and "Disk edge on?" in step.text and "Smooth or featured: Featured or disk" in step.text
    step = client.post("/label", data={"galaxy": galaxy, "a": [FEATURED, NOT_EDGE_ON]})
    assert "Has spiral arms?" in step.text
    assert not oracle.has_voted(galaxy, "ada")  # nothing is recorded before the walk ends
    done = client.post("/label", data={"galaxy": galaxy, "a": [FEATURED, NOT_EDGE_ON, SPIRAL]})
    assert done.status_code == 303
    assert "Thanks, your classification was recorded" in client.get(done.headers["Location"]).text
    other = max(requested)
    smooth = client.post("/label", data={"galaxy": other, "a": [SMOOTH]})  # smooth ends the walk
    assert smooth.status_code == 303
    deliveries = {d.id_str: d for d in oracle.collect(2)}
    expected = dict.fromkeys(SCHEMA.answer_columns, 0) | {FEATURED: 1, NOT_EDGE_ON: 1, SPIRAL: 1}
    assert deliveries[galaxy].counts == tuple(expected.values())
    assert deliveries[galaxy].delivery_id == f"web:ada:{galaxy}" and not deliveries[galaxy].complete
    assert deliveries[other].counts == tuple(int(c == SMOOTH) for c in SCHEMA.answer_columns)


def test_one_vote_per_person_per_galaxy(page):
    app, oracle, requested, _ = page
    ada, ben = signed_in(app, "ada"), signed_in(app, "ben")
    galaxy = requested[0]
    assert ada.post("/label", data={"galaxy": galaxy, "a": [ARTIFACT]}).status_code == 303
    assert_clean_error(ada.post("/label", data={"galaxy": galaxy, "a": [SMOOTH]}), 409)
    assert_clean_error(ada.post("/label", data={"galaxy": galaxy, "a": [FEATURED]}), 409)  # not even a step
    assert_clean_error(ada.get(f"/label?galaxy={galaxy}"), 409)
    assert galaxy not in ada.get("/label").text  # ada is shown another galaxy
    assert galaxy in ben.get("/label").text  # the galaxy closest to complete comes first for ben
    assert ben.post("/label", data={"galaxy": galaxy, "a": [SMOOTH]}).status_code == 303
    deliveries = oracle.collect(2)
    assert [(d.delivery_id, d.complete) for d in deliveries] == [(f"web:ada:{galaxy}", False), (f"web:ben:{galaxy}", True)]
    progress = ada.get("/progress.json").get_json()
    assert progress["n_complete"] == 1 and progress["votes_histogram"] == {"0": 4, "2": 1}
    assert "ben" in ada.get("/progress").text


def test_every_requested_galaxy_is_shown_until_the_labeller_has_done_them_all(page):
    app, oracle, requested, _ = page
    client = signed_in(app)
    seen = []
    for _ in requested:
        galaxy = oracle.next_galaxy("ada")
        seen.append(galaxy)
        assert client.post("/label", data={"galaxy": galaxy, "a": [SMOOTH]}).status_code == 303
    assert sorted(seen) == sorted(requested)
    assert "Nothing left for you to classify" in client.get("/label").text


@pytest.mark.parametrize(
    "form, status",
    [
        ({"a": [SMOOTH]}, 400),  # no galaxy
        ({"galaxy": "", "a": [SMOOTH]}, 400),
        ({"galaxy": "x" * 500, "a": [SMOOTH]}, 400),
        ({"galaxy": "no-such-galaxy", "a": [SMOOTH]}, 404),
        ({"galaxy": "REQUESTED"}, 400),  # no answer
        ({"galaxy": "REQUESTED", "a": ["smooth-or-featured_maybe"]}, 400),
        ({"galaxy": "REQUESTED", "a": [FEATURED, SPIRAL]}, 400),  # skips disk-edge-on
        ({"galaxy": "REQUESTED", "a": [SMOOTH, EDGE_ON]}, 400),  # smooth never reaches disk-edge-on
        ({"galaxy": "REQUESTED", "a": [FEATURED, NOT_EDGE_ON, SPIRAL, SMOOTH]}, 400),  # too many
        ({"galaxy": "REQUESTED", "a": [SMOOTH], "extra": "1"}, 400),
        ({"galaxy": "NOT_REQUESTED", "a": [SMOOTH]}, 404),
    ],
)
def test_malformed_classifications_get_a_4xx_and_record_nothing(page, form, status):
    app, oracle, requested, others = page
    client = signed_in(app)
    names = {"REQUESTED": requested[0], "NOT_REQUESTED": others[0]}
    form = {k: names.get(v, v) if isinstance(v, str) else v for k, v in form.items()}
    assert_clean_error(client.post("/label", data=form), status)
    assert oracle.collect(2) == []


def test_other_malformed_requests_get_a_4xx(page):
    app, oracle, requested, _ = page
    anonymous, client = app.test_client(), signed_in(app)
    assert_clean_error(anonymous.post("/label", data={"galaxy": requested[0], "a": [SMOOTH]}), 400)
    assert_clean_error(client.post("/label", data={"galaxy": requested[0], "a": "x" * (MAX_FORM_BYTES + 10)}), 413)
    assert_clean_error(client.get("/no-such-page"), 404)
    assert_clean_error(client.delete("/label"), 405)
    assert_clean_error(client.put("/name", data={"name": "ada"}), 405)
    assert_clean_error(client.get("/label?galaxy=nope"), 404)
    assert_clean_error(client.get("/label?bogus=1"), 400)
    assert_clean_error(client.post("/name", data={"name": "ada", "admin": "1"}), 400)
    assert_clean_error(client.post("/label", data=b"\xff\xfe", content_type="application/x-www-form-urlencoded"), 400)
    assert oracle.collect(2) == []


def test_images_are_served_only_for_requested_galaxies_by_id(page, catalogs):
    app, oracle, requested, others = page
    client = signed_in(app)
    response = client.get(f"/image?galaxy={requested[0]}")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert Image.open(io.BytesIO(response.data)).size == (424, 424)
    train_id = ShardReader(catalogs[1]).ids("train")[0]
    for galaxy in (others[0], train_id, "../../../../etc/passwd", "/etc/passwd", requested[0] + "/..", "%00"):
        assert_clean_error(client.get("/image?" + urllib.parse.urlencode({"galaxy": galaxy})), 404)
    assert_clean_error(client.get("/image"), 400)
    assert_clean_error(client.get(f"/image?galaxy={requested[0]}&path=/etc/passwd"), 400)
    assert_clean_error(client.get("/image/../../etc/passwd"), 404)


def test_a_missing_catalog_image_falls_back_to_the_shard_copy(page, catalogs):
    app, oracle, requested, _ = page
    reader = ShardReader(catalogs[1])
    location = reader.manifest.set_index("id_str").loc[requested[1], "file_loc"]
    moved = location + ".moved"
    os.rename(location, moved)
    try:
        response = signed_in(app).get(f"/image?galaxy={requested[1]}")
    finally:
        os.rename(moved, location)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.data)).size == (424, 424)


def test_the_page_refuses_experiments_of_other_oracles(catalogs, tmp_path):
    plan = plan_experiment(*catalogs, oracle="web")
    plan.instructions.oracle = OracleSpec("simulated", {"hidden_votes_path": "elsewhere.parquet"})
    save_instructions(tmp_path, plan)
    with pytest.raises(ValueError, match="--oracle simulated"):
        open_labelling_app(tmp_path)


def post_votes(port, labeller, galaxies, timings):
    """One labeller classifying every galaxy over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"{COOKIE}={labeller}", "Content-Type": "application/x-www-form-urlencoded"}
    for galaxy in galaxies:
        body = urllib.parse.urlencode({"galaxy": galaxy, "a": SMOOTH})
        started = time.perf_counter()
        connection.request("POST", "/label", body, headers)
        response = connection.getresponse()
        response.read()
        timings.append(time.perf_counter() - started)
        assert response.status == 303, response.status
    connection.close()


def run_load(tmp_path, n_clients, n_galaxies):
    """n_clients labellers post a vote on each of n_galaxies at once, through a real server on
    127.0.0.1, while a loop collects into a ledger; returns (ledger votes, seconds, timings)."""
    oracle = WebOracle(WebOracleSettings(votes_needed=n_clients), tmp_path, SCHEMA)
    ids = [f"g{i:04d}" for i in range(n_galaxies)]
    ledger = Ledger(tmp_path / "ledger.sqlite", SCHEMA.n_answers, create=True)
    ledger.add_galaxies(ids)
    ledger.mark_requested(ids, 1)
    oracle.request(ids, 1)
    server = create_server(create_app(oracle, images=None), host="127.0.0.1", port=0, threads=8)
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    timings, posting = [], []
    started = time.perf_counter()
    for n in range(n_clients):
        posting.append(threading.Thread(target=post_votes, args=(server.effective_port, f"labeller-{n}", ids, timings)))
        posting[-1].start()
    iteration = 2
    while any(t.is_alive() for t in posting):  # the loop collects while votes arrive
        ledger.record(oracle.collect(iteration), iteration)
        iteration += 1
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    for thread in posting:
        thread.join()
    ledger.record(oracle.collect(iteration), iteration)
    ledger.record(oracle.collect(iteration), iteration)  # a replayed collection counts nothing twice
    server.close()
    total = ledger.summed_votes(ids)[:, SCHEMA.answer_columns.index(SMOOTH)]
    n_deliveries = sum(ledger.n_collected_in(i) for i in range(2, iteration + 1))
    labelled = ledger.ids("labelled")
    ledger.close()
    return total, n_deliveries, labelled, ids, seconds, timings


def test_concurrent_labellers_lose_no_vote(tmp_path):
    total, n_deliveries, labelled, ids, seconds, timings = run_load(tmp_path, n_clients=5, n_galaxies=20)
    assert total.tolist() == [5] * 20 and n_deliveries == 100
    assert labelled == ids
    assert len(timings) == 100


@pytest.mark.slow
def test_twenty_clients_post_two_thousand_votes_each_counted_once(tmp_path):
    total, n_deliveries, labelled, ids, seconds, timings = run_load(tmp_path, n_clients=20, n_galaxies=100)
    assert total.tolist() == [20] * 100 and n_deliveries == 2000
    assert labelled == ids
    print(json.dumps({"votes": len(timings), "seconds": round(seconds, 2), "votes_per_second": round(len(timings) / seconds, 1),
                      "slowest_response_s": round(max(timings), 3), "median_response_s": round(sorted(timings)[len(timings) // 2], 4)}))
