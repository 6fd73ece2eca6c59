"""Synthetic galaxies with known morphology, and simulated Galaxy Zoo volunteer votes.

Three steps, each a pure function of a seeded ``numpy.random.Generator``, one module each:

1. ``morphology``: :func:`sample_morphology` draws the true parameters of one galaxy
   (:class:`Morphology`): smooth elliptical, featured disk or artifact; Sérsic bulge,
   exponential disk, inclination, bar, logarithmic spiral arms, disturbance or merger, and
   surface brightness (signal-to-noise).
2. ``render``: :func:`render` paints it: Sérsic bulge + inclined exponential disk + Ferrers
   bar + spiral arms, a Gaussian PSF, sky and Poisson-like noise, colour, and an asinh
   stretch to uint8.
3. ``volunteers``: :func:`simulate_votes` sends volunteers down a decision tree. Each
   volunteer perceives the galaxy with their own noise and sensitivity, so faint features
   are missed more often, and answers a question only when their own earlier answers lead
   to it.

``catalog``: :func:`make_synthetic_catalog` does all three for many galaxies and writes a
master catalog. Lengths are fractions of the image size, so a galaxy looks the same at 64 or
128 pixels. Surface brightnesses are in units of the sky noise, so they set the
signal-to-noise. See docs/synthetic.md for the model in words.
"""

from zoobot.synthetic.catalog import galaxy_streams, make_synthetic_catalog, summarize
from zoobot.synthetic.morphology import Morphology, sample_morphology
from zoobot.synthetic.render import render, tile_images
from zoobot.synthetic.volunteers import Volunteers, simulate_votes

__all__ = [
    "Morphology",
    "Volunteers",
    "galaxy_streams",
    "make_synthetic_catalog",
    "render",
    "sample_morphology",
    "simulate_votes",
    "summarize",
    "tile_images",
]
