"""Synthetic master catalogs: per-galaxy random streams, PNG images, votes, true morphology."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.catalog import validate_catalog, write_catalog
from zoobot.files import atomic_path
from zoobot.progress import ProgressCallback
from zoobot.schema import DECALS_DR5, Schema
from zoobot.synthetic.morphology import KINDS, sample_morphology
from zoobot.synthetic.render import render
from zoobot.synthetic.volunteers import simulate_votes, walk_plan


def galaxy_streams(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for galaxy ``index``: (morphology, image noise, votes).

    Galaxy i is the same whatever the number of galaxies or the image size.
    """
    children = np.random.SeedSequence([seed, index]).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG", compress_level=1)


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
    walk_plan(schema)  # fail before rendering anything
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

