"""Synthetic galaxies with known morphology, and simulated Galaxy Zoo volunteer votes.

Three steps, each a pure function of a seeded ``numpy.random.Generator``:

1. :func:`sample_morphology` draws the true parameters of one galaxy (:class:`Morphology`):
   smooth elliptical, featured disk or artifact; Sérsic bulge, exponential disk, inclination,
   bar, logarithmic spiral arms, disturbance or merger, and surface brightness (signal-to-noise).
2. :func:`render` paints it: Sérsic bulge + inclined exponential disk + Ferrers bar + spiral
   arms, a Gaussian PSF, sky and Poisson-like noise, colour, and an asinh stretch to uint8.
3. :func:`simulate_votes` sends volunteers down a decision tree. Each volunteer perceives the
   galaxy with their own noise and sensitivity, so faint features are missed more often, and
   answers a question only when their own earlier answers lead to it.

:func:`make_synthetic_catalog` does all three for many galaxies and writes a master catalog.
Lengths are fractions of the image size, so a galaxy looks the same at 64 or 128 pixels.
Surface brightnesses are in units of the sky noise, so they set the signal-to-noise.
See docs/synthetic.md for the model in words.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from zoobot.catalog import validate_catalog, write_catalog
from zoobot.schema import DECALS_DR5, GZ2, Schema

KINDS = ("smooth", "featured", "artifact")
KIND_PROBABILITIES = (0.42, 0.55, 0.03)
ARTIFACTS = ("none", "star", "trail")
BAR_CLASSES = ("strong", "weak", "none")
WINDINGS = ("tight", "medium", "loose", "none")
MERGER_CLASSES = ("none", "minor", "major", "merger")
DISTURBANCE_RANGES = {"none": (0.0, 0.1), "minor": (0.25, 0.4), "major": (0.5, 0.7), "merger": (0.8, 1.0)}

SKY_NOISE = 1.0  # per pixel per band; all surface brightnesses are in these units
GAIN = 4.0  # Poisson-like noise: variance = sky_noise**2 + flux / GAIN
PSF_FWHM = 0.025  # fraction of the image size (1.6 px at 64 px)
DISK_THICKNESS = 0.12  # intrinsic minor/major axis ratio of a disk seen edge-on
ASINH_SOFTENING = 1.5  # sky-noise units: fainter than this is linear, brighter is logarithmic
ASINH_WHITE = 60.0  # flux that maps to 255
ARM_SHARPNESS = 3  # arms follow ((1 + cos phase) / 2) ** ARM_SHARPNESS
TIGHT_PITCH, LOOSE_PITCH = 15.0, 25.0  # degrees: pitch below -> tight, above -> loose
EDGE_ON_INCLINATION = 78.0  # degrees

# Colour of each light component in display order (red ~ z, green ~ r, blue ~ g), mean ~ 1.
BULGE_COLOUR = np.array([1.25, 1.0, 0.65], dtype=np.float32)
DISK_COLOUR = np.array([1.0, 1.0, 0.95], dtype=np.float32)
ARM_COLOUR = np.array([0.7, 0.95, 1.35], dtype=np.float32)
STAR_COLOUR = np.array([1.1, 1.0, 0.9], dtype=np.float32)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Morphology:
    """The true parameters of one synthetic galaxy.

    Lengths are fractions of the image size; surface brightnesses are in units of the sky
    noise; angles are in degrees unless noted.
    """

    kind: str  # "smooth" elliptical, "featured" disk, or "artifact"
    artifact: str  # "none", "star" (bright star with spikes) or "trail" (satellite trail)
    surface_brightness: float  # disk central (featured) or effective (smooth) brightness
    bulge_to_total: float  # bulge share of the galaxy's light
    bulge_sersic_n: float
    bulge_radius: float  # effective (half-light) radius
    bulge_amplitude: float  # surface brightness at the effective radius
    bulge_axis_ratio: float
    bulge_boxiness: float  # 0: elliptical isophotes, 1: boxy
    disk_scale: float  # exponential scale length; 0 without a disk
    disk_amplitude: float  # face-on central surface brightness; 0 without a disk
    inclination: float  # 0 face-on, 90 edge-on
    position_angle: float  # of the major axis, counter-clockwise from +x
    axis_ratio: float  # apparent minor / major axis ratio of the whole galaxy
    bar: str  # "strong", "weak" or "none"
    bar_strength: float  # bar central brightness relative to the disk's, 0 without a bar
    bar_length: float  # semi-major axis
    bar_angle: float  # in the disk plane, from the major axis
    n_arms: int  # 0 without spiral arms
    pitch_angle: float  # of the logarithmic spiral; 0 without arms
    winding: str  # "tight", "medium", "loose", or "none" without arms
    arm_amplitude: float  # share of the disk's light moved into the arms, 0..1
    arm_phase: float  # radians
    merger: str  # "none", "minor", "major" (disturbance) or "merger" (with a companion)
    disturbance: float  # 0 undisturbed .. 1 merging
    disturbance_angle: float  # direction of the lopsidedness and the tidal tail
    companion_distance: float  # 0 without a companion
    companion_angle: float
    companion_flux_ratio: float  # companion / main galaxy
    dust_lane: float  # depth of the mid-plane dust lane, 0..1
    artifact_x: float  # artifact position relative to the centre
    artifact_y: float
    artifact_angle: float  # of the trail or of the star's diffraction spikes
    artifact_brightness: float  # peak surface brightness of the star or the trail

    @property
    def is_edge_on(self) -> bool:
        return self.kind == "featured" and self.inclination >= EDGE_ON_INCLINATION

    @property
    def face_on_factor(self) -> float:
        """1 face-on, falling to 0 near edge-on: how well in-plane structure can be seen."""
        return float(np.clip((math.cos(math.radians(self.inclination)) - 0.2) / 0.6, 0.0, 1.0))

    @property
    def arm_visibility(self) -> float:
        """Signal-to-noise-like visibility of the spiral arms (about 1: just visible)."""
        if self.n_arms == 0:
            return 0.0
        return self.arm_amplitude * self.disk_amplitude * self.face_on_factor / 1.5

    @property
    def bar_visibility(self) -> float:
        """Signal-to-noise-like visibility of the bar (about 1: just visible)."""
        return self.bar_strength * self.disk_amplitude * self.face_on_factor / 1.5

    @property
    def disk_visibility(self) -> float:
        """How recognisable the galaxy is as a disk: thin edge-on disks are obvious."""
        if self.disk_amplitude == 0:
            return 0.0
        thinness = (1.0 - self.axis_ratio) / (1.0 - DISK_THICKNESS)
        return self.disk_amplitude * (1.0 - self.bulge_to_total) * thinness**2 / 2.0

    @property
    def disturbance_visibility(self) -> float:
        """Seen disturbance: the true level, dimmed for faint galaxies."""
        return self.disturbance * min(1.0, self.surface_brightness / 3.0)

    @property
    def snr(self) -> float:
        """Rough signal-to-noise of the whole galaxy (brightness x area in pixels at 64 px)."""
        radius = max(self.disk_scale * 1.7, self.bulge_radius) * 64
        return float(self.surface_brightness * math.sqrt(math.pi) * radius)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------
# Sampling true morphologies


def sersic_b(n: float) -> float:
    """b_n such that the effective radius encloses half the light (Ciotti & Bertin 1999)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_flux(amplitude: float, radius: float, n: float, axis_ratio: float) -> float:
    """Total flux of a Sérsic profile with surface brightness ``amplitude`` at ``radius``."""
    b = sersic_b(n)
    return (
        2.0 * math.pi * n * amplitude * radius**2 * axis_ratio
        * math.exp(b) * b ** (-2.0 * n) * math.gamma(2.0 * n)
    )


