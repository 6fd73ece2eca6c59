"""ShardReader: images and votes from a complete shard folder, by manifest position or id_str."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from zoobot.ids import describe_ids
from zoobot.shards.format import CONFIG_NAME, MANIFEST_NAME, SPLITS, ShardError, file_sha256, read_config


#: Manifest columns read dictionary-encoded (categoricals): split and shard repeat, and file paths
#: are never needed per row here. A 1M-galaxy manifest took 125 MiB instead of 278 MiB.
_REPEATED_COLUMNS = ("split", "shard", "file_loc")


class ShardReader:
    """Read images and votes from a shard folder by manifest position or id_str.

    Positions are row indices of ``manifest``. Shard files are memory-mapped on first use in
    each process; pickling drops the maps, so a reader can be sent to DataLoader workers.
    """

    def __init__(self, shard_dir: str | os.PathLike) -> None:
        self.shard_dir = Path(shard_dir)
        self.config = read_config(self.shard_dir)
        manifest_path = self.shard_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ShardError(f"{self.shard_dir}: {MANIFEST_NAME} is missing; rerun `zoobot make-shards`")
        repeated = [c for c in _REPEATED_COLUMNS if c in pq.read_schema(manifest_path).names]
        self.manifest = pq.read_table(manifest_path, read_dictionary=repeated).to_pandas()
        self.vote_columns: list[str] = list(self.config["vote_columns"])
        self.size: int = int(self.config["size"])
        self.channels: int = int(self.config["channels"])
        self.schema_spec: str = self.config["schema"]
        self._check_manifest()
        self._shard_files = [name for split in SPLITS for name in self.config["splits"][split]["shards"]]
        missing = [name for name in self._shard_files if not (self.shard_dir / name).is_file()]
        if missing:
            raise ShardError(
                f"{self.shard_dir}: shard files {describe_ids(missing)} listed in {CONFIG_NAME} are "
                "missing; the folder was altered after it was written. Rerun `zoobot make-shards`."
            )
        shard_code = pd.Categorical(self.manifest["shard"], categories=self._shard_files).codes
        if (shard_code < 0).any():
            unknown = self.manifest.loc[shard_code < 0, "shard"].unique()
            raise ShardError(f"{self.shard_dir}: the manifest refers to unknown shard files {describe_ids(unknown)}")
        self._shard_code = np.asarray(shard_code, dtype=np.int64)  # (galaxy,)
        self._rows = self.manifest["row"].to_numpy(dtype=np.int64)  # (galaxy,)
        self._ids = self.manifest["id_str"].to_numpy(dtype=object)  # (galaxy,)
        self._index = pd.Index(self._ids)
        self._votes = self.manifest[self.vote_columns].to_numpy(dtype=np.int64)  # (galaxy, answer)
        split = self.manifest["split"].to_numpy()
        self._split_positions = {s: np.flatnonzero(split == s) for s in SPLITS}
        self._arrays: dict[int, np.ndarray] = {}

    def _check_manifest(self) -> None:
        needed = ["id_str", "split", "shard", "row", *self.vote_columns]
        absent = [c for c in needed if c not in self.manifest.columns]
        if absent:
            raise ShardError(f"{self.shard_dir / MANIFEST_NAME}: columns {absent} are missing")
        expected = {s: int(self.config["splits"][s]["count"]) for s in SPLITS}
        found = self.manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
        if found != expected or len(self.manifest) != sum(expected.values()):
            raise ShardError(
                f"{self.shard_dir}: {CONFIG_NAME} expects split counts {expected}, the manifest has "
                f"{found}; the folder was altered after it was written. Rerun `zoobot make-shards`."
            )

    # --- pickling: memory maps are reopened lazily in the receiving process
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        return f"ShardReader({str(self.shard_dir)!r}, counts={self.counts}, size={self.size}, channels={self.channels})"

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(p) for s, p in self._split_positions.items()}

    def split_positions(self, split: str) -> np.ndarray:
        """(galaxy,) manifest positions of one split, in writing order."""
        if split not in self._split_positions:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return self._split_positions[split].copy()

    def ids(self, split: str) -> np.ndarray:
        """id_str of one split, in writing order (object array of str)."""
        return self._ids[self.split_positions(split)]

    def ids_at(self, positions) -> np.ndarray:
        """id_str (B,) of manifest positions, as a str array."""
        return self._ids[self._check_positions(positions)].astype(str)

    def positions_or_missing(self, ids: np.ndarray) -> np.ndarray:
        """Manifest positions (n,) of an array of ids, -1 for ids not in the shards."""
        return self._index.get_indexer(np.asarray(ids, dtype=object)).astype(np.int64)

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Manifest positions of these ids; KeyError naming the ids that are not in the shards."""
        if isinstance(ids, str):
            raise TypeError(f"expected a list of ids, got the single string {ids!r}; use [{ids!r}]")
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=object)
        positions = self._index.get_indexer(ids.astype(str))
        unknown = positions < 0
        if unknown.any():
            raise KeyError(
                f"ids {describe_ids(ids[unknown])} are not in the shards at {self.shard_dir}; "
                "they were never written (not in the catalogs, or skipped as bad images)"
            )
        return positions.astype(np.int64)

    def images(self, positions, out: np.ndarray | None = None) -> np.ndarray:
        """(B, C, H, W) uint8 for manifest positions, gathered shard by shard.

        ``out``: an array to fill (at least B rows of (C, H, W) uint8); its first B rows are
        returned. Without it, a new array.
        """
        positions = self._check_positions(positions)
        shape = (len(positions), self.channels, self.size, self.size)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.dtype != np.uint8 or out.shape[1:] != shape[1:] or len(out) < len(positions):
            raise ValueError(f"out: expected uint8 of shape (>= {shape[0]}, *{shape[1:]}), got {out.dtype} {out.shape}")
        else:
            out = out[: len(positions)]
        if len(positions) == 0:
            return out
        codes = self._shard_code[positions]  # (B,)
        rows = self._rows[positions]  # (B,)
        if (codes == codes[0]).all() and _is_run(rows):
            out[:] = self._array(codes[0])[rows[0] : rows[-1] + 1]
            return out
        order = np.lexsort((rows, codes))  # by shard, then row: sequential reads
        sorted_codes, sorted_rows = codes[order], rows[order]
        starts = np.flatnonzero(np.diff(sorted_codes)) + 1
        for group in np.split(np.arange(len(order)), starts):
            group_rows = sorted_rows[group]
            array = self._array(sorted_codes[group[0]])
            if _is_run(group_rows):
                out[order[group]] = array[group_rows[0] : group_rows[-1] + 1]
            else:
                out[order[group]] = array[group_rows]
        return out

    def image(self, id_str: str) -> np.ndarray:
        """(C, H, W) uint8 of one galaxy."""
        return self.images(self.positions([id_str]))[0]

    def votes(self, positions) -> np.ndarray:
        """(B, n_answers) int64 vote counts, columns in ``vote_columns`` order."""
        return self._votes[self._check_positions(positions)]

    def iter_batches(
        self, split_or_positions, batch_size: int, reuse_buffer: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids (B,), images (B, C, H, W)) in order, by split name or manifest positions.

        ``reuse_buffer``: every batch is read into the same array, so a batch is valid only until
        the next one is asked for (for consumers that use each batch at once, like prediction).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(split_or_positions, str):
            positions = self.split_positions(split_or_positions)
        else:
            positions = self._check_positions(split_or_positions)
        buffer = None
        if reuse_buffer:
            buffer = np.empty((min(batch_size, len(positions)), self.channels, self.size, self.size), dtype=np.uint8)
        for start in range(0, len(positions), batch_size):
            batch = positions[start : start + batch_size]
            yield self._ids[batch], self.images(batch, out=buffer)

    def verify(self) -> None:
        """Recompute the sha256 of the manifest and every shard; ShardError naming any mismatch."""
        expected = self.config["checksums"]["sha256"]
        changed = [name for name, digest in expected.items() if file_sha256(self.shard_dir / name) != digest]
        if changed:
            raise ShardError(
                f"{self.shard_dir}: files {describe_ids(changed)} do not match the checksums in "
                f"{CONFIG_NAME}; they were altered or damaged. Rerun `zoobot make-shards`."
            )

    def _check_positions(self, positions) -> np.ndarray:
        positions = np.asarray(positions)
        if positions.ndim != 1 or not (positions.size == 0 or np.issubdtype(positions.dtype, np.integer)):
            raise ValueError(
                f"positions must be a 1D array of integer manifest rows, got dtype {positions.dtype} "
                f"shape {positions.shape}; use positions(ids) to turn ids into positions"
            )
        positions = positions.astype(np.int64, copy=False)
        outside = (positions < 0) | (positions >= len(self.manifest))
        if outside.any():
            raise IndexError(
                f"positions {describe_ids(positions[outside])} are outside the manifest "
                f"(0..{len(self.manifest) - 1})"
            )
        return positions

    def _array(self, code: int) -> np.ndarray:
        array = self._arrays.get(code)
        if array is None:
            name = self._shard_files[code]
            array = np.load(self.shard_dir / name, mmap_mode="r")
            expected = (self.channels, self.size, self.size)
            n_rows = int(self._rows[self._shard_code == code].max()) + 1
            if array.dtype != np.uint8 or array.shape[1:] != expected or len(array) < n_rows:
                raise ShardError(
                    f"{self.shard_dir / name}: expected uint8 of shape (>= {n_rows}, *{expected}), "
                    f"got {array.dtype} {array.shape}; rerun `zoobot make-shards`"
                )
            self._arrays[code] = array
        return array


class ProcessLocalReader:
    """A ShardReader opened once per process. Pickled (to DataLoader workers or spawned ranks) it
    keeps only the folder, so the manifest is not shipped; the other process reopens it on first use."""

    def __init__(self, reader: ShardReader) -> None:
        self.shard_dir = Path(reader.shard_dir)
        self._reader: ShardReader | None = reader

    def __getstate__(self) -> dict:
        return {"shard_dir": self.shard_dir, "_reader": None}

    def get(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.shard_dir)
        return self._reader


def _is_run(rows: np.ndarray) -> bool:
    """True when rows are consecutive increasing integers (a slice)."""
    return rows[-1] - rows[0] == len(rows) - 1 and (len(rows) < 2 or bool((np.diff(rows) == 1).all()))
