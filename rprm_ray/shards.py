"""Finished pieces of a long stage, kept on disk as Parquet shards, so a resumed stage redoes only
what was not finished.

A `ShardStore` is a directory of shards of one batch kind. Two ways to use it:

- fixed chunks (`map_chunk_tables`, `map_chunks`): the stage's input is cut into numbered chunks
  (run one at a time or several at once); a chunk whose shards exist is read back instead of
  computed. The shard's name carries a fingerprint of the chunk's input, so a shard made from
  other input is never mistaken for this one. The result is the chunks' tables in chunk order:
  equal to an uninterrupted run's.
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
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def chunk_key(chunk: Any) -> str:
    """The fingerprint of one chunk's input (a list of JSON-able items, or a pyarrow Table)."""
    return fingerprint(chunk.to_pylist() if isinstance(chunk, pa.Table) else chunk)


def map_chunk_tables(items: Sequence[Any] | pa.Table, size: int, fn: Callable[[Any], Mapping[str, pa.Table]],
                     kinds: Mapping[str, str], *, stores: Mapping[str, ShardStore] | None = None,
                     concurrent: int = 1, on_chunk: Callable[[int, int, bool], None] | None = None
                     ) -> dict[str, pa.Table]:
    """Apply `fn` to consecutive chunks of `items` (`size` items each; a list or a pyarrow Table);
    `fn` returns one table per name of `kinds` ({name: batch kind}). Returns each name's tables
    concatenated in chunk order.

    With `stores` ({name: ShardStore}, one per name), every finished chunk is persisted as it
    finishes, and a chunk whose shards all exist (made from the same input) is read back instead
    of computed: a stage interrupted at any point and run again gives the uninterrupted result. A
    chunk's shards are written name by name; one left incomplete by a kill is computed again.
    Without `stores` nothing is persisted (a search called outside a run).

    With `concurrent` > 1, that many chunks run at once in threads (search: one chunk waits on the
    generator while another waits on the judge). `on_chunk(index, total, reused)` reports each
    chunk as it is read back or finished (from one thread at a time)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    if stores is not None and set(stores) != set(kinds):
        raise ValueError(f"stores {sorted(stores)} do not match the outputs {sorted(kinds)}")
    for name, kind in kinds.items():
        if stores is not None and stores[name].kind != kind:
            raise ValueError(f"{stores[name].where}: store {name!r} holds {stores[name].kind!r}, not {kind!r}")
    n = items.num_rows if isinstance(items, pa.Table) else len(items)
    parts = [items.slice(start, size) if isinstance(items, pa.Table) else list(items[start:start + size])
             for start in range(0, n, size)]
    keys = [chunk_key(p) for p in parts] if stores is not None else [""] * len(parts)
    out: list[dict[str, pa.Table] | None] = [None] * len(parts)
    lock = threading.Lock()

    def report(index: int, reused: bool) -> None:
        if on_chunk is not None:
            with lock:
                on_chunk(index, len(parts), reused)

    todo = []
    for index, key in enumerate(keys):
        done = _finished_chunk(stores, index, key) if stores is not None else None
        if done is None:
            todo.append(index)
        else:
            out[index] = done
            report(index, True)

    def compute(index: int) -> None:
        got = fn(parts[index])
        missing = set(kinds) - set(got)
        if missing:
            raise ValueError(f"a chunk gave no {sorted(missing)} table")
        tables = {name: batches.validate(got[name], kind, where=f"chunk {index} ({name})")
                  for name, kind in kinds.items()}
        if stores is not None:
            for name in kinds:
                stores[name].put_chunk(index, keys[index], tables[name])
        out[index] = tables
        report(index, False)

    if concurrent <= 1 or len(todo) <= 1:
        for index in todo:
            compute(index)
    else:
        with ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="chunk") as pool:
            futures = [pool.submit(compute, index) for index in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # the first failure: chunks not started are dropped, finished ones stay
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return {name: batches.concat([o[name] for o in out], kind) for name, kind in kinds.items()}


def _finished_chunk(stores: Mapping[str, ShardStore], index: int, key: str) -> dict[str, pa.Table] | None:
    tables = {}
    for name, store in stores.items():
        table = store.chunk(index, key)
        if table is None:
            return None
        tables[name] = table
    return tables


def map_chunks(store: ShardStore, items: Sequence[Any] | pa.Table, size: int,
               fn: Callable[[Any], pa.Table], *, concurrent: int = 1,
               on_chunk: Callable[[int, int, bool], None] | None = None) -> pa.Table:
    """`map_chunk_tables` with one output table per chunk, persisted in `store`."""
    return map_chunk_tables(items, size, lambda chunk: {"": fn(chunk)}, {"": store.kind}, stores={"": store},
                            concurrent=concurrent, on_chunk=on_chunk)[""]