def disk_axis_ratio(inclination: float) -> float:
    """Apparent axis ratio of a thick disk at this inclination (degrees)."""
    cos_i = math.cos(math.radians(inclination))
    return math.sqrt(cos_i**2 * (1.0 - DISK_THICKNESS**2) + DISK_THICKNESS**2)


def winding_of(pitch_angle: float) -> str:
    if pitch_angle <= 0:
        return "none"
    if pitch_angle < TIGHT_PITCH:
        return "tight"
    return "medium" if pitch_angle < LOOSE_PITCH else "loose"


def sample_morphology(rng: np.random.Generator) -> Morphology:
    """Draw one galaxy's true morphology."""
    kind = KINDS[rng.choice(3, p=KIND_PROBABILITIES)]
    artifact = "none"
    host = kind
    if kind == "artifact":
        artifact = ("star", "trail")[int(rng.integers(2))]
        host = "smooth" if rng.random() < 0.5 else "featured"

    position_angle = float(rng.uniform(0, 180))
    p = dict(
        kind=kind, artifact=artifact, position_angle=position_angle,
        bar="none", bar_strength=0.0, bar_length=0.0, bar_angle=0.0,
        n_arms=0, pitch_angle=0.0, winding="none", arm_amplitude=0.0, arm_phase=0.0,
        dust_lane=0.0, bulge_boxiness=0.0,
    )
    if host == "smooth":
        axis_ratio = float(np.clip(1.0 - abs(rng.normal(0.0, 0.3)), 0.25, 1.0))
        cos_i = math.sqrt(max(axis_ratio**2 - DISK_THICKNESS**2, 0.0) / (1.0 - DISK_THICKNESS**2))
        surface_brightness = float(np.exp(rng.uniform(np.log(0.8), np.log(12.0))))
        n = float(rng.uniform(2.5, 5.5))
        p.update(
            surface_brightness=surface_brightness, bulge_to_total=1.0, bulge_sersic_n=n,
            bulge_radius=float(rng.uniform(0.05, 0.12)), bulge_amplitude=surface_brightness,
            bulge_axis_ratio=axis_ratio, bulge_boxiness=float(rng.uniform(0.0, 0.3)),
            disk_scale=0.0, disk_amplitude=0.0,
            inclination=math.degrees(math.acos(min(cos_i, 1.0))), axis_ratio=axis_ratio,
        )
    else:
        inclination = math.degrees(math.acos(rng.uniform(0.0, 1.0)))  # isotropic orientations
        axis_ratio = disk_axis_ratio(inclination)
        surface_brightness = float(np.exp(rng.uniform(np.log(1.5), np.log(30.0))))
        disk_scale = float(rng.uniform(0.08, 0.15))
        bulge_to_total = float(np.clip(rng.beta(1.3, 3.5), 0.0, 0.8))
        if rng.random() < 0.1:
            bulge_to_total = float(rng.uniform(0.0, 0.03))  # bulgeless
        n = float(rng.uniform(1.0, 4.0))
        bulge_radius = float(disk_scale * rng.uniform(0.2, 0.45))
        bulge_axis_ratio = float(rng.uniform(0.7, 1.0))
        bulge_boxiness = float(rng.uniform(0.0, 1.0))
        if inclination > 60:  # the bulge is seen from the side: as flat as its isophotes allow
            bulge_axis_ratio = float(max(bulge_axis_ratio * 0.8, axis_ratio))
        disk_flux = 2.0 * math.pi * surface_brightness * disk_scale**2
        bulge_flux = disk_flux * bulge_to_total / (1.0 - bulge_to_total)
        bulge_amplitude = bulge_flux / sersic_flux(1.0, bulge_radius, n, bulge_axis_ratio)
        p.update(
            surface_brightness=surface_brightness, bulge_to_total=bulge_to_total,
            bulge_sersic_n=n, bulge_radius=bulge_radius, bulge_amplitude=bulge_amplitude,
            bulge_axis_ratio=bulge_axis_ratio, bulge_boxiness=bulge_boxiness,
            disk_scale=disk_scale, disk_amplitude=surface_brightness,
            inclination=inclination, axis_ratio=axis_ratio,
        )
        bar = BAR_CLASSES[rng.choice(3, p=(0.2, 0.2, 0.6))]
        if bar != "none":
            strength = rng.uniform(0.6, 1.0) if bar == "strong" else rng.uniform(0.2, 0.45)
            p.update(
                bar=bar, bar_strength=float(strength),
                bar_length=float(disk_scale * rng.uniform(1.0, 2.0)),
                bar_angle=float(rng.uniform(0, 180)),
            )
        if rng.random() < 0.75:
            n_arms = int(rng.choice([1, 2, 3, 4, 5, 6], p=(0.05, 0.5, 0.2, 0.13, 0.08, 0.04)))
            pitch = float(rng.uniform(7.0, 38.0))
            p.update(
                n_arms=n_arms, pitch_angle=pitch, winding=winding_of(pitch),
                arm_amplitude=float(rng.uniform(0.2, 0.85)),
                arm_phase=float(rng.uniform(0, 2 * math.pi)),
            )
        if inclination > 70 and rng.random() < 0.6:
            p["dust_lane"] = float(rng.uniform(0.3, 0.8))

    merger = MERGER_CLASSES[rng.choice(4, p=(0.75, 0.12, 0.08, 0.05))]
    low, high = DISTURBANCE_RANGES[merger]
    companion = merger == "merger"
    p.update(
        merger=merger, disturbance=float(rng.uniform(low, high)),
        disturbance_angle=float(rng.uniform(0, 360)),
        companion_distance=float(rng.uniform(0.1, 0.2)) if companion else 0.0,
        companion_angle=float(rng.uniform(0, 360)) if companion else 0.0,
        companion_flux_ratio=float(rng.uniform(0.3, 0.9)) if companion else 0.0,
    )

    if artifact == "star":
        radius, angle = rng.uniform(0.0, 0.12), rng.uniform(0, 2 * math.pi)
        p.update(
            artifact_x=float(radius * math.cos(angle)), artifact_y=float(radius * math.sin(angle)),
            artifact_angle=float(rng.uniform(0, 90)),
            artifact_brightness=float(rng.uniform(300, 3000)),
        )
        for key in ("surface_brightness", "bulge_amplitude", "disk_amplitude"):
            p[key] *= 0.5  # the galaxy behind a bright star is usually faint
    elif artifact == "trail":
        p.update(
            artifact_x=float(rng.uniform(-0.2, 0.2)), artifact_y=float(rng.uniform(-0.2, 0.2)),
            artifact_angle=float(rng.uniform(0, 180)),
            artifact_brightness=float(rng.uniform(10, 40)),
        )
    else:
        p.update(artifact_x=0.0, artifact_y=0.0, artifact_angle=0.0, artifact_brightness=0.0)
    return Morphology(**p)


