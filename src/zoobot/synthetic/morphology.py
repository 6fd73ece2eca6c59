"""The true morphology of a synthetic galaxy, and how to draw one from a seeded generator.

:func:`sample_morphology` draws smooth ellipticals, featured disks and artifacts: Sérsic bulge,
exponential disk, inclination, bar, logarithmic spiral arms, disturbance or merger, and surface
brightness (signal-to-noise). Lengths are fractions of the image size; surface brightnesses are
in units of the sky noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("smooth", "featured", "artifact")
KIND_PROBABILITIES = (0.42, 0.55, 0.03)
ARTIFACTS = ("none", "star", "trail")
BAR_CLASSES = ("strong", "weak", "none")
WINDINGS = ("tight", "medium", "loose", "none")
MERGER_CLASSES = ("none", "minor", "major", "merger")
DISTURBANCE_RANGES = {"none": (0.0, 0.1), "minor": (0.25, 0.4), "major": (0.5, 0.7), "merger": (0.8, 1.0)}

DISK_THICKNESS = 0.12  # intrinsic minor/major axis ratio of a disk seen edge-on
TIGHT_PITCH, LOOSE_PITCH = 15.0, 25.0  # degrees: pitch below -> tight, above -> loose
EDGE_ON_INCLINATION = 78.0  # degrees


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
