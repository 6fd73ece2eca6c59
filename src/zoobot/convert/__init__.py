"""Public Galaxy Zoo tables and Panoptes exports -> zoobot master catalogs.

Each converter checks its input, returns a :class:`ConversionResult` (catalog, schema, report)
and never drops a row without saying why in the :class:`ConversionReport`.
"""

from zoobot.convert.common import (
    ConversionError,
    ConversionReport,
    ConversionResult,
    DroppedRows,
    write_conversion,
)
from zoobot.convert.decals import DECALS_DR12, DECALS_SCHEMAS, convert_decals
from zoobot.convert.gz1 import GZ1_CLASSES, convert_gz1
from zoobot.convert.gz2 import convert_gz2
from zoobot.convert.kaggle import convert_kaggle
from zoobot.convert.panoptes import convert_panoptes
from zoobot.convert.panoptes_annotations import (
    TaskMap,
    TaskSpec,
    VoteTally,
    load_task_map,
    parse_task_map,
)

__all__ = [
    "ConversionError",
    "ConversionReport",
    "ConversionResult",
    "DroppedRows",
    "DECALS_DR12",
    "DECALS_SCHEMAS",
    "GZ1_CLASSES",
    "TaskMap",
    "TaskSpec",
    "VoteTally",
    "convert_decals",
    "convert_gz1",
    "convert_gz2",
    "convert_kaggle",
    "convert_panoptes",
    "load_task_map",
    "parse_task_map",
    "write_conversion",
]