# ------------------------------------------------------------------------------------------
# Rendering


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


# ------------------------------------------------------------------------------------------
# Simulated volunteers


@dataclass
class Volunteers:
    """The volunteers who see one galaxy: each with their own sensitivity to faint features."""

    sensitivity: np.ndarray  # (volunteer,), multiplies every visibility; 1 is typical
    rng: np.random.Generator

    def __len__(self) -> int:
        return len(self.sensitivity)

    def perceive(self, value: float, noise: float) -> np.ndarray:
        """(volunteer,) noisy readings of a true value."""
        return value + noise * self.rng.standard_normal(len(self))

    def detect(
        self, visibility: float, floor: float, ceiling: float, steepness: float = 2.5
    ) -> np.ndarray:
        """(volunteer,) probability to notice a feature: a logistic curve in log visibility."""
        seen = np.log(np.maximum(visibility * self.sensitivity, 1e-6))
        return floor + (ceiling - floor) / (1.0 + np.exp(-steepness * seen))


def _one_hot(index: np.ndarray, n_answers: int) -> np.ndarray:
    return np.eye(n_answers)[index]


def _bins(values: np.ndarray, descending_edges: list[float]) -> np.ndarray:
    """Index of the first edge a value is at or above; len(edges) when below them all."""
    return (values[:, None] < np.asarray(descending_edges)[None, :]).sum(axis=1)


