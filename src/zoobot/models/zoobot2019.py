"""The small CNN of Walmsley et al. (2019), registered as ``"zoobot-2019"``.

Convolutions are 3x3 with 'same' padding and ReLU; pools are 2x2 max pools with stride 2:

    conv 32, conv 32, pool, conv 64, conv 64, pool, conv 128, pool, conv 128, pool,
    flatten or global average pool, dense 128, ReLU

The head (dropout, then the output layer) is zoobot's :class:`~zoobot.models.heads.VoteHead`.

``pooling="avg"`` (default) averages the last feature map, so the network runs at any image
size. ``pooling="flatten"`` follows the paper and flattens it; it needs ``image_size`` (a
multiple of 16) because the dense layer's width depends on it.

Weights start with He (Kaiming-normal, fan-in, ReLU) initialisation and zero biases. PyTorch's
default (Kaiming-uniform with a = sqrt(5)) shrinks the signal about 2.4x per layer in this
plain ReLU stack: at initialisation the pooled features of different galaxies differed by
2e-5, so every gradient that depends on the image was tiny and training sat on the prior's
plateau for many epochs (docs/training.md, "Learning from few labels").
"""

from __future__ import annotations

import torch
from torch import nn

from zoobot.models.registry import register_architecture

POOLINGS = ("avg", "flatten")
N_DOWNSAMPLES = 4
DENSE_WIDTH = 128


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


class Zoobot2019(nn.Module):
    """forward: images (batch, channels, H, W), float -> features (batch, 128)."""

    def __init__(self, channels: int = 3, image_size: int | None = None, pooling: str = "avg"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
        reduction = 2**N_DOWNSAMPLES
        if pooling == "flatten" and (image_size is None or image_size % reduction):
            raise ValueError(
                f"zoobot-2019 with pooling='flatten' needs image_size, a multiple of {reduction}; "
                f"got {image_size!r}. Pass image_size=..., or use pooling='avg'"
            )
        self.pooling = pooling
        self.features = nn.Sequential(
            *_conv(channels, 32),
            *_conv(32, 32),
            nn.MaxPool2d(2),
            *_conv(32, 64),
            *_conv(64, 64),
            nn.MaxPool2d(2),
            *_conv(64, 128),
            nn.MaxPool2d(2),
            *_conv(128, 128),
            nn.MaxPool2d(2),
        )
        if pooling == "flatten":
            side = image_size // reduction
            self.pool = nn.Flatten(1)
            pooled_width = 128 * side * side
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            pooled_width = 128
        self.dense = nn.Sequential(nn.Linear(pooled_width, DENSE_WIDTH), nn.ReLU(inplace=True))
        self.num_features = DENSE_WIDTH
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)  # (batch, 128, H/16, W/16)
        return self.dense(self.pool(maps))  # (batch, 128)


@register_architecture("zoobot-2019")
def zoobot_2019(channels: int, image_size: int | None, pooling: str = "avg") -> Zoobot2019:
    return Zoobot2019(channels=channels, image_size=image_size, pooling=pooling)
