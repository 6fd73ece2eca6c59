"""Painting a synthetic galaxy: light components, PSF, sky and Poisson-like noise, asinh stretch.

:func:`render` turns a :class:`~zoobot.synthetic.morphology.Morphology` into a uint8 image:
Sérsic bulge + inclined exponential disk + Ferrers bar + spiral arms, a tidal tail, a companion,
a star or satellite trail, a Gaussian PSF, noise and colour. Only the noise is random.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from zoobot.synthetic.morphology import Morphology, disk_axis_ratio, sersic_b, sersic_flux

SKY_NOISE = 1.0  # per pixel per band; all surface brightnesses are in these units
GAIN = 4.0  # Poisson-like noise: variance = sky_noise**2 + flux / GAIN
PSF_FWHM = 0.025  # fraction of the image size (1.6 px at 64 px)
ASINH_SOFTENING = 1.5  # sky-noise units: fainter than this is linear, brighter is logarithmic
ASINH_WHITE = 60.0  # flux that maps to 255
ARM_SHARPNESS = 3  # arms follow ((1 + cos phase) / 2) ** ARM_SHARPNESS

# Colour of each light component in display order (red ~ z, green ~ r, blue ~ g), mean ~ 1.
BULGE_COLOUR = np.array([1.25, 1.0, 0.65], dtype=np.float32)
DISK_COLOUR = np.array([1.0, 1.0, 0.95], dtype=np.float32)
ARM_COLOUR = np.array([0.7, 0.95, 1.35], dtype=np.float32)
STAR_COLOUR = np.array([1.1, 1.0, 0.9], dtype=np.float32)


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) x and y of pixel centres relative to the image centre, in pixels."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    return axis[None, :].repeat(size, 0), axis[:, None].repeat(size, 1)  # y grows downwards


@lru_cache(maxsize=8)
def _psf_transfer(size: int, sigma: float) -> np.ndarray:
    """rfft2 of a unit-sum Gaussian PSF, centred for circular convolution."""
    frequency_y = np.fft.fftfreq(size)[:, None]
    frequency_x = np.fft.rfftfreq(size)[None, :]
    transfer = np.exp(-2.0 * (math.pi * sigma) ** 2 * (frequency_x**2 + frequency_y**2))
    return transfer.astype(np.complex64)


def _rotate(x: np.ndarray, y: np.ndarray, angle_degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along and across an axis at this angle (counter-clockwise, y up)."""
    c, s = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    return x * c - y * s, x * s + y * c


def _sersic(radius: np.ndarray, amplitude: float, effective_radius: float, n: float) -> np.ndarray:
    scaled = np.maximum(radius, 0.25) / effective_radius  # a quarter pixel softens the cusp
    return amplitude * np.exp(-sersic_b(n) * (scaled ** (1.0 / n) - 1.0))


def _galaxy_components(morph: Morphology, x: np.ndarray, y: np.ndarray, size: int) -> dict:
    """Noise-free light of each component, (size, size) float32, keyed by colour."""
    if morph.disturbance > 0:  # lopsidedness: outer isophotes drift towards one side
        r = np.hypot(x, y)
        shift = 0.5 * morph.disturbance * r**2 / size  # monotonic: d(shift)/dr < 1 in the image
        angle = math.radians(morph.disturbance_angle)
        x, y = x - shift * math.cos(angle), y - shift * math.sin(angle)
    along, across = _rotate(x, y, -morph.position_angle)  # major axis along `along`
    components = {"bulge": np.zeros_like(x), "disk": np.zeros_like(x), "arms": np.zeros_like(x)}

    c = 2.0 + 2.0 * morph.bulge_boxiness  # generalised ellipse: c > 2 is boxy
    bulge_radius = (np.abs(along) ** c + np.abs(across / morph.bulge_axis_ratio) ** c) ** (1.0 / c)
    components["bulge"] += _sersic(
        bulge_radius, morph.bulge_amplitude, morph.bulge_radius * size, morph.bulge_sersic_n
    )

    if morph.disk_amplitude > 0:
        q = disk_axis_ratio(morph.inclination)
        disk_x, disk_y = along, across / q  # deprojected into the disk plane
        disk_r = np.hypot(disk_x, disk_y)
        scale = morph.disk_scale * size
        # optically thin: projection concentrates the light, partly undone by dust
        disk = (morph.disk_amplitude / math.sqrt(q)) * np.exp(-disk_r / scale)
        if morph.bar_strength > 0:
            bar_x, bar_y = _rotate(disk_x, disk_y, -morph.bar_angle)
            length = morph.bar_length * size
            m2 = (bar_x / length) ** 2 + (bar_y / (0.28 * length)) ** 2
            ferrers = np.clip(1.0 - m2, 0.0, None) ** 2
            bar_amplitude = 2.0 * morph.bar_strength * morph.disk_amplitude / math.sqrt(q)
            components["disk"] += bar_amplitude * ferrers
        if morph.n_arms > 0:
            theta = np.arctan2(disk_y, disk_x)
            log_r = np.log(np.maximum(disk_r, 0.5) / scale)
            phase = morph.n_arms * (theta - log_r / math.tan(math.radians(morph.pitch_angle)))
            pattern = (0.5 + 0.5 * np.cos(phase + morph.arm_phase)) ** ARM_SHARPNESS
            pattern_mean = math.comb(2 * ARM_SHARPNESS, ARM_SHARPNESS) / 4.0**ARM_SHARPNESS
            start = max(morph.bar_length * size, 2.5 * morph.bulge_radius * size, 0.6 * scale)
            window = morph.arm_amplitude * (1.0 - np.exp(-((disk_r / start) ** 2)))
            components["arms"] += disk * window * pattern / pattern_mean
            disk = disk * (1.0 - window)
        components["disk"] += disk
        if morph.dust_lane > 0:
            lane = 1.0 - morph.dust_lane * np.exp(-0.5 * (across / max(0.35 * q * scale, 0.5)) ** 2)
            for key in components:
                components[key] *= lane

    if morph.disturbance >= 0.5:  # tidal tail: a loose, one-sided arc of faint blue light
        scale = max(morph.disk_scale, morph.bulge_radius) * size
        t = np.linspace(0.0, 1.0, 24, dtype=np.float32)
        start = math.radians(morph.disturbance_angle)
        radius = scale * (1.5 + 2.5 * t)
        angle = start + 2.2 * t
        points_x, points_y = radius * np.cos(angle), radius * np.sin(angle)
        width = 0.25 * scale + 0.4
        tail = np.zeros_like(x)
        for px, py, fade in zip(points_x, points_y, 1.0 - 0.7 * t):
            tail += fade * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2.0 * width**2))
        level = 0.25 * morph.surface_brightness * morph.disturbance
        components["arms"] += level * tail / 2.0
    return components


