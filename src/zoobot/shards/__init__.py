"""Shards: every image decoded and resized once, stored as uint8 arrays with a Parquet manifest.

Layout of a shard folder (see docs/shards.md)::

    shard_config.json        written last: a folder without it is incomplete
    manifest.parquet         id_str, split, shard, row, file_loc, one int64 column per answer
    train/shard_00000.npy    uint8 (n, channels, size, size), channels first
    val/shard_00000.npy      early stopping and checkpoint choice
    test/shard_00000.npy     reported, never used for any choice
    pool/shard_00000.npy
    bad_images.csv           only with skip_bad: id_str, file_loc, split, reason

:func:`write_shards` builds the folder under a temporary name beside it and renames it into
place only when everything, ``shard_config.json`` last, is written. :class:`ShardReader` opens
the ``.npy`` files as read-only memory maps, lazily and once per process, so it can be
pickled into DataLoader workers.

Modules: ``format`` (names, version, errors, ``read_config``, the .npy header), ``writer``
(``write_shards``), ``reader`` (``ShardReader``).
"""

from zoobot.shards.format import (
    BAD_IMAGES_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    BadImagesError,
    ShardError,
    read_config,
)
from zoobot.shards.reader import ProcessLocalReader, ShardReader
from zoobot.shards.writer import ShardSummary, write_shards

__all__ = [
    "BAD_IMAGES_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ProcessLocalReader",
    "SPLITS",
    "BadImagesError",
    "ShardError",
    "ShardReader",
    "ShardSummary",
    "read_config",
    "write_shards",
]
