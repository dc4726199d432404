"""The window store: pre-unfolded windows in one uncompressed Arrow IPC file.

The file is opened with ``pyarrow.memory_map`` and its columns are read zero-copy
into read-only numpy arrays, so the loader gathers batches straight from the page
cache. Rows are sorted by part (train, then valid, then test).

Columns (N rows, T positions):
    items          fixed_size_list<int32>[T]  inputs, left-padded with 0
    ratings        fixed_size_list<int8>[T]   ratings of the inputs
    user           int32                      dense user id
    target         int32                      the item after the window
    target_rating  int8
    target_time    int64                      Unix seconds of the target rating
    part           int8                       0 train, 1 valid, 2 test
    history        list<int32>                evaluation rows: every item before the
                                              target (the seen items); empty for training

Training reads the last-position target from ``target`` and the all-position
targets as ``items[:, 1:]`` followed by ``target``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError
from ..files import temporary_sibling
from .sequences import PARTS, SplitArrays

SCHEMA_VERSION = 1
METADATA_KEY = b"fastrec"


def store_key(params: dict[str, Any], sha256: dict[str, str]) -> str:
    """Return a short hash of everything the store's rows depend on."""
    blob = json.dumps(
        {"schema_version": SCHEMA_VERSION, "params": params, "sha256": sha256},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_store(path: str | Path, split: SplitArrays, metadata: dict[str, Any]) -> Path:
    """Write the split to ``path`` atomically (temporary file, then rename).

    ``metadata`` is stored as JSON in the schema metadata, with the schema version
    and the row count of each part added.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, t = split.items.shape
    counts = {part: split.count(part) for part in PARTS}
    meta = dict(metadata, schema_version=SCHEMA_VERSION, rows=n, max_len=t)
    meta["parts"] = counts

    def fixed(values: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), t)

    history = pa.ListArray.from_arrays(
        pa.array(split.history_offsets), pa.array(split.history_values)
    )
    table = pa.table(
        {
            "items": fixed(split.items),
            "ratings": fixed(split.ratings),
            "user": pa.array(split.user),
            "target": pa.array(split.target),
            "target_rating": pa.array(split.target_rating),
            "target_time": pa.array(split.target_time),
            "part": pa.array(split.part),
            "history": history,
        }
    )
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)})

    fd, tmp = temporary_sibling(path)
    try:
        with os.fdopen(fd, "wb") as sink:
            # No compression: a compressed buffer cannot be memory-mapped in place.
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=max(n, 1))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_store_metadata(path: str | Path) -> dict[str, Any] | None:
    """Return the metadata of the store at ``path``, or None when there is none.

    A file that exists but is not a readable store raises DataError.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with pa.memory_map(str(path), "r") as source:
            schema = pa.ipc.open_file(source).schema
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(
            f"window store {path} is truncated or corrupt ({error}); "
            "delete it and run python -m fastrec.data.prepare again"
        ) from error
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path} is an Arrow file but not a fastrec window store")
    return json.loads(raw)


@dataclass
class PartView:
    """Read-only numpy views of one part's rows (a contiguous range of the file)."""

    items: np.ndarray
    """[n, T] int32."""
    ratings: np.ndarray
    """[n, T] int8."""
    user: np.ndarray
    target: np.ndarray
    target_rating: np.ndarray
    target_time: np.ndarray
    history_offsets: np.ndarray
    """[n + 1] int32 offsets into ``history_values``; not rebased to 0."""
    history_values: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def history_matrix(self, rows: np.ndarray, fill: int = -1) -> np.ndarray:
        """Return the histories of ``rows`` as a [len(rows), S] int64 matrix.

        S is the longest history among the rows; shorter ones are padded with
        ``fill`` (-1 is what the top-K kernels ignore).
        """
        starts = self.history_offsets[rows].astype(np.int64)
        lengths = self.history_offsets[rows + 1].astype(np.int64) - starts
        width = int(lengths.max()) if len(rows) else 0
        out = np.full((len(rows), width), fill, dtype=np.int64)
        row = np.repeat(np.arange(len(rows)), lengths)
        first = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=first[1:])
        col = np.arange(int(lengths.sum())) - first[row]
        out[row, col] = self.history_values[starts[row] + col]
        return out


class WindowStore:
    """A memory-mapped window store; nothing ever writes into the mapped pages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = read_store_metadata(self.path)
        if meta is None:
            raise DataError(
                f"window store {self.path} not found; build it with "
                "python -m fastrec.data.prepare"
            )
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise DataError(
                f"window store {self.path} has schema version "
                f"{meta.get('schema_version')}, expected {SCHEMA_VERSION}; rebuild it"
            )
        self.metadata: dict[str, Any] = meta
        self._map = pa.memory_map(str(self.path), "r")
        try:
            table = pa.ipc.open_file(self._map).read_all()
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(
                f"window store {self.path} is truncated or corrupt ({error}); "
                "delete it and run python -m fastrec.data.prepare again"
            ) from error
        if table.num_rows != meta["rows"]:
            raise DataError(
                f"window store {self.path} has {table.num_rows} rows but its metadata "
                f"records {meta['rows']}; delete it and rebuild"
            )
        self.max_len = int(meta["max_len"])
        self._columns = {name: self._column(table, name) for name in table.column_names}

    def _column(self, table: pa.Table, name: str) -> Any:
        column = table.column(name)
        if column.num_chunks != 1:
            column = pa.concat_arrays(column.chunks)
        else:
            column = column.chunk(0)
        if name == "history":
            offsets = column.offsets.to_numpy(zero_copy_only=True)
            values = column.values.to_numpy(zero_copy_only=True)
            return offsets, values
        if pa.types.is_fixed_size_list(column.type):
            flat = column.flatten().to_numpy(zero_copy_only=True)
            return flat.reshape(len(column), self.max_len)
        return column.to_numpy(zero_copy_only=True)

    def part_range(self, part: str) -> tuple[int, int]:
        """Return the [start, stop) row range of ``part``."""
        counts = self.metadata["parts"]
        start = sum(counts[p] for p in PARTS[: PARTS.index(part)])
        return start, start + counts[part]

    def part(self, part: str) -> PartView:
        """Return read-only views of the rows of ``part`` ("train", "valid" or "test")."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
        lo, hi = self.part_range(part)
        offsets, values = self._columns["history"]
        return PartView(
            items=self._columns["items"][lo:hi],
            ratings=self._columns["ratings"][lo:hi],
            user=self._columns["user"][lo:hi],
            target=self._columns["target"][lo:hi],
            target_rating=self._columns["target_rating"][lo:hi],
            target_time=self._columns["target_time"][lo:hi],
            history_offsets=offsets[lo : hi + 1],
            history_values=values,
        )

    def __len__(self) -> int:
        return int(self.metadata["rows"])
