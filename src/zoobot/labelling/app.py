"""The labelling page: a Flask app over a web oracle (``zoobot label-server`` serves it).

Routes (every form field is checked; anything malformed gets a 4xx page, never a traceback):

- ``GET /name``, ``POST /name`` (``name``): choose a labeller name, kept in a cookie;
- ``GET /label[?galaxy=ID]``: the next requested galaxy this person has not classified, large,
  with the first question of the tree;
- ``POST /label`` (``galaxy``, ``a`` repeated: the answer columns chosen so far, in order): the
  next question reached, or, when the walk is finished, one vote recorded and the next galaxy;
- ``GET /image?galaxy=ID``: the galaxy's image as PNG, only for requested galaxies, looked up
  by id in the experiment's shard manifest (a request never names a path);
- ``GET /progress``, ``GET /progress.json``: how many requested galaxies have how many votes.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from threading import Lock

import numpy as np
from flask import Flask, abort, jsonify, redirect, render_template, request, url_for
from jinja2 import DictLoader
from PIL import Image
from werkzeug.exceptions import HTTPException

from zoobot.images import ImageError, load_image
from zoobot.labelling.pages import STYLE, TEMPLATES, readable
from zoobot.loop.instructions import load_instructions
from zoobot.loop.layout import INSTRUCTIONS_DIR
from zoobot.oracles import open_oracle
from zoobot.oracles.web import LABELLER_RULE, ClassificationError, VoteRefused, WebOracle, check_labeller, walk
from zoobot.schema import get_schema
from zoobot.shards import ShardReader

logger = logging.getLogger(__name__)

COOKIE = "zoobot_labeller"
DISPLAY_SIZE = 424  # pixels per side of the served image (Galaxy Zoo's size)
MAX_FORM_BYTES = 16 * 1024
MAX_GALAXY_ID = 200  # characters


class GalaxyImages:
    """PNG bytes of pool galaxies by id: the catalog image (``file_loc``) when it is readable, else
    the shard's copy, resized to ``size``. Recently served images are kept in memory."""

    def __init__(self, shard_dir: str | Path, size: int = DISPLAY_SIZE, cache_size: int = 256):
        self.reader = ShardReader(shard_dir)
        pool = self.reader.manifest[self.reader.manifest["split"] == "pool"]
        locations = pool["file_loc"] if "file_loc" in pool.columns else [None] * len(pool)
        self._file_loc = dict(zip(pool["id_str"].astype(str), locations))
        self.size, self.cache_size = size, cache_size
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    def __contains__(self, id_str: str) -> bool:
        return id_str in self._file_loc

    def png(self, id_str: str) -> bytes:
        """Raises KeyError for a galaxy outside the pool."""
        with self._lock:
            if id_str in self._cache:
                self._cache.move_to_end(id_str)
                return self._cache[id_str]
        location = self._file_loc[id_str]
        try:
            pixels = load_image(location, self.size, channels=3)  # (3, size, size)
        except (ImageError, TypeError):
            logger.warning("galaxy %s: catalog image %r unreadable; showing the shard copy", id_str, location)
            pixels = self._from_shard(id_str)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(buffer, format="PNG")
        data = buffer.getvalue()
        with self._lock:
            self._cache[id_str] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data

    def _from_shard(self, id_str: str) -> np.ndarray:
        """(3, size, size) uint8: the shard image, enlarged."""
        pixels = self.reader.image(id_str)  # (C, H, W)
        if pixels.shape[0] == 1:
            pixels = np.repeat(pixels, 3, axis=0)
        image = Image.fromarray(pixels.transpose(1, 2, 0)).resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(image).transpose(2, 0, 1)


def open_labelling_app(experiment_dir: str | Path) -> Flask:
    """The app for an experiment made with ``--oracle web``; ValueError for any other oracle."""
    experiment_dir = Path(experiment_dir)
    plan = load_instructions(experiment_dir / INSTRUCTIONS_DIR)
    spec = plan.instructions.oracle
    if spec.kind != "web":
        raise ValueError(
            f"{experiment_dir} was made with --oracle {spec.kind}; the labelling page serves experiments "
            "made with `zoobot create-instructions ... --oracle web`"
        )
    oracle = open_oracle(spec.kind, spec.settings, experiment_dir, get_schema(plan.instructions.schema))
    return create_app(oracle, GalaxyImages(plan.instructions.shard_dir))


