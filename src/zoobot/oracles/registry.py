"""A registry of oracle kinds: each kind owns its settings dataclass and how it is opened.

An oracle class registers with ``@register_oracle("name")`` and provides:

- ``Settings``: a frozen dataclass, validated in ``__post_init__``, JSON-serialisable with
  ``dataclasses.asdict``, with a classmethod ``for_experiment(catalog_dir, seed, **options)``
  that fills defaults from the experiment's catalog folder;
- ``check_shards(settings, reader)`` (static): refuse shards this oracle cannot serve, before
  an experiment is created;
- ``__init__(settings, experiment_dir, schema)``: open the oracle; its own state lives in the
  experiment folder.

The experiment stores ``{"kind": name, "settings": asdict(settings)}``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from zoobot.checks import SettingsError, check_choice
from zoobot.oracles.base import Oracle
from zoobot.schema import Schema

_ORACLES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_oracle(name: str):
    """Class decorator: register an oracle class under ``name``."""

    def decorator(cls: T) -> T:
        if name in _ORACLES:
            raise ValueError(f"oracle kind {name!r} is already registered; pick another name")
        cls.kind = name
        _ORACLES[name] = cls
        return cls

    return decorator


def list_oracles() -> list[str]:
    """The registered oracle kinds, sorted."""
    return sorted(_ORACLES)


def oracle_class(kind: str) -> type:
    check_choice("oracle", "kind", kind, list_oracles())
    return _ORACLES[kind]


def oracle_settings(kind: str, settings: dict[str, Any]):
    """Rebuild (and validate) a kind's settings from their stored dict; unknown keys are an error."""
    cls = oracle_class(kind).Settings
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise SettingsError(f"oracle {kind!r}: unknown settings {unknown}; expected some of {sorted(names)}")
    return cls(**settings)


def open_oracle(kind: str, settings: dict[str, Any], experiment_dir: str | Path, schema: Schema) -> Oracle:
    """Open the oracle an experiment was created with."""
    return oracle_class(kind)(oracle_settings(kind, settings), Path(experiment_dir), schema)