def _smooth_or_featured(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    evidence = max(
        morph.arm_visibility, morph.bar_visibility, morph.disk_visibility,
        0.6 * morph.disturbance_visibility * 3.0,
    )
    if morph.kind == "smooth" or (morph.kind == "artifact" and morph.disk_amplitude == 0):
        evidence = 0.15 + morph.disturbance_visibility
    featured = volunteers.detect(evidence, floor=0.03, ceiling=0.95)  # (volunteer,)
    artifact_share = {"none": 0.01, "star": 0.85, "trail": 0.6}[morph.artifact]
    artifact = np.full(len(volunteers), artifact_share)
    return np.stack([(1 - artifact) * (1 - featured), (1 - artifact) * featured, artifact], axis=1)


def _disk_edge_on(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.inclination, 5.0)
    return _one_hot((seen < EDGE_ON_INCLINATION).astype(int), 2)  # yes, no


def _has_spiral_arms(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    if morph.n_arms > 0:
        yes = volunteers.detect(morph.arm_visibility, floor=0.04, ceiling=0.96)
    else:
        yes = volunteers.detect(0.3 * morph.bar_visibility + 0.05, floor=0.04, ceiling=0.3)
    return np.stack([yes, 1 - yes], axis=1)


def _bar(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    if morph.bar_strength > 0:
        seen = volunteers.detect(morph.bar_visibility, floor=0.05, ceiling=0.95)
        strength = volunteers.perceive(morph.bar_strength, 0.15)
        strong = 1.0 / (1.0 + np.exp(-(strength - 0.55) / 0.06))
    else:
        seen = np.full(len(volunteers), 0.07)
        strong = np.full(len(volunteers), 0.15)
    return np.stack([seen * strong, seen * (1 - strong), 1 - seen], axis=1)


def _perceived_bulge(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """(volunteer,) perceived bulge-to-total ratio, noisy in logit space."""
    bt = np.clip(morph.bulge_to_total, 0.005, 0.995)
    logit = volunteers.perceive(math.log(bt / (1 - bt)), 0.5)
    return 1.0 / (1.0 + np.exp(-logit))


def _bulge_size(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = _perceived_bulge(morph, volunteers)  # dominant large moderate small none
    return _one_hot(_bins(seen, [0.5, 0.3, 0.12, 0.03]), 5)


def _how_rounded(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.axis_ratio, 0.07)  # round in-between cigar-shaped
    return _one_hot(_bins(seen, [0.8, 0.45]), 3)


def _edge_on_bulge(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    bulge = _perceived_bulge(morph, volunteers)  # boxy none rounded
    boxy = volunteers.perceive(morph.bulge_boxiness, 0.25) > 0.6
    answer = np.where(bulge < 0.05, 1, np.where(boxy, 0, 2))
    return _one_hot(answer, 3)


def _spiral_winding(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    pitch = morph.pitch_angle if morph.n_arms else 20.0
    seen = volunteers.perceive(pitch, 5.0)  # tight medium loose
    return _one_hot(2 - _bins(seen, [LOOSE_PITCH, TIGHT_PITCH]), 3)


def _spiral_arm_count(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    n_arms = morph.n_arms if morph.n_arms else 2
    cant_tell = 1.0 - volunteers.detect(morph.arm_visibility, floor=0.05, ceiling=0.9)
    u = volunteers.rng.random(len(volunteers))
    miscount = (u > 0.85).astype(int) - (u < 0.15)  # one arm too many or too few, 15% each
    seen = np.clip(n_arms + miscount, 1, 5) - 1  # 1 2 3 4 more-than-4
    counted = _one_hot(seen, 5) * (1 - cant_tell)[:, None]
    return np.concatenate([counted, cant_tell[:, None]], axis=1)


def _merging(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    seen = volunteers.perceive(morph.disturbance_visibility, 0.1) * volunteers.sensitivity
    answer = 3 - _bins(seen, [0.75, 0.45, 0.2])  # none minor-disturbance major-disturbance merger
    return _one_hot(answer, 4)


def _odd(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """GZ2 'anything odd?': disturbances, mergers, dust lanes and artifacts."""
    oddness = max(morph.disturbance_visibility * 2.0, morph.dust_lane * morph.is_edge_on)
    if morph.artifact != "none":
        oddness = max(oddness, 0.6)
    yes = volunteers.detect(oddness * 2.0, floor=0.05, ceiling=0.9)
    return np.stack([yes, 1 - yes], axis=1)


def _odd_feature(morph: Morphology, volunteers: Volunteers) -> np.ndarray:
    """GZ2 odd feature: ring lens disturbed irregular other merger dust_lane."""
    merging = _merging(morph, volunteers)  # none minor major merger
    probabilities = np.zeros((len(volunteers), 7))
    probabilities[:, 4] = merging[:, 0]  # saw nothing disturbed: 'other'
    probabilities[:, 2] = merging[:, 1] + 0.6 * merging[:, 2]
    probabilities[:, 3] = 0.4 * merging[:, 2]
    probabilities[:, 5] = merging[:, 3]
    if morph.dust_lane > 0 and morph.is_edge_on:
        probabilities *= 0.3
        probabilities[:, 6] += 0.7
    return probabilities


#: Answer models by question name: (morph, volunteers) -> (volunteer, answer) probabilities
#: over the answers of the same-named DECaLS DR5 question (or, for GZ2-only ones, GZ2's).
ANSWER_MODELS: dict[str, Callable[[Morphology, Volunteers], np.ndarray]] = {
    "smooth-or-featured": _smooth_or_featured,
    "disk-edge-on": _disk_edge_on,
    "has-spiral-arms": _has_spiral_arms,
    "bar": _bar,
    "bulge-size": _bulge_size,
    "how-rounded": _how_rounded,
    "edge-on-bulge": _edge_on_bulge,
    "spiral-winding": _spiral_winding,
    "spiral-arm-count": _spiral_arm_count,
    "merging": _merging,
    "odd": _odd,
    "odd-feature": _odd_feature,
}

#: Other schemas' questions as groups of a model's answers: (question name, answers) ->
#: (model, the model answers each answer sums). Questions with DECaLS' own answers need none.
QUESTION_MAP: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[tuple[int, ...], ...]]] = {
    ("smooth-or-featured", ("smooth", "featured")): ("smooth-or-featured", ((0, 2), (1,))),
    ("bar", ("yes", "no")): ("bar", ((0, 1), (2,))),
    (GZ2.questions[0].name, GZ2.questions[0].answers): ("smooth-or-featured", ((0,), (1,), (2,))),
    (GZ2.questions[1].name, GZ2.questions[1].answers): ("disk-edge-on", ((0,), (1,))),
    (GZ2.questions[2].name, GZ2.questions[2].answers): ("bar", ((0, 1), (2,))),
    (GZ2.questions[3].name, GZ2.questions[3].answers): ("has-spiral-arms", ((0,), (1,))),
    (GZ2.questions[4].name, GZ2.questions[4].answers): ("bulge-size", ((4,), (3,), (1, 2), (0,))),
    (GZ2.questions[5].name, GZ2.questions[5].answers): ("odd", ((0,), (1,))),
    (GZ2.questions[6].name, GZ2.questions[6].answers): ("how-rounded", ((0,), (1,), (2,))),
    (GZ2.questions[7].name, GZ2.questions[7].answers): ("odd-feature", tuple((i,) for i in range(7))),
    (GZ2.questions[8].name, GZ2.questions[8].answers): ("edge-on-bulge", ((2,), (0,), (1,))),
    (GZ2.questions[9].name, GZ2.questions[9].answers): ("spiral-winding", ((0,), (1,), (2,))),
    (GZ2.questions[10].name, GZ2.questions[10].answers): (
        "spiral-arm-count", tuple((i,) for i in range(6))
    ),
}


def _answer_model(question) -> tuple[Callable, tuple[tuple[int, ...], ...]]:
    key = (question.name, question.answers)
    if key in QUESTION_MAP:
        model, groups = QUESTION_MAP[key]
        return ANSWER_MODELS[model], groups
    decals = {q.name: q for q in DECALS_DR5.questions}
    if question.name in decals and decals[question.name].answers == question.answers:
        return ANSWER_MODELS[question.name], tuple((i,) for i in range(len(question.answers)))
    raise ValueError(
        f"simulate_votes: no volunteer model for question {question.name!r} with answers "
        f"{list(question.answers)}; expected a question of the decals-dr5 or gz2 schemas "
        "(or smooth-or-featured / bar). Add a model to zoobot.synthetic.ANSWER_MODELS."
    )


@dataclass(frozen=True)
class _Step:
    """One question of the walk: its answer model and where its volunteers come from."""

    columns: list[str]
    model: Callable[[Morphology, Volunteers], np.ndarray]
    grouping: np.ndarray | None  # (model answer, answer) 0/1, None when they are the same
    parent: int | None  # index of the parent question; None for a root
    leads_here: np.ndarray | None  # (parent answer,) bool: the parent answers that ask this


@lru_cache(maxsize=16)
def _walk_plan(schema: Schema) -> tuple[_Step, ...]:
    """Checked once per schema: raises ValueError for a question without a volunteer model."""
    position = {
        col: (qi, ai) for qi, q in enumerate(schema.questions) for ai, col in enumerate(q.columns())
    }
    steps = []
    for question in schema.questions:
        model, groups = _answer_model(question)
        n_model_answers = 1 + max(i for group in groups for i in group)
        grouping = np.zeros((n_model_answers, len(groups)))
        for answer, group in enumerate(groups):
            grouping[list(group), answer] = 1.0
        if grouping.shape[0] == grouping.shape[1] and np.array_equal(grouping, np.eye(len(groups))):
            grouping = None
        parent, leads_here = None, None
        if question.asked_after:
            parent = position[question.asked_after[0]][0]
            leads_here = np.zeros(len(schema.questions[parent].answers), dtype=bool)
            leads_here[[position[col][1] for col in question.asked_after]] = True
        steps.append(_Step(question.columns(), model, grouping, parent, leads_here))
    return tuple(steps)


def simulate_votes(
    morph: Morphology,
    schema: Schema = DECALS_DR5,
    rng: np.random.Generator | None = None,
    n_volunteers: float = 40.0,
    lapse: float = 0.03,
) -> dict[str, int]:
    """Volunteers walk down the decision tree; return vote counts for every answer column.

    The number of volunteers is Poisson around ``n_volunteers`` (at least 1). Each volunteer
    has a sensitivity (log-normal around 1) that scales how visible faint features look to
    them, perceives sizes and angles with their own noise, and with probability ``lapse``
    picks an answer at random. A question counts a volunteer only when that volunteer's answer
    to the parent question is one of ``asked_after``, so a child question's total equals the
    votes for its parent answers. Questions nobody reached get 0.
    """
    rng = np.random.default_rng() if rng is None else rng
    plan = _walk_plan(schema)
    n = max(1, int(rng.poisson(n_volunteers)))
    volunteers = Volunteers(sensitivity=np.exp(rng.normal(0.0, 0.35, size=n)), rng=rng)
    chosen: list[np.ndarray] = []  # per question: (volunteer,) answer index
    reached: list[np.ndarray] = []  # per question: (volunteer,) bool
    counts: dict[str, int] = {}
    for step in plan:
        probabilities = step.model(morph, volunteers)  # (volunteer, model answer)
        if step.grouping is not None:
            probabilities = probabilities @ step.grouping  # (volunteer, answer)
        n_answers = probabilities.shape[1]
        probabilities = (1 - lapse) * probabilities + lapse / n_answers
        cumulative = np.cumsum(probabilities, axis=1)
        draws = rng.random(n)[:, None] * cumulative[:, -1:]
        answers = np.minimum((cumulative < draws).sum(axis=1), n_answers - 1)  # (volunteer,)
        if step.parent is None:
            asked = np.ones(n, dtype=bool)
        else:
            asked = reached[step.parent] & step.leads_here[chosen[step.parent]]
        chosen.append(answers)
        reached.append(asked)
        tally = np.bincount(answers[asked], minlength=n_answers)
        counts.update(zip(step.columns, tally.tolist()))
    return counts


# ------------------------------------------------------------------------------------------
# Catalogs


def galaxy_streams(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for galaxy ``index``: (morphology, image noise, votes).

    Galaxy i is the same whatever the number of galaxies or the image size.
    """
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def make_synthetic_catalog(
    n_galaxies: int,
    out_dir: str | Path,
    size: int = 64,
    channels: int = 3,
    seed: int = 0,
    schema: Schema = DECALS_DR5,
    progress: ProgressCallback | None = None,
    n_volunteers: float = 40.0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Render PNGs into ``out_dir/images/`` and write ``out_dir/master_catalog.parquet``.

    The catalog holds ``id_str``, ``file_loc`` (relative to ``out_dir`` in the file), one vote
    column per answer of ``schema`` and the true morphology as ``true_*`` columns. It is written
    last and atomically, so a catalog that exists is complete. Returns the catalog as
    ``catalog.load_catalog`` reads it back: absolute ``file_loc``, validated.
    ``progress(n_done, n_galaxies)`` is called after each galaxy.
    """
    if n_galaxies < 1:
        raise ValueError(f"n_galaxies: expected at least 1, got {n_galaxies}")
    out_dir = Path(out_dir)
    catalog_path = out_dir / "master_catalog.parquet"
    if catalog_path.exists() and not overwrite:
        raise FileExistsError(
            f"{catalog_path} already exists; choose another out_dir, or overwrite it "
            "(overwrite=True, or --overwrite on the command line)"
        )
    _walk_plan(schema)  # fail before rendering anything
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_galaxies):
        morph_rng, image_rng, vote_rng = galaxy_streams(seed, index)
        morph = sample_morphology(morph_rng)
        id_str = f"synthetic-{seed}-{index:06d}"
        relative = Path("images") / f"{id_str}.png"
        _write_png(render(morph, size, channels, image_rng), out_dir / relative)
        votes = simulate_votes(morph, schema, vote_rng, n_volunteers)
        truth = {f"true_{name}": value for name, value in morph.to_dict().items()}
        rows.append({"id_str": id_str, "file_loc": relative.as_posix(), **votes, **truth})
        if progress is not None:
            progress(index + 1, n_galaxies)
    catalog = pd.DataFrame(rows)
    write_catalog(catalog, catalog_path, schema)
    resolved = catalog.assign(file_loc=[str((out_dir / p).resolve()) for p in catalog["file_loc"]])
    return validate_catalog(resolved, schema, name=str(catalog_path))


def summarize(catalog: pd.DataFrame, schema: Schema = DECALS_DR5) -> dict[str, float]:
    """Fractions of true kinds and the mean number of volunteers per galaxy."""
    kinds = catalog["true_kind"].value_counts(normalize=True)
    root_columns = schema.questions[0].columns()
    return {
        **{f"fraction_{kind}": float(kinds.get(kind, 0.0)) for kind in KINDS},
        "mean_volunteers": float(catalog[root_columns].sum(axis=1).mean()),
    }

