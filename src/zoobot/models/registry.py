"""A registry of zoobot's own backbones, with timm as the fallback for every other name.

A backbone builder has the signature ``builder(channels: int, image_size: int | None, **kwargs)``
and returns an ``nn.Module`` whose forward maps images (batch, channels, H, W), float in [0, 1],
to pooled features (batch, n_features), and which has an ``int`` attribute ``num_features``.
Register one with ``@register_architecture("name")``.
"""

from __future__ import annotations

import difflib
import logging
from typing import Callable

import timm
from torch import nn

logger = logging.getLogger(__name__)

BackboneBuilder = Callable[..., nn.Module]

_ARCHITECTURES: dict[str, BackboneBuilder] = {}


def register_architecture(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register a backbone builder under ``name`` (which must not clash with timm)."""

    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered; pick another name")
        if timm.is_model(name):
            raise ValueError(f"architecture {name!r} is a timm model name; pick another name")
        _ARCHITECTURES[name] = builder
        return builder

    return decorator


def list_architectures(include_timm: bool = False) -> list[str]:
    """zoobot's registered architectures, sorted.

    Any timm model name (``timm.list_models()``) also works as an architecture, built with
    ``pretrained=False``; pass ``include_timm=True`` to append all of them.
    """
    names = sorted(_ARCHITECTURES)
    if include_timm:
        names += timm.list_models()
    return names


def build_backbone(architecture: str, channels: int, image_size: int | None, **kwargs) -> nn.Module:
    """Build a backbone that returns pooled features (batch, n_features); never downloads weights.

    Registered names use their builder. Any other name goes to
    ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, **kwargs)``;
    ``image_size`` is passed on as timm's ``img_size`` to the models that take it (ViTs and the
    like) and is ignored by the ones that do not (convolutional nets work at any size).
    """
    if architecture in _ARCHITECTURES:
        return _ARCHITECTURES[architecture](channels=channels, image_size=image_size, **kwargs)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, list(_ARCHITECTURES) + timm.list_models(), n=5)
        raise ValueError(
            f"unknown architecture {architecture!r}; expected one of zoobot's "
            f"{sorted(_ARCHITECTURES)} or a timm model name (see timm.list_models()). "
            f"Close matches: {close or 'none'}"
        )
    for reserved in ("pretrained", "num_classes", "in_chans"):
        if reserved in kwargs:
            raise ValueError(
                f"backbone kwarg {reserved!r} is set by zoobot (pretrained=False, num_classes=0, "
                "in_chans=channels); remove it"
            )
    timm_kwargs = dict(pretrained=False, num_classes=0, in_chans=channels, **kwargs)
    if image_size is not None and "img_size" not in kwargs:
        try:
            return timm.create_model(architecture, img_size=image_size, **timm_kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            logger.debug("%s takes no img_size; building it without", architecture)
    return timm.create_model(architecture, **timm_kwargs)


def backbone_num_features(backbone: nn.Module) -> int:
    """Width of the pooled features: timm's ``head_hidden_size`` if set, else ``num_features``."""
    for attribute in ("head_hidden_size", "num_features"):
        value = getattr(backbone, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"backbone {type(backbone).__name__} has no int attribute 'num_features'; a backbone "
        "builder must set it to the width of the pooled features it returns"
    )
