"""A galaxy's image as Zooniverse accepts it: PNG or JPEG bytes.

PNG and JPEG files are sent as they are; FITS (asinh-stretched by ``zoobot.images``) and any
other format Pillow reads are converted to PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from zoobot.images import ImageError, is_fits, load_image

SENT_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg"}
FITS_SIZE = 424  # pixels a side for converted FITS images: Galaxy Zoo's usual subject size


def subject_image(path: str | Path) -> tuple[bytes, str]:
    """(image bytes, MIME type) for a subject; raises ImageError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "file not found")
    if is_fits(path):
        array = load_image(path, FITS_SIZE, channels=3)  # (channel, y, x) uint8
        return _png(Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))), "image/png"
    try:
        with Image.open(path) as image:
            if image.format in SENT_AS_IS:
                return path.read_bytes(), SENT_AS_IS[image.format]
            image.load()
            return _png(image.convert("RGB")), "image/png"
    except OSError as error:
        raise ImageError(path, f"cannot decode: {type(error).__name__}: {error}") from error


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
