"""Panoptes annotations as schema votes: the task map, and a tally of votes per galaxy.

A Panoptes classification's ``annotations`` is a list of ``{"task": "T0", "value": ...}``;
``value`` is an answer index (int), an answer label (str), a list of them (multiple-choice
questions), a list of nested ``{"task", "value"}`` (combo tasks) or null (skipped).

A *task map* (JSON or YAML, see :func:`load_task_map` and docs/converters.md) says which
schema the votes belong to, which question each task asks, and which schema answer each
Panoptes answer (label or index) is. :class:`VoteTally` reads annotations one at a time
against a task map and counts votes per galaxy; it serves both the classification export
converter (:mod:`zoobot.convert.panoptes`) and classifications fetched one by one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from zoobot.convert.common import ConversionError
from zoobot.convert.decals import DECALS_SCHEMAS
from zoobot.ids import describe_ids
from zoobot.schema import SCHEMAS, Schema, get_schema

LOGGED_OUT_PREFIX = "not-logged-in"  # user_name prefix of volunteers who were not logged in
TASK_MAP_KEYS = {"schema", "workflow_id", "image_field", "id_field", "ignore_tasks", "tasks"}


@dataclass(frozen=True)
class TaskSpec:
    """One Panoptes task: the schema question it asks and {label or index: answer column}."""

    task: str
    question: str
    answers: dict[str, str]


@dataclass(frozen=True)
class TaskMap:
    """A validated task map: the schema, the task of each question, and subject metadata keys."""

    schema: Schema
    tasks: dict[str, TaskSpec]
    ignore_tasks: frozenset[str] = frozenset()
    workflow_id: str | None = None
    image_field: str | None = None  # subject metadata key holding the image file name
    id_field: str | None = None  # subject metadata key used as id_str (default: subject id)
    source: str = "task map"


def _known_schema(name: str, source) -> Schema:
    if name in DECALS_SCHEMAS:
        return DECALS_SCHEMAS[name]
    try:
        return get_schema(name)
    except KeyError:
        raise ConversionError(
            f"{source}: unknown schema {name!r}; expected one of {sorted({*SCHEMAS, *DECALS_SCHEMAS})}"
        ) from None


def parse_task_map(raw: dict, source: str = "task map") -> TaskMap:
    """Validate a task map given as a dict (the parsed JSON or YAML file)."""
    if not isinstance(raw, dict):
        raise ConversionError(f"{source}: expected a mapping with 'schema' and 'tasks', got {type(raw).__name__}")
    unknown_keys = set(raw) - TASK_MAP_KEYS
    if unknown_keys:
        raise ConversionError(f"{source}: unknown keys {sorted(unknown_keys)}; expected {sorted(TASK_MAP_KEYS)}")
    for key in ("schema", "tasks"):
        if key not in raw:
            raise ConversionError(f"{source}: missing {key!r}; see docs/converters.md for an example")
    schema = _known_schema(str(raw["schema"]), source)
    if not isinstance(raw["tasks"], dict) or not raw["tasks"]:
        raise ConversionError(f"{source}: 'tasks' must map task keys (e.g. T0) to {{question, answers}}")
    tasks = {}
    for task, spec in raw["tasks"].items():
        task = str(task)
        where = f"{source}: task {task}"
        if not isinstance(spec, dict) or set(spec) != {"question", "answers"}:
            raise ConversionError(f"{where}: expected exactly the keys 'question' and 'answers', got {spec!r}")
        try:
            question = schema.question(str(spec["question"]))
        except KeyError as error:
            raise ConversionError(f"{where}: {error.args[0]}") from None
        answers = spec["answers"]
        if isinstance(answers, list):  # shorthand: answer index -> schema answer
            answers = dict(enumerate(answers))
        if not isinstance(answers, dict) or not answers:
            raise ConversionError(f"{where}: 'answers' must map answer labels or indices to schema answers")
        mapped = {}
        for label, answer in answers.items():
            if isinstance(label, bool) or isinstance(answer, bool):
                raise ConversionError(
                    f"{where}: {label!r}: {answer!r} was read as a true/false value; YAML reads bare "
                    "yes/no/on/off that way. Quote answer names and labels, e.g. 'yes'."
                )
            answer = str(answer)
            column = answer if answer in question.columns() else f"{question.name}_{answer}"
            if column not in question.columns():
                raise ConversionError(
                    f"{where}: answer {label!r} maps to {answer!r}, which question {question.name!r} "
                    f"does not have; its answers are {list(question.answers)}"
                )
            mapped[str(label).strip()] = column
        tasks[task] = TaskSpec(task, question.name, mapped)
    ignore = frozenset(str(t) for t in raw.get("ignore_tasks") or [])
    both = ignore & set(tasks)
    if both:
        raise ConversionError(f"{source}: tasks {sorted(both)} are both mapped and in ignore_tasks")
    text = {k: (None if raw.get(k) is None else str(raw[k])) for k in ("workflow_id", "image_field", "id_field")}
    return TaskMap(schema, tasks, ignore, source=source, **text)


def load_task_map(path: str | Path) -> TaskMap:
    """Read a task map from ``.json``, ``.yaml`` or ``.yml``."""
    return parse_task_map(read_task_map_file(path), source=str(path))


def read_task_map_file(path: str | Path):
    """The mapping in a task map file (``.json``, ``.yaml`` or ``.yml``), not yet validated."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"task map {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
        elif path.suffix.lower() in (".yaml", ".yml"):
            raw = yaml.safe_load(path.read_text())
        else:
            raise ConversionError(f"task map {path}: expected a .json, .yaml or .yml file")
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConversionError(f"task map {path} is not valid {path.suffix[1:].upper()}: {error}") from error
    return raw


class VoteTally:
    """Votes read from Panoptes annotations, by galaxy, and what the task map could not place.

    Feed it one annotation at a time with :meth:`add`, keyed by whatever names the galaxy
    (e.g. its id_str), then read :meth:`counts`. Tasks and answers that the task map does not
    know are counted rather than raised, so that :meth:`raise_unknown` can list them all.
    """

    def __init__(self, task_map: TaskMap):
        self.task_map = task_map
        self.schema_index = {c: i for i, c in enumerate(task_map.schema.answer_columns)}
        self.keys: list[Hashable] = []  # (vote,) the galaxy each vote is for
        self.answers: list[int] = []  # (vote,) the schema answer index of each vote
        self.unknown_tasks: Counter = Counter()  # task -> annotations
        self.unknown_answers: Counter = Counter()  # (task, value) -> annotations
        self.empty = 0  # annotations without an answer (skipped questions)
        self._simple: dict = {}  # (task, value) -> answer index, for single str/int values

    def add(self, key: Hashable, annotation) -> None:
        """Count the votes in one annotation, ``{"task": ..., "value": ...}``, for galaxy ``key``."""
        try:  # fast path: a single answer seen before (bools are never answers: True == 1)
            value = annotation["value"]
            if type(value) is not bool:
                self.answers.append(self._simple[annotation["task"], value])
                self.keys.append(key)
                return
        except (KeyError, TypeError):
            pass
        if not isinstance(annotation, dict) or "task" not in annotation:
            self.unknown_answers[("?", repr(annotation)[:80])] += 1
            return
        task = str(annotation["task"])
        value = annotation.get("value")
        if task in self.task_map.ignore_tasks:
            return
        if isinstance(value, list) and value and all(isinstance(v, dict) and "task" in v for v in value):
            for nested in value:  # combo task
                self.add(key, nested)
            return
        spec = self.task_map.tasks.get(task)
        if spec is None:
            self.unknown_tasks[task] += 1
            return
        values = value if isinstance(value, list) else [value]
        if not values or all(v is None for v in values):
            self.empty += 1
            return
        for item in values:
            if item is None:
                continue
            label = str(item).strip() if isinstance(item, (str, int)) and not isinstance(item, bool) else None
            column = spec.answers.get(label) if label is not None else None
            if column is None:
                self.unknown_answers[(task, repr(item)[:80])] += 1
                continue
            self.keys.append(key)
            self.answers.append(self.schema_index[column])
            if value is item and type(item) in (str, int):
                self._simple[annotation["task"], item] = self.schema_index[column]

    def counts(self, keys: Sequence[Hashable]) -> np.ndarray:
        """(galaxy, answer) int64 vote counts for ``keys``, in that order; 0 where none.

        Raises ValueError when ``keys`` repeats a galaxy or leaves out one that has votes.
        """
        position = {key: i for i, key in enumerate(keys)}
        if len(position) != len(keys):
            repeated = [key for key, n in Counter(keys).items() if n > 1]
            raise ValueError(f"counts: expected unique galaxy keys, got repeats of {describe_ids(repeated)}")
        rows = np.fromiter((position.get(k, -1) for k in self.keys), dtype=np.int64, count=len(self.keys))
        if (rows < 0).any():
            missing = {str(k) for k, r in zip(self.keys, rows) if r < 0}
            raise ValueError(
                f"counts: expected every galaxy that has votes in keys; {describe_ids(sorted(missing))} "
                "are missing"
            )
        counts = np.zeros((len(position), self.task_map.schema.n_answers), dtype=np.int64)
        np.add.at(counts, (rows, np.asarray(self.answers, dtype=np.int64)), 1)
        return counts

    def raise_unknown(self, source) -> None:
        """Raise ConversionError listing the tasks and answers the task map does not know, if any."""
        if self.unknown_tasks:
            listed = ", ".join(f"{t} ({n} annotations)" for t, n in self.unknown_tasks.most_common())
            raise ConversionError(
                f"{source}: tasks that the task map {self.task_map.source} does not cover: {listed}. "
                "Map them under 'tasks', or list them under 'ignore_tasks' to leave them out."
            )
        if self.unknown_answers:
            listed = ", ".join(
                f"{task}: {value} ({n})" for (task, value), n in self.unknown_answers.most_common(20)
            )
            more = f" and {len(self.unknown_answers) - 20} more" if len(self.unknown_answers) > 20 else ""
            raise ConversionError(
                f"{source}: answers that the task map {self.task_map.source} does not know (task: answer "
                f"(annotations)): {listed}{more}. Add each label (or answer index) to that task's "
                "'answers', or check that the classifications and the map are for the same workflow."
            )




@dataclass(frozen=True)
class ClassificationVotes:
    """What one classification says, read alone against a task map.

    ``answers``: (vote,) schema answer indices; ``unknown``: (task, value) pairs the task map
    does not know (tasks as (task, None)); ``empty``: annotations without an answer.
    """

    answers: tuple[int, ...]
    unknown: tuple[tuple[str, str | None], ...]
    empty: int


def classification_votes(task_map: TaskMap, annotations) -> ClassificationVotes:
    """Read one classification's ``annotations`` (a list of ``{"task", "value"}``) with a
    :class:`VoteTally` of its own, as a live oracle does when classifications arrive one by one."""
    tally = VoteTally(task_map)
    if not isinstance(annotations, list):
        return ClassificationVotes((), (("?", repr(annotations)[:80]),), 0)
    for annotation in annotations:
        tally.add(None, annotation)
    unknown = [(task, None) for task, n in tally.unknown_tasks.items() for _ in range(n)]
    unknown += [pair for pair, n in tally.unknown_answers.items() for _ in range(n)]
    return ClassificationVotes(tuple(tally.answers), tuple(unknown), tally.empty)
