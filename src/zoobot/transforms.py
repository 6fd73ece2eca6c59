"""Deterministic transforms of uint8 image batches (batch, channels, H, W), shared by training
and prediction: greyscale conversion and the eight dihedral views (rotations and mirrors).

Random training views live in :mod:`zoobot.augmentation`.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

#: Rotations by 0/90/180/270 degrees, then the same after a left-right flip.
N_DIHEDRAL_VIEWS = 8


def to_greyscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 (batch, 3, H, W) -> (batch, 1, H, W) by ITU-R 601 luma."""
    return TF.rgb_to_grayscale(images, num_output_channels=1)


def dihedral_view(images: torch.Tensor, view: int) -> torch.Tensor:
    """View 0-3: rotation by view * 90 degrees; 4-7: the same after a left-right flip."""
    if not 0 <= view < N_DIHEDRAL_VIEWS:
        raise ValueError(f"view: expected 0..{N_DIHEDRAL_VIEWS - 1}, got {view}")
    flipped = images.flip(-1) if view >= 4 else images
    return torch.rot90(flipped, k=view % 4, dims=(-2, -1))