def _companion(morph: Morphology, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    angle = math.radians(morph.companion_angle)
    distance = morph.companion_distance * size
    cx, cy = x - distance * math.cos(angle), y - distance * math.sin(angle)
    along, across = _rotate(cx, cy, -morph.companion_angle * 1.7)
    radius = np.hypot(along, across / 0.75)
    effective_radius = 0.03 * size
    main_radius = max(morph.disk_scale, morph.bulge_radius) * size
    main_flux = morph.surface_brightness * 2.0 * math.pi * main_radius**2
    amplitude = morph.companion_flux_ratio * main_flux / sersic_flux(1.0, effective_radius, 2.0, 0.75)
    return _sersic(radius, amplitude, effective_radius, 2.0)


def _artifact(morph: Morphology, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    ax, ay = morph.artifact_x * size, morph.artifact_y * size
    along, across = _rotate(x - ax, y - ay, -morph.artifact_angle)
    if morph.artifact == "trail":
        return morph.artifact_brightness * np.exp(-0.5 * (across / (0.4 + 0.006 * size)) ** 2)
    r2 = along**2 + across**2
    core = np.exp(-r2 / (2.0 * (0.6 + 0.005 * size) ** 2))
    halo = 0.02 * (1.0 + r2 / (0.03 * size) ** 2) ** -1.5
    spike_width = 0.5
    spike_length = 0.08 * size
    spikes = (
        np.exp(-0.5 * (across / spike_width) ** 2) / (1.0 + np.abs(along) / spike_length) ** 2
        + np.exp(-0.5 * (along / spike_width) ** 2) / (1.0 + np.abs(across) / spike_length) ** 2
    )
    return morph.artifact_brightness * (core + halo + 0.03 * spikes)


def render(
    morph: Morphology, size: int = 64, channels: int = 3, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Paint a galaxy: (channels, size, size) uint8, channels 3 (z, r, g as RGB) or 1.

    The noise comes from ``rng``; everything else comes from ``morph``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 (greyscale) or 3 (colour), got {channels}")
    if size < 16:
        raise ValueError(f"size: expected at least 16 pixels, got {size}")
    rng = np.random.default_rng() if rng is None else rng
    x, y = _pixel_grid(size)
    y = -y  # y up, so angles run counter-clockwise on screen
    components = _galaxy_components(morph, x, y, size)
    image = (  # (3, size, size)
        BULGE_COLOUR[:, None, None] * components["bulge"]
        + DISK_COLOUR[:, None, None] * components["disk"]
        + ARM_COLOUR[:, None, None] * components["arms"]
    )
    if morph.merger == "merger":
        image += BULGE_COLOUR[:, None, None] * _companion(morph, x, y, size)
    if morph.artifact == "star":
        image += STAR_COLOUR[:, None, None] * _artifact(morph, x, y, size)
    if channels == 1:
        image = image.mean(axis=0, keepdims=True)
    sigma = PSF_FWHM * size / 2.3548
    image = np.fft.irfft2(np.fft.rfft2(image) * _psf_transfer(size, sigma), s=(size, size))
    image = image.astype(np.float32)
    if morph.artifact == "trail":  # one exposure, one band: trails are single-coloured
        trail = _artifact(morph, x, y, size)
        band = int(math.floor(morph.artifact_angle)) % image.shape[0]
        image[band] += trail
    noise_sigma = np.sqrt(SKY_NOISE**2 + np.clip(image, 0.0, None) / GAIN)
    image = image + noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)
    stretched = np.arcsinh(np.clip(image, 0.0, None) / ASINH_SOFTENING) / math.asinh(
        ASINH_WHITE / ASINH_SOFTENING
    )
    return np.clip(stretched * 255.0 + 0.5, 0, 255).astype(np.uint8)


def tile_images(images: list[np.ndarray], n_columns: int = 8, gap: int = 2) -> np.ndarray:
    """Lay (channels, size, size) images out in a grid: (rows*size, cols*size, channels) uint8."""
    if not images:
        raise ValueError("tile_images: expected at least one image, got none")
    channels, size, _ = images[0].shape
    n_rows = math.ceil(len(images) / n_columns)
    step = size + gap
    grid = np.full((n_rows * step - gap, n_columns * step - gap, channels), 40, dtype=np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, n_columns)
        top, left = row * step, column * step
        grid[top : top + size, left : left + size] = image.transpose(1, 2, 0)
    return grid
