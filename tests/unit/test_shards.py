"""Chunk-level stage persistence: atomic shards, resume reads finished chunks back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from rprm_ray import batches
from rprm_ray.shards import ShardError, ShardStore, map_chunks


def _responses(ids: list[str]) -> pa.Table:
    return batches.from_rows([{"request_id": i, "sample_idx": 0, "text": f"t{i}", "finish_reason": None}
                              for i in ids], "teacher_responses")


def test_map_chunks_resumes_from_finished_chunks(tmp_path):
    items = [f"r{i}" for i in range(10)]
    calls: list[list[str]] = []

    def work(chunk):
        calls.append(chunk)
        if chunk[0] == "r6" and len(calls) == 3:
            raise RuntimeError("killed mid-stage")
        return _responses(chunk)

    store = ShardStore(tmp_path / "s", "teacher_responses")
    with pytest.raises(RuntimeError):
        map_chunks(store, items, 3, work)
    assert store.finished_chunks() == [0, 1]
    calls.clear()
    seen = []
    out = map_chunks(ShardStore(tmp_path / "s", "teacher_responses"), items, 3, work,
                     on_chunk=lambda i, n, reused: seen.append((i, n, reused)))
    assert [c[0] for c in calls] == ["r6", "r9"]  # only the unfinished chunks ran again
    assert seen == [(0, 4, True), (1, 4, True), (2, 4, False), (3, 4, False)]
    assert out.column("request_id").to_pylist() == items


def test_changed_input_is_not_mistaken_for_a_finished_chunk(tmp_path):
    store = ShardStore(tmp_path, "teacher_responses")
    map_chunks(store, ["a", "b"], 2, _responses)
    out = map_chunks(store, ["a", "c"], 2, _responses)
    assert out.column("request_id").to_pylist() == ["a", "c"]


def test_map_chunks_over_a_table(tmp_path):
    table = _responses([f"x{i}" for i in range(5)])
    out = map_chunks(ShardStore(tmp_path, "teacher_responses"), table, 2, lambda t: t)
    assert out.equals(table)


def test_appended_shards_read_back_in_order(tmp_path):
    store = ShardStore(tmp_path, "teacher_responses")
    assert store.table().num_rows == 0
    assert store.append(_responses([])) is None
    store.append(_responses(["a", "b"]))
    store.append(_responses(["c"]))
    assert [p.name for p in store.parts()] == ["part-000000.parquet", "part-000001.parquet"]
    assert store.table().column("request_id").to_pylist() == ["a", "b", "c"]


def test_a_damaged_shard_is_reported_with_its_path(tmp_path):
    store = ShardStore(tmp_path, "teacher_responses", where="stage iter_0/judge_seed")
    path = store.append(_responses(["a"]))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ShardError, match=r"stage iter_0/judge_seed: shard .*part-000000.parquet is unreadable.*delete it"):
        store.table()


def test_a_write_killed_mid_file_leaves_no_shard(tmp_path):
    """SIGKILL inside the Parquet write: the temporary file is left, no shard exists, and the
    store's next open removes the leftover."""
    script = textwrap.dedent(f"""
        import os, signal
        import pyarrow.parquet as pq
        from rprm_ray import batches
        from rprm_ray.shards import ShardStore
        real = pq.write_table
        def dying(table, where, **kw):
            real(table, where, **kw)
            os.kill(os.getpid(), signal.SIGKILL)  # after the bytes, before the rename
        pq.write_table = dying
        store = ShardStore({str(tmp_path)!r}, "teacher_responses")
        store.append(batches.from_rows([{{"request_id": "a", "sample_idx": 0, "text": "t"}}], "teacher_responses"))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert proc.returncode == -9
    assert [p.name for p in tmp_path.iterdir()] == ["part-000000.parquet.tmp"]
    store = ShardStore(tmp_path, "teacher_responses")
    assert list(tmp_path.iterdir()) == [] and store.table().num_rows == 0


def test_unknown_kind_fails_before_work(tmp_path):
    with pytest.raises(batches.BatchError, match="unknown batch kind"):
        ShardStore(tmp_path, "nope")
