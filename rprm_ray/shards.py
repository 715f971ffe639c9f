"""Finished pieces of a long stage, kept on disk as Parquet shards, so a resumed stage redoes only
what was not finished.

A `ShardStore` is a directory of shards of one batch kind. Two ways to use it:

- fixed chunks (`map_chunks`): the stage's input is cut into numbered chunks; a chunk whose
  shard exists is read back instead of computed. The shard's name carries a fingerprint of the
  chunk's input, so a shard made from other input is never mistaken for this one. The result is
  the chunks' tables in chunk order: equal to an uninterrupted run's.
- open-ended appends (`append` / `table`): results that finish in any order (a teacher's
  concurrent requests) are written as numbered shards as they accumulate; on resume the caller
  reads `table()` and asks only for what is missing.

Every write is atomic (a temporary file in the same directory, flushed to disk, then renamed),
so a kill at any moment leaves either the whole shard or none; leftover temporary files are
removed when the store opens. A shard that exists but cannot be read (damaged afterwards) is
reported with its path, never silently recomputed or replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rprm_ray import batches

_CHUNK = re.compile(r"^chunk-(\d{6})-([0-9a-f]{12})\.parquet$")
_PART = re.compile(r"^part-(\d{6})\.parquet$")
TMP_SUFFIX = ".tmp"


class ShardError(RuntimeError):
    """A shard that exists but cannot be used; the message names the file and what to do."""


def fingerprint(value: Any) -> str:
    """A short, stable digest of JSON-able input (a chunk's rows, a request's parameters)."""
    blob = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` so that a reader sees the whole file or no file."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # the rename itself survives a power cut only once the directory is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


class ShardStore:
    """Shards of one batch `kind` under `directory` (created on first use)."""

    def __init__(self, directory: str | Path, kind: str, where: str = ""):
        self.dir = Path(directory)
        self.kind = kind
        self.where = where or str(self.dir)
        batches.schema(kind)  # an unknown kind fails here, before any work
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob(f"*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)  # a write killed before its rename

    # ---- reading ------------------------------------------------------------------------
    def _read(self, path: Path) -> pa.Table:
        try:
            return batches.validate(pq.read_table(path), self.kind, where=str(path))
        except (pa.ArrowInvalid, OSError, batches.BatchError) as exc:
            raise ShardError(
                f"{self.where}: shard {path} is unreadable ({str(exc).splitlines()[0]}); delete it to "
                f"recompute that part, then resume"
            ) from None

    def parts(self) -> list[Path]:
        """The appended shards, in write order."""
        return sorted(p for p in self.dir.iterdir() if _PART.match(p.name))

    def table(self) -> pa.Table:
        """Every appended shard, concatenated in write order (empty when there is none)."""
        return batches.concat([self._read(p) for p in self.parts()], self.kind)

    # ---- open-ended appends -----------------------------------------------------------------
    def append(self, table: pa.Table) -> Path | None:
        """Persist `table` as the next shard (nothing is written for an empty table)."""
        if table.num_rows == 0:
            return None
        table = batches.validate(table, self.kind, where=self.where)
        parts = self.parts()
        n = int(_PART.match(parts[-1].name).group(1)) + 1 if parts else 0
        return write_atomic(table, self.dir / f"part-{n:06d}.parquet")

    # ---- fixed chunks -------------------------------------------------------------------
    def chunk_path(self, index: int, key: str) -> Path:
        return self.dir / f"chunk-{index:06d}-{key}.parquet"

    def chunk(self, index: int, key: str) -> pa.Table | None:
        """Chunk `index` made from input fingerprinted `key`, or None if not finished."""
        path = self.chunk_path(index, key)
        return self._read(path) if path.exists() else None

    def put_chunk(self, index: int, key: str, table: pa.Table) -> Path:
        table = batches.validate(table, self.kind, where=self.where)
        return write_atomic(table, self.chunk_path(index, key))

    def finished_chunks(self) -> list[int]:
        return sorted({int(m.group(1)) for p in self.dir.iterdir() if (m := _CHUNK.match(p.name))})


def map_chunks(store: ShardStore, items: Sequence[Any] | pa.Table, size: int,
               fn: Callable[[Any], pa.Table], *, on_chunk: Callable[[int, int, bool], None] | None = None
               ) -> pa.Table:
    """Apply `fn` to consecutive chunks of `items` (`size` items each; a list or a pyarrow Table),
    persisting each result in `store`; chunks finished by an earlier, interrupted attempt are read
    back. Returns the chunks' tables concatenated in chunk order. `on_chunk(index, total, reused)`
    reports progress."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    n = items.num_rows if isinstance(items, pa.Table) else len(items)
    starts = list(range(0, n, size))
    out = []
    for index, start in enumerate(starts):
        if isinstance(items, pa.Table):
            chunk = items.slice(start, size)
            key = fingerprint(chunk.to_pylist())
        else:
            chunk = list(items[start:start + size])
            key = fingerprint(chunk)
        done = store.chunk(index, key)
        reused = done is not None
        if done is None:
            done = batches.validate(fn(chunk), store.kind, where=store.where)
            store.put_chunk(index, key, done)
        if on_chunk is not None:
            on_chunk(index, len(starts), reused)
        out.append(done)
    return batches.concat(out, store.kind)
