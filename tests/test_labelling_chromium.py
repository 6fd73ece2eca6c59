"""End to end in headless Chromium: a web-oracle experiment runs an iteration, two people classify
its galaxies by clicking on the labelling page, and the next iteration trains on their votes.

Drives Debian's Chromium (``/usr/bin/chromium``, or ``ZOOBOT_CHROMIUM``) through Playwright; never
downloads a browser. Skipped when either is absent. With ``ZOOBOT_SCREENSHOT_DIR`` set, the page's
screenshot is saved there too (docs/images/labelling_page.png comes from this test).
"""

import os
import shutil
import threading
from pathlib import Path

import pytest
from waitress.server import create_server

from web_experiment import SCHEMA, make_catalogs, make_web_experiment
from zoobot.labelling.app import open_labelling_app
from zoobot.loop.iteration import run_iteration
from zoobot.loop.ledger import LABELLED, Ledger

CHROMIUM = os.environ.get("ZOOBOT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (set ZOOBOT_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield launched
        launched.close()


@pytest.fixture
def server():
    """serve(experiment) -> base URL of its labelling page on 127.0.0.1; stopped after the test."""
    servers = []

    def serve(experiment):
        running = create_server(open_labelling_app(experiment), host="127.0.0.1", port=0, threads=4)
        threading.Thread(target=running.run, daemon=True).start()
        servers.append(running)
        return f"http://127.0.0.1:{running.effective_port}"

    yield serve
    for running in servers:
        running.close()


def classify_everything(page, base, name, choose, on_question=None):
    """Sign in as ``name`` and click through every galaxy offered; {galaxy: answers clicked}.

    ``on_question(page, n_galaxies_done, n_answers_given)`` runs on each question shown.
    """
    page.goto(base + "/name")
    page.fill("input[name=name]", name)
    page.click("text=Start classifying")
    clicked = {}
    while page.locator(".answers button").count():
        galaxy = page.locator("input[name=galaxy]").get_attribute("value")
        page.wait_for_function("document.querySelector('figure img').complete")
        assert page.locator("figure img").evaluate("img => img.naturalWidth") == 424
        answers = clicked.setdefault(galaxy, [])
        if on_question is not None:
            on_question(page, len(clicked) - 1, len(answers))
        label = choose(page.locator(".panel h1").inner_text())
        answers.append(label)
        page.click(f".answers button:text-is('{label}')")
    assert "Nothing left for you to classify" in page.content()
    return clicked


def test_votes_clicked_in_chromium_reach_the_next_iteration(browser, server, tmp_path):
    experiment = make_web_experiment(make_catalogs(tmp_path, image_size=96), tmp_path / "exp", votes_needed=2)
    first = run_iteration(experiment)
    ledger = Ledger(experiment / "ledger.sqlite", SCHEMA.n_answers)
    requested = ledger.requested_in(1)
    ledger.close()
    assert first["n_acquired"] == len(requested) == 4
    base = server(experiment)

    def featured_spiral(question):  # ada walks the whole tree
        return {"Smooth or featured?": "Featured or disk", "Disk edge on?": "No", "Has spiral arms?": "Yes"}[question]

    def smooth(question):  # ben stops after the first question
        return "Smooth"

    def screenshot(page, n_done, n_answers):
        if (n_done, n_answers) == (3, 1):  # the last galaxy's second question
            page.screenshot(path=str(tmp_path / "labelling_page.png"))

    ben = classify_everything(browser.new_context().new_page(), base, "ben", smooth)
    ada_page = browser.new_context(viewport={"width": 1180, "height": 640}).new_page()
    ada = classify_everything(ada_page, base, "ada", featured_spiral, screenshot)
    assert (tmp_path / "labelling_page.png").stat().st_size > 10_000
    if os.environ.get("ZOOBOT_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / "labelling_page.png", Path(os.environ["ZOOBOT_SCREENSHOT_DIR"]) / "labelling_page.png")
    assert sorted(ada) == sorted(ben) == sorted(requested)
    assert all(answers == ["Featured or disk", "No", "Yes"] for answers in ada.values())

    second = run_iteration(experiment)
    assert second["live_gate"] == "complete" and second["deliveries_collected"] == 8
    ledger = Ledger(experiment / "ledger.sqlite", SCHEMA.n_answers)
    ids, votes = ledger.labelled_votes()
    assert set(requested) <= set(ledger.ids(LABELLED))
    assert second["n_labelled"] == len(ids)
    newly_requested = ledger.requested_in(2)
    ledger.close()
    by_id = dict(zip(ids, votes.tolist()))
    expected = dict.fromkeys(SCHEMA.answer_columns, 0) | {
        "smooth-or-featured_smooth": 1, "smooth-or-featured_featured-or-disk": 1, "disk-edge-on_no": 1,
        "has-spiral-arms_yes": 1,
    }
    assert all(by_id[i] == list(expected.values()) for i in requested)
    ada_page.goto(base + "/label")  # the next iteration's galaxies are on the page
    assert len(newly_requested) == 4
    assert ada_page.locator("input[name=galaxy]").get_attribute("value") in newly_requested
