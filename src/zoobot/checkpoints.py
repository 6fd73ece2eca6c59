"""Read checkpoints written by ``zoobot train`` and rebuild models from them, without Lightning.

    loaded = read_checkpoint(path)   # LoadedCheckpoint(model, schema, settings, model_config)
    model = load_model(path)         # the GalaxyModel alone, eval mode, on CPU
    load_warm_start(model, path)     # copy a checkpoint's weights into a fresh model

A checkpoint is a ``torch.save`` dict with ``state_dict`` (the LightningModule's weights, the
GalaxyModel's under ``model.``) and ``hyper_parameters`` = ``{model_config, schema, settings}``
(``model.config``, ``schema.schema_to_dict`` and ``asdict(TrainSettings)``). Anything else is
refused with a ValueError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from zoobot.models import GalaxyModel, model_from_config
from zoobot.schema import Schema, schema_from_dict
from zoobot.training_settings import TrainSettings

HYPER_PARAMETERS = ("model_config", "schema", "settings")


def _not_a_checkpoint(checkpoint: Path, found: str) -> ValueError:
    return ValueError(
        f"{checkpoint} is not a zoobot checkpoint: expected a file written by zoobot train with keys "
        f"'state_dict' and 'hyper_parameters' (holding {', '.join(HYPER_PARAMETERS)}), found {found}; "
        "pass the .ckpt from SAVE_DIR/checkpoints"
    )


def _read_checkpoint(checkpoint: Path) -> dict:
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    try:
        record = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # torch.load raises many types for foreign files (pickle, zip, EOF...)
        raise _not_a_checkpoint(checkpoint, f"a file torch.load cannot read ({type(error).__name__})") from error
    return _checked(record, checkpoint)


def _checked(record, checkpoint: Path) -> dict:
    """``record`` if it is a zoobot checkpoint's contents, else the ValueError naming ``checkpoint``."""
    if not isinstance(record, dict):
        raise _not_a_checkpoint(checkpoint, f"a {type(record).__name__}")
    hparams = record.get("hyper_parameters")
    if not isinstance(record.get("state_dict"), dict) or not isinstance(hparams, dict):
        raise _not_a_checkpoint(checkpoint, f"keys {sorted(map(str, record))}")
    missing = [k for k in HYPER_PARAMETERS if k not in hparams]
    if missing:
        raise _not_a_checkpoint(checkpoint, f"hyper_parameters without {missing} (it has {sorted(map(str, hparams))})")
    return record


def _model_state(record: dict) -> dict[str, torch.Tensor]:
    prefix = "model."
    return {k[len(prefix):]: v for k, v in record["state_dict"].items() if k.startswith(prefix)}


@dataclass
class LoadedCheckpoint:
    """What :func:`read_checkpoint` returns."""

    model: GalaxyModel
    schema: Schema
    settings: TrainSettings
    model_config: dict


def read_checkpoint(checkpoint: Path) -> LoadedCheckpoint:
    """The model (eval mode, on CPU), its schema and the settings it was trained with.

    FileNotFoundError when the file does not exist; ValueError when it is not a zoobot checkpoint.
    """
    return _loaded(_read_checkpoint(checkpoint))


def checkpoint_from_record(record: dict, checkpoint: Path) -> LoadedCheckpoint:
    """:func:`read_checkpoint` of contents already loaded with ``torch.load`` (from ``checkpoint``)."""
    return _loaded(_checked(record, Path(checkpoint)))


def _loaded(record: dict) -> LoadedCheckpoint:
    hparams = record["hyper_parameters"]
    schema = schema_from_dict(hparams["schema"])
    model = model_from_config(hparams["model_config"], schema=schema)
    model.load_state_dict(_model_state(record))
    model.eval()
    known = TrainSettings.__dataclass_fields__
    settings = TrainSettings(**{k: v for k, v in hparams["settings"].items() if k in known})
    return LoadedCheckpoint(model, schema, settings, dict(hparams["model_config"]))


def load_model(checkpoint: Path) -> GalaxyModel:
    """Rebuild the GalaxyModel from the config stored in the checkpoint; eval mode, on CPU."""
    return read_checkpoint(checkpoint).model


def load_warm_start(model: GalaxyModel, checkpoint: Path) -> None:
    """Copy a checkpoint's weights into ``model``; the architecture and outputs must match."""
    record = _read_checkpoint(checkpoint)
    config = record["hyper_parameters"]["model_config"]
    try:
        model.load_state_dict(_model_state(record))
    except RuntimeError as error:
        raise ValueError(
            f"warm start: checkpoint {checkpoint} holds a model built as {config}, which does not "
            f"fit this run's model {model.config} ({str(error).splitlines()[0]}). Warm start from a "
            "checkpoint of the same architecture, schema and channels, or train from scratch"
        ) from None
