"""Decode galaxy images (PNG, JPEG, FITS) to square uint8 arrays, channels first.

:func:`load_image` returns ``(channels, size, size)`` uint8, ``channels`` 1 (greyscale) or 3 (RGB).

- **PNG, JPEG and other Pillow formats.** Palette, alpha and CMYK images are converted with
  Pillow's ``convert("RGB")`` / ``convert("L")`` (alpha is dropped; greyscale is ITU-R 601 luma).
  16-bit greyscale PNGs are scaled to 8 bits by dividing by 257 (65535 -> 255).
- **JPEG downscaling.** ``Image.draft`` asks libjpeg to decode at 1/2, 1/4 or 1/8 scale, the
  smallest that is still at least ``size`` pixels, and the rest is done by the resize. On the
  423 px SDSS JPEGs at 128 px this is about 2x faster than a full decode and differs from
  it by 0.6 grey levels on average (see docs/shards.md).
- **FITS.** The first HDU holding data is read: a 2D image ``(H, W)`` or a cube ``(C, H, W)``
  whose bands are taken in cube order as channels (a 3-band cube becomes R, G, B in the order
  stored; a 1-band cube is repeated for RGB; for greyscale the stretched bands are averaged).
  Floating-point fluxes are scaled to uint8 by :func:`asinh_stretch`: clip to the
  [0.5, 99.5] percentiles of the finite pixels (all bands together, so colours keep their
  ratios), map to [0, 1], then ``asinh(x / a) / asinh(1 / a)`` with softening ``a = 0.1``,
  which lifts faint outskirts while keeping bright cores from saturating. Non-finite pixels
  (NaN, inf: masked or off the survey footprint) become 0, black. A file with no finite pixel
  is an error. FITS row 0 is the bottom of the picture (as DS9 shows it), so rows are flipped
  to put it at the bottom of the array too, matching survey JPEG cutouts.
- **Centre crop.** ``crop_fraction`` F in (0, 1] keeps the central F x F of the image before it
  is resized (1.0, the default, keeps everything and leaves the pixels exactly as without a
  crop). The box is :func:`crop_box`, in the pixels of the full-resolution image, for every
  format: a side of ``round(F * side)`` pixels (at least 1), the leftover split evenly, the odd
  pixel going to the right / bottom. A JPEG decoded at reduced scale by ``Image.draft`` is cut
  at the same box scaled to the reduced image (the whole pixels around it are cut out, then
  resized from the fractional box inside them); FITS images are cropped after the stretch, so the crop shows the same
  display values as the uncropped picture.
- **Resizing.** Images are resized to ``size x size`` with bilinear resampling (Pillow
  antialiases when it shrinks). Galaxy Zoo cutouts are square; a non-square image is stretched
  to a square, not cropped. An image (or crop) already at ``size x size`` is not resampled.

Every failure (missing file, unknown format, truncated or corrupt data, wrong number of bands)
raises :class:`ImageError` with the path and the reason.

:func:`iter_catalog_batches` decodes a whole catalog (``id_str``, ``file_loc``) batch by batch,
optionally in DataLoader worker processes (PyTorch is imported only then), for predicting
galaxies that have no shards.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd

#: File name endings read with astropy; everything else goes to Pillow.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
RESAMPLE = Image.Resampling.BILINEAR
FITS_LOW_PERCENTILE = 0.5
FITS_HIGH_PERCENTILE = 99.5
FITS_ASINH_SOFTENING = 0.1

#: Recorded in shard_config.json so a shard set says how its pixels were made.
DECODE_SETTINGS = {
    "resample": "bilinear",
    "jpeg_draft": True,
    "fits_stretch": {
        "kind": "asinh",
        "low_percentile": FITS_LOW_PERCENTILE,
        "high_percentile": FITS_HIGH_PERCENTILE,
        "softening": FITS_ASINH_SOFTENING,
    },
}


class ImageError(ValueError):
    """An image could not be read; ``path`` says which file and ``reason`` why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_fits(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def check_crop_fraction(crop_fraction) -> None:
    """Raise ValueError unless ``crop_fraction`` is a real number in (0, 1]."""
    if (
        isinstance(crop_fraction, bool)
        or not isinstance(crop_fraction, numbers.Real)
        or not 0 < crop_fraction <= 1  # also refuses NaN
    ):
        raise ValueError(
            f"crop_fraction: expected a number in (0, 1] (the central fraction of each image side "
            f"to keep; 1 keeps the whole image), got {crop_fraction!r}"
        )


def crop_box(width: int, height: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central ``crop_fraction`` of a ``width x height`` image.

    Each side keeps ``round(crop_fraction * side)`` pixels (halves round up, at least 1); the
    leftover is split evenly, the odd pixel going to the right / bottom.
    """
    check_crop_fraction(crop_fraction)
    kept_width = max(1, math.floor(crop_fraction * width + 0.5))
    kept_height = max(1, math.floor(crop_fraction * height + 0.5))
    left, top = (width - kept_width) // 2, (height - kept_height) // 2
    return left, top, left + kept_width, top + kept_height


def load_image(path: str | os.PathLike, size: int, channels: int, crop_fraction: float = 1.0) -> np.ndarray:
    """Decode one image file to a ``(channels, size, size)`` uint8 array.

    ``channels`` is 1 (greyscale) or 3 (RGB); ``crop_fraction`` in (0, 1] keeps the central
    fraction of each side before resizing (:func:`crop_box`). Raises ImageError when the file is
    missing, unreadable or not an image.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    check_crop_fraction(crop_fraction)
    if not os.path.isfile(path):
        raise ImageError(path, "file not found")
    try:
        if is_fits(path):
            return _load_fits(Path(path), size, channels, crop_fraction)
        return _load_pillow(Path(path), size, channels, crop_fraction)
    except ImageError:
        raise
    except Exception as error:  # decoders raise many types (OSError, SyntaxError, struct.error...)
        raise ImageError(path, f"cannot decode: {type(error).__name__}: {error}") from error


def _load_pillow(path: Path, size: int, channels: int, crop_fraction: float) -> np.ndarray:
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as image:
        full_width, full_height = image.size
        box = crop_box(full_width, full_height, crop_fraction)
        scale = 1.0  # decoded pixels per full-resolution pixel
        if image.format == "JPEG":  # the crop must still hold at least size pixels a side
            drafted = image.draft(mode, (math.ceil(size / crop_fraction),) * 2)
            if drafted is not None:
                scale = drafted[1][2] / full_width  # 1/2, 1/4 or 1/8; the decoded image may hold a part-pixel more
        image.load()  # decode now, so truncated files fail here
        image = _to_8bit(image, mode)
        if crop_fraction == 1.0:
            if image.size != (size, size):
                image = image.resize((size, size), RESAMPLE)
        else:
            left, top, right, bottom = (edge * scale for edge in box)  # fractional after a draft
            outer = (math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom))
            image = image.crop(outer)  # so the resize never reads pixels outside the crop
            inner = (left - outer[0], top - outer[1], right - outer[0], bottom - outer[1])
            if inner != (0, 0, size, size):
                image = image.resize((size, size), RESAMPLE, box=inner)
        pixels = np.asarray(image, dtype=np.uint8)
    if channels == 1:  # (H, W)
        return np.ascontiguousarray(pixels[None])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)


