"""Random views of uint8 galaxy batches for training: :class:`GalaxyAugmentation` (flips,
rotation by any angle about the centre and a random resized crop, drawn per galaxy) and
:class:`PhotometricJitter` (mild brightness, contrast and noise, drawn per galaxy; used by
self-supervised pretraining, ``zoobot.pretrain``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

#: RandomResizedCrop keeps this fraction of the image area, at an aspect ratio in CROP_RATIO.
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (0.9, 1.1)


class GalaxyAugmentation:
    """A random view of each galaxy, on a uint8 batch (batch, channels, H, W) -> same shape.

    Every galaxy gets its own flips (left-right, up-down), rotation by any angle about the
    centre, and random resized crop back to ``size`` (keeping ``CROP_SCALE`` of the area at an
    aspect ratio in ``CROP_RATIO``); corners uncovered by the rotation are black, like the sky.

    ``batched=True`` (default) composes rotation and crop into one affine map per galaxy and
    resamples the whole batch in a single ``grid_sample`` call (bilinear, one interpolation).
    ``batched=False`` applies torchvision.transforms.v2 ``RandomRotation`` and
    ``RandomResizedCrop`` one galaxy at a time (v2 draws one set of parameters per call, so it
    cannot do per-galaxy views in one batched call). Both give the same distribution of views;
    the batched path was about 7x faster on CPU (docs/training.md). Flips are batched in both.
    """

    def __init__(self, size: int, rotate: bool = True, crop: bool = True, batched: bool = True):
        self.size, self.rotate, self.crop, self.batched = size, rotate, crop, batched
        steps = []
        if rotate:
            steps.append(v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR))
        if crop:
            steps.append(v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True))
        self.per_galaxy = v2.Compose(steps) if steps else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"augmentation: expected uint8 (batch, channels, H, W), got {images.dtype} {tuple(images.shape)}")
        batch = len(images)
        flip_h = torch.rand(batch) < 0.5  # (batch,)
        flip_v = torch.rand(batch) < 0.5
        images = torch.where(flip_h[:, None, None, None], images.flip(-1), images)
        images = torch.where(flip_v[:, None, None, None], images.flip(-2), images)
        if self.per_galaxy is None:
            return images
        if not self.batched:
            return torch.stack([self.per_galaxy(image) for image in images])
        return self._affine(images)

    def _affine(self, images: torch.Tensor) -> torch.Tensor:
        """Rotation then resized crop, one affine map per galaxy, one grid_sample for the batch."""
        batch = len(images)
        angle = (torch.rand(batch) * 2 - 1) * math.pi if self.rotate else torch.zeros(batch)  # (batch,)
        if self.crop:
            area = torch.empty(batch).uniform_(*CROP_SCALE)
            log_ratio = torch.empty(batch).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
            width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # crop side / image side
            height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
            shift_x = (torch.rand(batch) * 2 - 1) * (1 - width)  # crop centre, in [-1, 1] units
            shift_y = (torch.rand(batch) * 2 - 1) * (1 - height)
        else:
            width = height = torch.ones(batch)
            shift_x = shift_y = torch.zeros(batch)
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]  # (batch, 1, 1)
        width, height = width[:, None, None], height[:, None, None]
        shift_x, shift_y = shift_x[:, None, None], shift_y[:, None, None]
        # output pixel centres in [-1, 1] (align_corners=False convention)
        steps = (torch.arange(self.size, dtype=torch.float32) * 2 + 1) / self.size - 1
        out_x, out_y = steps[None, None, :], steps[None, :, None]  # (1, 1, W), (1, H, 1)
        # output -> crop box of the rotated image -> input coordinates, per galaxy
        crop_x = out_x * width + shift_x  # (batch, 1, W)
        crop_y = out_y * height + shift_y  # (batch, H, 1)
        grid = torch.stack([cos * crop_x - sin * crop_y, sin * crop_x + cos * crop_y], dim=-1)  # (batch, H, W, 2)
        warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped.add_(0.5).clamp_(0, 255).to(torch.uint8)  # round half up


class PhotometricJitter:
    """Mild photometric changes per galaxy, on a uint8 batch (batch, channels, H, W) -> same shape.

    Each galaxy's pixels x become ``(mean + (x - mean) * c) * b + noise``, rounded and clipped to
    0-255, with ``mean`` the galaxy's mean pixel, contrast ``c`` ~ U(1 - contrast, 1 + contrast),
    brightness ``b`` ~ U(1 - brightness, 1 + brightness) and Gaussian noise whose standard
    deviation (in 0-255 units) is drawn per galaxy from U(0, noise). The same factors apply to
    every channel, so colours keep their ratios. All zero: the batch is returned unchanged.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, noise: float = 4.0):
        for name, value, top in (("brightness", brightness, 1.0), ("contrast", contrast, 1.0), ("noise", noise, 255.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < top:
                raise ValueError(f"PhotometricJitter.{name}: expected a number in [0, {top:g}), got {value!r}")
        self.brightness, self.contrast, self.noise = float(brightness), float(contrast), float(noise)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"jitter: expected uint8 (batch, channels, H, W), got {images.dtype} {tuple(images.shape)}")
        if not (self.brightness or self.contrast or self.noise):
            return images
        batch = len(images)
        x = images.float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (batch, 1, 1, 1)
        contrast = torch.empty(batch, 1, 1, 1).uniform_(1 - self.contrast, 1 + self.contrast)
        brightness = torch.empty(batch, 1, 1, 1).uniform_(1 - self.brightness, 1 + self.brightness)
        x = (mean + (x - mean) * contrast) * brightness
        if self.noise:
            x = x + torch.randn_like(x) * torch.empty(batch, 1, 1, 1).uniform_(0, self.noise)
        return x.add_(0.5).clamp_(0, 255).to(torch.uint8)  # round half up
