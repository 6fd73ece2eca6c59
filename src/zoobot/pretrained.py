"""Start a model from a pretrained encoder: the backbone of a zoobot checkpoint of any schema, or a
timm-format weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) a user saved beforehand.

The backbone's weights are matched to the file by parameter name; the head is always built anew
for the run's schema. Anything that does not fit is a ValueError that lists it. Nothing is
downloaded.

    report = load_pretrained(model, "encoder.safetensors")   # {"source", "loaded", "ignored"}
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoobot.checkpoints import checkpoint_from_record
from zoobot.models import GalaxyModel

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")  # timm / torchvision files sometimes nest the weights
SHOWN = 8  # names listed per kind of misfit


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return f"{shown} (and {len(names) - SHOWN} more)" if len(names) > SHOWN else shown


def _is_zoobot_checkpoint(record) -> bool:
    return isinstance(record, dict) and isinstance(record.get("hyper_parameters"), dict) and "state_dict" in record


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(name -> tensor, what the file is) for a backbone, from any supported file."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"pretrained weights {path}: expected a file ending in {', '.join(WEIGHT_SUFFIXES)}, got {path.suffix!r}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), "timm-format weights (safetensors)"
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for foreign files
        raise ValueError(f"pretrained weights {path}: torch.load cannot read it ({type(error).__name__}: {error})") from None
    if _is_zoobot_checkpoint(record):
        loaded = checkpoint_from_record(record, path)
        config = loaded.model_config
        state = loaded.model.backbone.state_dict()
        return state, f"zoobot checkpoint ({config['architecture']}, schema {loaded.schema.name!r}, {config['channels']} channels)"
    for key in WRAPPER_KEYS:
        if isinstance(record, dict) and isinstance(record.get(key), dict):
            record = record[key]
            break
    if not isinstance(record, dict) or not all(isinstance(v, torch.Tensor) for v in record.values()):
        raise ValueError(
            f"pretrained weights {path}: expected a state dict (parameter name -> tensor) or a zoobot checkpoint, "
            f"found {type(record).__name__}"
        )
    prefix = "module."  # saved from a DistributedDataParallel wrapper
    if record and all(k.startswith(prefix) for k in record):
        record = {k[len(prefix):]: v for k, v in record.items()}
    return record, "timm-format weights"


def _classifier_prefixes(backbone: torch.nn.Module) -> tuple[str, ...]:
    """Names of timm's classifier layers (absent from a num_classes=0 backbone), e.g. ("classifier.",)."""
    names = getattr(backbone, "pretrained_cfg", {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def load_pretrained(model: GalaxyModel, path: str | Path) -> dict:
    """Copy a pretrained backbone's weights into ``model.backbone``; the head is left as built.

    Returns ``{"source": what the file is, "loaded": tensors copied, "ignored": the file's
    classifier tensors, which a backbone without classifier does not have}``. ValueError listing
    the backbone tensors the file lacks, the file's tensors the backbone lacks, and the tensors
    whose shapes differ.
    """
    path = Path(path)
    weights, source = _read_weights(path)
    expected = model.backbone.state_dict()
    classifier = _classifier_prefixes(model.backbone)
    ignored = sorted(k for k in weights if k not in expected and k.startswith(classifier))
    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(k for k in weights if k not in expected and k not in ignored)
    mismatched = sorted(
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    )
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} backbone tensors the file lacks: {_names(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} tensors of the file the backbone lacks: {_names(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} tensors with other shapes (file vs model): {_names(mismatched)}")
        raise ValueError(
            f"pretrained weights {path} ({source}) do not fit this run's backbone {model.config['architecture']!r} "
            f"with {model.channels} channels: {'; '.join(problems)}. Use the architecture the weights were saved "
            "from (--architecture) and the same number of channels (--greyscale for 1)"
        )
    model.backbone.load_state_dict({k: weights[k] for k in expected})
    return {"source": source, "loaded": len(expected), "ignored": ignored}
