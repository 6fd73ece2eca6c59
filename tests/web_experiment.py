"""A tiny web-oracle experiment for the labelling tests: synthetic galaxies at 32 px, a small tree."""

from pathlib import Path

from zoobot.catalog import define_experiment, save_experiment
from zoobot.loop.experiment import create_experiment, plan_experiment
from zoobot.loop.instructions import AcquisitionSpec, ModelSpec
from zoobot.schema import get_schema
from zoobot.shards import write_shards
from zoobot.synthetic import make_synthetic_catalog
from zoobot.training_settings import TrainSettings

SCHEMA = get_schema("decals-dr5:smooth-or-featured,disk-edge-on,has-spiral-arms")
N_LABELLED, N_POOL, N_VAL, N_TEST = 30, 30, 6, 6


def make_catalogs(root: Path, image_size: int = 32) -> tuple[Path, Path]:
    """(catalog_dir, shard_dir): N_LABELLED galaxies with votes, N_POOL without (the pool); the
    catalog's images are ``image_size`` px, the shards 32 px."""
    catalog = make_synthetic_catalog(N_LABELLED + N_POOL, root / "synthetic", size=image_size, channels=3, seed=7)
    catalog.loc[catalog.index[N_LABELLED:], SCHEMA.answer_columns] = 0  # nobody has voted on the pool yet
    experiment = define_experiment(catalog, SCHEMA, retirement=1, seed=0)
    save_experiment(experiment, SCHEMA, root / "catalogs", {})
    write_shards(
        experiment.labelled, experiment.unlabelled, root / "shards", SCHEMA,
        val_size=N_VAL, test_size=N_TEST, size=32, channels=3,
    )
    return root / "catalogs", root / "shards"


def make_web_experiment(catalogs: tuple[Path, Path], experiment_dir: Path, votes_needed: int = 2,
                        subjects_per_iteration: int = 4) -> Path:
    """A web-oracle experiment with a small model trained for one epoch per iteration."""
    catalog_dir, shard_dir = catalogs
    plan = plan_experiment(
        catalog_dir, shard_dir, model=ModelSpec(TrainSettings(epochs=1, batch_size=8, progress_bar=False)),
        acquisition=AcquisitionSpec(n_samples=2), oracle="web", oracle_options={"votes_needed": votes_needed},
        subjects_per_iteration=subjects_per_iteration, seed=3, quick_test=True,
    )
    return create_experiment(experiment_dir, plan)