def create_app(oracle: WebOracle, images: GalaxyImages | None) -> Flask:
    """The labelling app over ``oracle``; ``images.png(id_str) -> bytes`` serves requested galaxies
    (None: no images, every image request gets a 404)."""
    app = Flask(__name__)
    app.jinja_loader = DictLoader(TEMPLATES)
    app.config["MAX_CONTENT_LENGTH"] = MAX_FORM_BYTES
    schema = oracle.schema

    def labeller() -> str | None:
        try:
            return check_labeller(request.cookies.get(COOKIE))
        except ValueError:
            return None

    def render(template: str, status: int = 200, **context):
        progress = oracle.progress()
        percent = 100 * progress.n_complete / progress.n_requested if progress.n_requested else 0
        html = render_template(
            template, style=STYLE, progress=progress, percent_complete=round(percent, 1), labeller=labeller(), **context
        )
        return html, status

    def form_fields(allowed: set[str]) -> None:
        unknown = sorted(set(request.form) - allowed)
        if unknown:
            abort(400, f"unexpected form fields {unknown}; expected {sorted(allowed)}")

    def galaxy_field(value: str | None) -> str:
        if not value or len(value) > MAX_GALAXY_ID:
            abort(400, f"expected a galaxy id of 1 to {MAX_GALAXY_ID} characters, got {value!r:.60}")
        if not oracle.is_requested(value):
            abort(404, f"galaxy {value!r:.60} was not requested for labelling")
        return value

    def show(galaxy: str, answers: list[str], notice: str | None = None):
        question = walk(schema, answers)
        answered = []
        for column in answers:
            asked = schema.question_of_column(column)
            answered.append((readable(asked.name), readable(asked.answers[asked.columns().index(column)])))
        choices = [(column, readable(answer)) for column, answer in zip(question.columns(), question.answers)]
        return render(
            "label.html", galaxy=galaxy, answers=answers, answered=answered, question_text=readable(question.name) + "?",
            choices=choices, votes_so_far=oracle.votes_so_far().get(galaxy, 0), notice=notice,
        )

    @app.get("/")
    def home():
        return redirect(url_for("label") if labeller() else url_for("name"))

    @app.get("/name")
    def name():
        return render("name.html", name=labeller())

    @app.post("/name")
    def set_name():
        form_fields({"name"})
        given = request.form.get("name", "").strip()
        try:
            chosen = check_labeller(given)
        except ValueError:
            return render("name.html", status=400, name=given[:40], error=f"A name is {LABELLER_RULE}.")
        response = redirect(url_for("label"), code=303)
        response.set_cookie(COOKIE, chosen, max_age=365 * 24 * 3600, samesite="Strict", httponly=True)
        return response

    @app.get("/label")
    def label():
        who = labeller()
        if who is None:
            return redirect(url_for("name"))
        unknown = sorted(set(request.args) - {"galaxy", "done"})
        if unknown:
            abort(400, f"unexpected query parameters {unknown}; expected galaxy or done")
        notice = "Thanks, your classification was recorded." if "done" in request.args else None
        if "galaxy" in request.args:
            galaxy = galaxy_field(request.args["galaxy"])
            if oracle.has_voted(galaxy, who):
                abort(409, f"{who} already classified galaxy {galaxy}; one vote per person counts")
        else:
            galaxy = oracle.next_galaxy(who)
        if galaxy is None:
            return render("done.html", notice=notice)
        return show(galaxy, [], notice)

    @app.post("/label")
    def classify():
        who = labeller()
        if who is None:
            abort(400, "no labeller name: choose one at /name first")
        form_fields({"galaxy", "a"})
        galaxy = galaxy_field(request.form.get("galaxy"))
        if oracle.has_voted(galaxy, who):
            abort(409, f"{who} already classified galaxy {galaxy}; one vote per person counts")
        answers = request.form.getlist("a")
        if not answers or len(answers) > schema.n_questions:
            abort(400, f"expected 1 to {schema.n_questions} answers, got {len(answers)}")
        try:
            unfinished = walk(schema, answers) is not None
        except ClassificationError as error:
            abort(400, str(error))
        if unfinished:
            return show(galaxy, answers)
        try:
            oracle.add_vote(galaxy, who, answers)
        except VoteRefused as error:
            abort(409, str(error))
        return redirect(url_for("label", done=1), code=303)

    @app.get("/image")
    def image():
        unknown = sorted(set(request.args) - {"galaxy"})
        if unknown:
            abort(400, f"unexpected query parameters {unknown}; expected galaxy")
        galaxy = galaxy_field(request.args.get("galaxy"))
        try:
            if images is None:
                raise KeyError(galaxy)
            data = images.png(galaxy)
        except KeyError:
            abort(404, f"galaxy {galaxy!r} has no image in this experiment")
        response = app.response_class(data, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.get("/progress")
    def progress_page():
        return render("progress.html")

    @app.get("/progress.json")
    def progress_json():
        return jsonify(asdict(oracle.progress()))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return render("error.html", status=error.code or 400, code=error.code, name=error.name,
                      description=error.description)

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        logger.error("labelling page: %s: %s", type(error).__name__, error, exc_info=error)
        return "internal error; the server log has the details", 500

    return app
