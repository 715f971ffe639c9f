"""Long stages persist finished chunks (`shards.map_chunk_tables` through `Run.map_chunks`): a stage
interrupted at any point and resumed gives the uninterrupted outputs, computing only what was not
finished; chunks run concurrently persist as they finish and read back in chunk order; a
half-written shard or a chunk of other input is never reused; the chunks go once the stage is
recorded, and with `--rerun`."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest
from stage_roles import Roles
from test_search_world import OracleJudge, OracleScorer, world

from rprm_ray import batches
from rprm_ray.config import load_recipe
from rprm_ray.loop import Run, StageResult
from rprm_ray.shards import ShardStore, chunk_key, map_chunk_tables
from rprm_ray.stages.data import DATA
from rprm_ray.stages.policy import self_reward_search_stage

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"a": "teacher_responses", "b": "teacher_responses"}


def _responses(ids: list[str], tag: str = "") -> pa.Table:
    return batches.from_rows([{"request_id": i, "sample_idx": 0, "text": f"{tag}{i}", "finish_reason": None}
                              for i in ids], "teacher_responses")


def _two(chunk: list[str]) -> dict[str, pa.Table]:
    return {"a": _responses(chunk, "a"), "b": _responses(chunk, "b")}


def _stores(root: Path) -> dict[str, ShardStore]:
    return {name: ShardStore(root / name, kind) for name, kind in KINDS.items()}


def test_concurrent_chunks_persist_as_they_finish_and_read_back_in_chunk_order(tmp_path):
    items = [f"r{i}" for i in range(9)]
    persisted_while_first_ran: list[str] = []

    def work(chunk):
        if chunk[0] == "r0":  # the first chunk finishes last, once the others are on disk
            deadline = time.monotonic() + 10
            while len(list((tmp_path / "b").glob("chunk-*.parquet"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            persisted_while_first_ran.extend(sorted(p.name[:12] for p in (tmp_path / "b").glob("chunk-*.parquet")))
        return _two(chunk)

    seen = []
    out = map_chunk_tables(items, 3, work, KINDS, stores=_stores(tmp_path), concurrent=3,
                           on_chunk=lambda i, n, reused: seen.append((i, reused)))
    assert out["a"].column("request_id").to_pylist() == items
    assert out["b"].column("text").to_pylist() == [f"b{i}" for i in items]
    assert persisted_while_first_ran == ["chunk-000001", "chunk-000002"]
    assert sorted(seen) == [(0, False), (1, False), (2, False)] and seen[-1] == (0, False)


def test_a_failed_concurrent_chunk_keeps_the_finished_ones_and_a_rerun_computes_only_the_rest(tmp_path):
    items = [f"r{i}" for i in range(8)]

    def failing(chunk):
        if chunk[0] == "r4":
            time.sleep(0.2)  # the other chunks finish first
            raise RuntimeError("engine died")
        return _two(chunk)

    with pytest.raises(RuntimeError, match="engine died"):
        map_chunk_tables(items, 2, failing, KINDS, stores=_stores(tmp_path), concurrent=4)
    assert _stores(tmp_path)["b"].finished_chunks() == [0, 1, 3]
    computed = []
    out = map_chunk_tables(items, 2, lambda c: computed.append(c[0]) or _two(c), KINDS, stores=_stores(tmp_path),
                           concurrent=4)
    assert computed == ["r4"]
    assert out["a"].equals(map_chunk_tables(items, 2, _two, KINDS)["a"])


def test_a_half_written_shard_is_ignored_and_the_chunk_computed_again(tmp_path):
    """A kill inside the Parquet write leaves `<shard>.tmp`; a kill between a chunk's outputs
    leaves only some of its shards: neither counts as finished."""
    items = ["x", "y", "z"]
    stores = _stores(tmp_path)
    map_chunk_tables(items, 1, _two, KINDS, stores=stores)
    # chunk 0: its last output was being written (renamed back to its temporary name)
    done = stores["b"].chunk_path(0, chunk_key(["x"]))
    done.rename(done.with_name(done.name + ".tmp"))
    # chunk 2: killed between its two outputs
    stores["b"].chunk_path(2, chunk_key(["z"])).unlink()
    computed = []
    out = map_chunk_tables(items, 1, lambda c: computed.append(c[0]) or _two(c), KINDS, stores=_stores(tmp_path))
    assert computed == ["x", "z"]
    assert out["b"].column("request_id").to_pylist() == items
    assert not list((tmp_path / "b").glob("*.tmp"))  # the leftover went when the store opened


def test_a_chunk_of_other_input_is_not_reused(tmp_path):
    table = _responses(["p", "q", "r", "s"])
    map_chunk_tables(table, 2, lambda t: {"a": t, "b": t}, KINDS, stores=_stores(tmp_path))
    changed = _responses(["p", "q", "r", "CHANGED"])
    computed = []
    out = map_chunk_tables(changed, 2, lambda t: computed.append(t.num_rows) or {"a": t, "b": t}, KINDS,
                           stores=_stores(tmp_path))
    assert computed == [2]  # only the second chunk, whose input changed
    assert out["a"].column("request_id").to_pylist() == ["p", "q", "r", "CHANGED"]


def test_a_store_of_another_kind_is_refused(tmp_path):
    stores = {"a": ShardStore(tmp_path / "a", "teacher_responses"), "b": ShardStore(tmp_path / "b", "critiques")}
    with pytest.raises(ValueError, match="holds 'critiques', not 'teacher_responses'"):
        map_chunk_tables(["x"], 1, _two, KINDS, stores=stores)


# ---- the search stage, interrupted and resumed ----------------------------------------------


class DiesAfter:
    """The scripted generator, killed (an exception standing for SIGKILL) at its `calls`-th expand."""

    def __init__(self, inner, calls: int):
        self.inner, self.calls = inner, calls

    def expand(self, prefixes, w, sampling):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt("killed")
        return self.inner.expand(prefixes, w, sampling)


def _search_run(tmp_path: Path, name: str, generator, judge, *extra: str, mode: str = "guided") -> Run:
    _, table, _ = world(6, p_correct=0.3, guarantee_correct=True)
    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", f"name={name}", f"loop.mode={mode}", "loop.problems_per_iteration=6",
                          "generator.candidates_per_step=4", "search.batch_prompts=2", *extra])
    run = Run.open(recipe, roles=Roles(generator, judge))
    run.stage(DATA, lambda: StageResult(tables={"problems_train": (table, "problems")},
                                        state={"policy_dir": "policy", "judge_dir": "judge"}))
    return run


def _outputs(run: Run) -> dict[str, list[dict]]:
    return {name: run.table("iter_1/search", name, kind).to_pylist()
            for name, kind in (("search_results", "search_results"), ("pairs", "preference_pairs"),
                               ("search_trace", "search_trace"))}


@pytest.mark.parametrize(("mode", "concurrent"), [("guided", 1), ("guided", 2), ("psrlm", 1)])
def test_a_search_stage_killed_midway_resumes_to_the_uninterrupted_outputs(tmp_path, mode, concurrent):
    _, _, gen = world(6, p_correct=0.3, guarantee_correct=True)
    judge = OracleScorer(gen.problems) if mode == "guided" else OracleJudge(gen.problems)
    full = _search_run(tmp_path, "full", gen, judge, f"search.concurrent_chunks={concurrent}", mode=mode)
    metrics = full.stage("iter_1/search", lambda: self_reward_search_stage(full, 1))
    assert metrics["chunks"] == 3 and metrics["chunks_reused"] == 0
    assert not full.chunks_dir("iter_1/search").exists()  # removed once the stage is recorded

    # Each chunk takes 3 levels: killed inside the chunk after the first one (two, run concurrently).
    killed = _search_run(tmp_path, "killed", DiesAfter(gen, 4 if concurrent == 1 else 7), judge,
                         f"search.concurrent_chunks={concurrent}", mode=mode)
    with pytest.raises(KeyboardInterrupt):
        killed.stage("iter_1/search", lambda: self_reward_search_stage(killed, 1))
    finished = ShardStore(killed.chunks_dir("iter_1/search") / "search" / "trace", "search_trace").finished_chunks()
    assert finished and len(finished) < 3
    assert not killed.manifest.is_done("iter_1/search")

    expands_before = len(gen.expand_calls)
    resumed = Run.open(killed.recipe, resume_dir=killed.dir, roles=Roles(gen, judge))
    metrics = resumed.stage("iter_1/search", lambda: self_reward_search_stage(resumed, 1))
    assert metrics["chunks"] == 3 and metrics["chunks_reused"] == len(finished)
    assert f"[part] iter_1/search: search reused {len(finished)} of 3 chunks finished earlier" in resumed.log_lines
    asked = {pid for call in gen.expand_calls[expands_before:] for pid in call["problem_ids"]}
    problem_ids = full.table(DATA, "problems_train", "problems").column("problem_id").to_pylist()
    for index in finished:  # a finished chunk's problems are not searched again
        assert not asked & set(problem_ids[2 * index:2 * index + 2])
    assert _outputs(resumed) == _outputs(full)
    assert not resumed.chunks_dir("iter_1/search").exists()


def test_rerun_removes_the_chunks_of_every_stage_it_forgets(tmp_path):
    _, _, gen = world(6, p_correct=0.3, guarantee_correct=True)
    run = _search_run(tmp_path, "rerun", DiesAfter(gen, 4), OracleScorer(gen.problems))
    with pytest.raises(KeyboardInterrupt):
        run.stage("iter_1/search", lambda: self_reward_search_stage(run, 1))
    assert run.chunks_dir("iter_1/search").exists()
    assert run.rerun(DATA) == [DATA]
    assert not run.chunks_dir("iter_1/search").exists()  # made from the forgotten stage's outputs