def _to_8bit(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit ``L`` or ``RGB``."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image)
        if image.mode.startswith("I;16"):
            grey = (values.astype(np.float64) / 257.0).round().astype(np.uint8)
        else:  # 32-bit integer or float: a flux, not a display value
            grey = np.round(asinh_stretch(values[None].astype(np.float64))[0] * 255).astype(np.uint8)
        image = Image.fromarray(grey)
    return image if image.mode == mode else image.convert(mode)


def asinh_stretch(data: np.ndarray) -> np.ndarray:
    """Fluxes (bands, H, W) -> display values in [0, 1], float64.

    Clip to the [FITS_LOW_PERCENTILE, FITS_HIGH_PERCENTILE] percentiles of the finite pixels of
    all bands together, rescale to [0, 1], then apply ``asinh(x / a) / asinh(1 / a)``.
    Non-finite pixels map to 0. Raises ValueError when no pixel is finite.
    """
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("no finite pixel values (all NaN or inf)")
    low, high = np.percentile(data[finite], [FITS_LOW_PERCENTILE, FITS_HIGH_PERCENTILE])
    if high <= low:  # a flat image: nothing to show
        return np.zeros(data.shape)
    scaled = np.clip((np.where(finite, data, low) - low) / (high - low), 0.0, 1.0)
    return np.arcsinh(scaled / FITS_ASINH_SOFTENING) / np.arcsinh(1.0 / FITS_ASINH_SOFTENING)


def _load_fits(path: Path, size: int, channels: int, crop_fraction: float) -> np.ndarray:
    from astropy.io import fits  # astropy is slow to import; only FITS users pay for it

    with fits.open(path, memmap=False) as hdus:
        data = next((hdu.data for hdu in hdus if hdu.data is not None and hdu.data.ndim >= 2), None)
        if data is None:
            raise ImageError(path, "FITS file holds no image HDU (expected a 2D image or a (C, H, W) cube)")
        data = np.asarray(data, dtype=np.float64)  # also native byte order
    if data.ndim == 2:
        data = data[None]  # (1, H, W)
    if data.ndim != 3:
        raise ImageError(path, f"expected a 2D image or a (C, H, W) cube, got shape {data.shape}")
    data = data[:, ::-1, :]  # FITS row 0 is the bottom of the picture; image row 0 is the top
    n_bands = data.shape[0]
    if channels == 3 and n_bands not in (1, 3):
        raise ImageError(
            path,
            f"expected 1 or 3 bands for an RGB image, got {n_bands} (shape {data.shape}); "
            "use --channels 1 to average the bands, or write a 3-band cube",
        )
    try:
        display = asinh_stretch(data)  # (bands, H, W) in [0, 1]
    except ValueError as error:
        raise ImageError(path, str(error)) from error
    if channels == 1:
        display = display.mean(axis=0, keepdims=True)
    left, top, right, bottom = crop_box(display.shape[2], display.shape[1], crop_fraction)
    display = display[:, top:bottom, left:right]
    resized = np.stack([_resize_float(band, size) for band in display])  # (bands, size, size)
    if channels == 3 and n_bands == 1:
        resized = np.repeat(resized, 3, axis=0)
    return np.ascontiguousarray(np.clip(np.round(resized * 255.0), 0, 255).astype(np.uint8))


def _resize_float(band: np.ndarray, size: int) -> np.ndarray:
    if band.shape == (size, size):
        return band
    image = Image.fromarray(band.astype(np.float32))
    return np.asarray(image.resize((size, size), RESAMPLE), dtype=np.float64)


def iter_catalog_batches(
    catalog: pd.DataFrame,
    size: int,
    channels: int,
    batch_size: int = 256,
    num_workers: int = 0,
    crop_fraction: float = 1.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode ``catalog``'s images (``id_str``, ``file_loc``) batch by batch: (ids, (B, C, size, size) uint8).

    ``crop_fraction`` is the centre crop of :func:`load_image`; a model sees its training crop
    only when this matches the crop of the shards it was trained on. ``num_workers > 0`` decodes
    in DataLoader worker processes. An unreadable image raises ImageError naming the file.
    """
    check_crop_fraction(crop_fraction)  # now, not at the first batch
    ids = catalog["id_str"].astype(str).to_numpy()
    paths = catalog["file_loc"].astype(str).to_numpy()
    return _decode_batches(ids, paths, size, channels, batch_size, num_workers, crop_fraction)


def _decode_batches(
    ids: np.ndarray, paths: np.ndarray, size: int, channels: int, batch_size: int, num_workers: int,
    crop_fraction: float,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if num_workers == 0:
        for start in range(0, len(ids), batch_size):
            chunk = slice(start, start + batch_size)
            yield ids[chunk], np.stack([load_image(p, size, channels, crop_fraction) for p in paths[chunk]])
        return
    from torch.utils.data import DataLoader  # PyTorch is slow to import; only worker decoding needs it

    loader = DataLoader(
        _CatalogImages(paths, size, channels, crop_fraction),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=np.stack,
    )
    for start, images in zip(range(0, len(ids), batch_size), loader):
        yield ids[start : start + batch_size], images


class _CatalogImages:
    """A map-style dataset (``__len__``, ``__getitem__``) of decoded images, for DataLoader workers."""

    def __init__(self, paths: np.ndarray, size: int, channels: int, crop_fraction: float):
        self.paths, self.size, self.channels, self.crop_fraction = paths, size, channels, crop_fraction

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_image(self.paths[index], self.size, self.channels, self.crop_fraction)
