"""GalaxyModel: a backbone that pools image features, and a vote head with always-on dropout.

Shapes:
    forward_features(images (batch, channels, H, W)) -> (batch, n_features)
    forward_head(features, n_samples)                -> (batch, n_samples, n_outputs)
    forward(images, n_samples)                       -> (batch, n_samples, n_outputs)

Inputs may be uint8 (0-255, e.g. shard arrays fed as they are) or floating point. The model
divides uint8 images by 255 itself; floating-point images are taken to be in [0, 1] already and
are passed through unchanged. So ``model(x_uint8)`` equals ``model(x_uint8.float() / 255)``.

MC dropout: ``model.eval(); model(images, n_samples=T)`` runs the backbone once (batch norm frozen)
and draws T independent dropout masks in the head, which is always on.

channels_last works: ``model.to(memory_format=torch.channels_last)`` and feed images made with
``images.contiguous(memory_format=torch.channels_last)``; outputs equal the default layout's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from zoobot.models.heads import SIGMOID, SOFTPLUS, VoteHead
from zoobot.models.registry import backbone_num_features, build_backbone
from zoobot.schema import Schema, get_schema

logger = logging.getLogger(__name__)

STOCHASTIC_BACKBONE_KWARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")
CONFIG_KEYS = ("architecture", "schema", "channels", "dropout_rate", "image_size")


class GalaxyModel(nn.Module):
    """Backbone + :class:`VoteHead`. Build it with :func:`create_model`.

    Attributes: ``schema``, ``likelihood`` ("binomial" | "dirichlet_multinomial"), ``n_outputs``
    (1 for binomial, else ``schema.n_answers``), ``n_features``, ``channels``, ``image_size``
    and ``config`` (a plain dict; ``model_from_config(model.config)`` rebuilds the same module).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: VoteHead,
        schema: Schema,
        channels: int,
        image_size: int | None,
        config: dict[str, Any],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.schema = schema
        self.likelihood = head.likelihood
        self.n_outputs = head.linear.out_features
        self.n_features = head.linear.in_features
        self.channels = channels
        self.image_size = image_size
        self._config = dict(config)

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the plain-dict config: ``model_from_config(model.config)`` rebuilds this module."""
        return dict(self._config)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Check shape and dtype; uint8 -> float in [0, 1] (the head's float dtype)."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            message = f"images: expected shape (batch, {self.channels}, H, W), got {tuple(images.shape)}"
            if images.ndim == 4 and images.shape[-1] == self.channels:
                message += "; for channels-last arrays (batch, H, W, channels) use .permute(0, 3, 1, 2)"
            raise ValueError(message)
        if self.image_size is not None and tuple(images.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"images: this model was built for {self.image_size}x{self.image_size} px, got "
                f"{images.shape[2]}x{images.shape[3]}; resize the images (or build the model with "
                "image_size=None if the architecture runs at any size)"
            )
        if images.dtype == torch.uint8:
            return images.to(self.head.linear.weight.dtype).div_(255.0)
        if not images.is_floating_point():
            raise TypeError(f"images: expected uint8 or floating point, got {images.dtype}")
        return images

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (batch, channels, H, W), uint8 or float in [0, 1] -> features (batch, n_features)."""
        features = self.backbone(self.prepare_images(images))  # (batch, feature)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"backbone {self._config['architecture']!r} returned shape {tuple(features.shape)}; "
                f"expected pooled features (batch, {self.n_features}). Do not pass backbone kwargs "
                "that turn off pooling (e.g. global_pool='')"
            )
        return features

    def forward_head(self, features: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """Features (batch, n_features) -> (batch, n_samples, n_outputs); a new mask per sample."""
        return self.head(features, n_samples=n_samples)

    def forward(self, images: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """Images -> (batch, n_samples, n_outputs): rho (binomial) or Dirichlet alpha per answer."""
        return self.forward_head(self.forward_features(images), n_samples=n_samples)


def _resolve_schema(schema: Schema | str | None) -> Schema:
    if schema is None:
        raise ValueError("schema: expected a zoobot.schema.Schema or a schema name, got None")
    if isinstance(schema, str):
        return get_schema(schema)
    if not isinstance(schema, Schema):
        raise TypeError(f"schema: expected a Schema or a schema name, got {type(schema).__name__}")
    try:
        registered = get_schema(schema.name)
    except KeyError:
        logger.debug("schema %r is not registered; model_from_config will need schema=", schema.name)
        return schema
    if registered.answer_columns != schema.answer_columns:
        raise ValueError(
            f"schema {schema.name!r} has the name of a registered schema but different answers; "
            "the saved config would rebuild the wrong head. Give your schema another name"
        )
    return schema


def create_model(
    architecture: str = "efficientnet_b0",
    schema: Schema | str | None = None,
    channels: int = 3,
    dropout_rate: float = 0.2,
    image_size: int | None = None,
    head_link: str = SOFTPLUS,
    **backbone_kwargs: Any,
) -> GalaxyModel:
    """Build a :class:`GalaxyModel`; weights are never downloaded.

    architecture: a registered zoobot architecture (``list_architectures()``, e.g. "zoobot-2019")
        or any timm model name, built as ``timm.create_model(name, pretrained=False,
        num_classes=0, in_chans=channels, **backbone_kwargs)``.
    schema: the Schema, or its name for ``zoobot.schema.get_schema`` (e.g. "decals-dr5:smooth-or-featured").
        One question with two answers gives a binomial model (output rho, n_outputs=1);
        anything else a Dirichlet-multinomial model (one concentration per answer).
    channels: 3 for RGB, 1 for greyscale.
    dropout_rate: the head's always-on dropout, in [0, 1).
    image_size: input side in pixels, or None for any size. When set, inputs of another size
        raise; timm models that take ``img_size`` (ViTs) are built for it.
    head_link: the Dirichlet head's link (``heads.DIRICHLET_LINKS``); "sigmoid" only for
        checkpoints saved before the softplus link (configs without ``head_link``).
    backbone_kwargs: passed to the backbone builder (e.g. ``pooling="flatten"`` for zoobot-2019).
        They must be plain values so the config can be saved. Stochastic backbone layers
        (timm's ``drop_rate``, ``drop_path_rate``, ``drop_block_rate`` above 0) are refused: MC
        prediction runs the backbone once per galaxy in eval mode and samples only the head's
        dropout, so they would be silently off when the uncertainty is estimated.
    """
    resolved = _resolve_schema(schema)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"channels: expected an int >= 1 (3 for RGB, 1 for greyscale), got {channels!r}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size: expected a positive int or None, got {image_size!r}")
    stochastic = {k: v for k, v in backbone_kwargs.items() if k in STOCHASTIC_BACKBONE_KWARGS and v}
    if stochastic:
        raise ValueError(
            f"backbone options {stochastic} make the backbone stochastic, but MC prediction samples only the "
            "head's dropout (the backbone runs once per galaxy, in eval mode), so they would be silently off "
            "when uncertainties are estimated; set them to 0 and use dropout_rate for the MC head"
        )
    backbone = build_backbone(architecture, channels=channels, image_size=image_size, **backbone_kwargs)
    likelihood = resolved.likelihood
    head = VoteHead(
        n_features=backbone_num_features(backbone),
        n_outputs=resolved.n_outputs,
        dropout_rate=float(dropout_rate),
        likelihood=likelihood,
        link=head_link,
    )
    config = {
        "architecture": architecture,
        "schema": resolved.name,
        "channels": channels,
        "dropout_rate": float(dropout_rate),
        "image_size": image_size,
        "head_link": head_link,
        **backbone_kwargs,
    }
    return GalaxyModel(backbone, head, resolved, channels=channels, image_size=image_size, config=config)


def model_from_config(config: dict[str, Any], schema: Schema | None = None) -> GalaxyModel:
    """Rebuild the module described by ``model.config`` (fresh weights; then load_state_dict).

    The schema is looked up by the name stored in the config; pass ``schema`` for a custom schema
    that ``zoobot.schema.get_schema`` does not know (its name must match the config's).
    """
    missing = [key for key in ("architecture", "schema") if key not in config]
    if missing:
        raise KeyError(
            f"model config lacks {missing}; expected at least {list(CONFIG_KEYS)}, got {sorted(config)}"
        )
    kwargs = dict(config)
    kwargs.setdefault("head_link", SIGMOID)  # configs saved before the softplus link
    name = kwargs.pop("schema")
    if schema is None:
        try:
            schema = get_schema(name)
        except KeyError as error:
            raise KeyError(
                f"model config names schema {name!r}, which get_schema does not know ({error}); "
                "pass the Schema object: model_from_config(config, schema=...)"
            ) from None
    elif schema.name != name:
        raise ValueError(f"schema: the config names {name!r}, got a schema named {schema.name!r}")
    return create_model(schema=schema, **kwargs)
