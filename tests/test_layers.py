"""Imports run one way: every module imports only from lower layers (docs/ARCHITECTURE.md).

Read from the source with ``ast``, so nothing is imported. Training and prediction stand side
by side: neither imports the other.
"""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "zoobot"

LAYERS = [
    {"ids", "files", "progress", "checks", "precision", "schema", "images", "training_settings", "transforms",
     "augmentation", "allocator", "timing"},
    {"catalog", "models", "losses", "contrastive"},
    {"convert", "shards", "synthetic", "acquisition", "metrics", "savings", "uncertainty", "checkpoints",
     "finetuning"},
    {"oracles"},  # the Panoptes oracle reads votes with convert.panoptes_annotations
    {"shard_dataset", "predict", "recalibration", "pretrained"},
    {"training", "prediction_writer", "pretrain"},
    {"pool_scoring"},
    {"loop"},
    {"reports", "html_report", "labelling"},
    {"cli"},
    {"__main__"},
]
LAYER = {unit: n for n, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """zoobot.loop.ledger -> loop; zoobot.schema -> schema."""
    return module.split(".")[1]


def internal_imports(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoobot."):
            units.add(unit_of(node.module))
        elif isinstance(node, ast.Import):
            units |= {unit_of(a.name) for a in node.names if a.name.startswith("zoobot.")}
    return units


def test_every_module_has_a_layer():
    found = {p.stem if p.parent == SOURCE else p.relative_to(SOURCE).parts[0] for p in SOURCE.rglob("*.py")}
    found.discard("__init__")
    assert found == set(LAYER), f"unplaced: {sorted(found - set(LAYER))}; gone: {sorted(set(LAYER) - found)}"


def test_imports_run_one_way():
    upward = []
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        unit = parts[0]
        if unit == "__init__":
            continue
        for imported in internal_imports(path) - {unit}:
            if LAYER[imported] >= LAYER[unit]:
                upward.append(f"{'/'.join(parts)} imports {imported}")
    assert not upward, upward


def test_training_and_prediction_stand_side_by_side():
    training = {"training", "shard_dataset", "augmentation", "checkpoints"}
    prediction = {"predict", "prediction_writer"}
    for unit in training:
        assert not internal_imports(SOURCE / f"{unit}.py") & prediction, unit
    for unit in prediction:
        assert not internal_imports(SOURCE / f"{unit}.py") & training - {"checkpoints"}, unit
