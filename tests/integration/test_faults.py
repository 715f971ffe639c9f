"""Faults injected on real Ray, Serve and vLLM: two runs' judges on one cluster, a judge replica
killed mid-batch, a generator actor killed mid-search, a judge engine call that outlasts its
time-out, and a run cleaning up what a killed driver of it left behind.

Two runs ("fault-a", "fault-b") share the session's cluster and Serve instance, each with its own
judge application on its own weights (one replica each, started once for this module). The tests
run in file order: the last one removes run A's roles.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import ray

from rprm_ray import waits
from rprm_ray.config import (
    AutoscalingConfig,
    GeneratorConfig,
    JudgeConfig,
    Recipe,
    SamplingConfig,
    SearchConfig,
    TaskConfig,
    TinyModelConfig,
)

pytestmark = pytest.mark.integration

JUDGE = JudgeConfig(
    critiques_per_step=2,
    sampling=SamplingConfig(temperature=1.0, max_new_tokens=24, seed=0),
    num_cpus_per_replica=0.25,
    max_batch_rows_per_request=4,
    enforce_eager=True,
    autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1),
)
GENERATOR = GeneratorConfig(replicas=2, num_cpus_per_replica=0.25, candidates_per_step=2, enforce_eager=True,
                            sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, seed=0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recipe(name: str) -> Recipe:
    return Recipe(name=name, judge=JUDGE, generator=GENERATOR,
                  resources={"serve_port": _free_port()})


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rprm_ray.tiny import build_tiny_model

    return build_tiny_model(TinyModelConfig(), tmp_path_factory.mktemp("fault_b_model"), seed=1, verdict_token=True)


@pytest.fixture(scope="module")
def runs(ray_cluster, tiny_model_dir: Path, second_model_dir: Path) -> Iterator[dict]:
    """Two runs' roles on one cluster: run A judges with the tiny model, run B with another."""
    from rprm_ray.roles import Roles

    roles_a, roles_b = Roles(_recipe("fault-a")), Roles(_recipe("fault-b"))
    judge_a = roles_a.judge(tiny_model_dir)
    judge_b = roles_b.judge(second_model_dir)
    yield {"a": roles_a, "b": roles_b, "judge_a": judge_a, "judge_b": judge_b}
    roles_b.shutdown()
    roles_a.shutdown()


@pytest.fixture(scope="module")
def steps() -> pa.Table:
    from rprm_ray.tasks.arith import make_splits
    from rprm_ray.tasks.arith_tables import labeled_steps_table

    _, eval_problems = make_splits(TaskConfig(train_problems=20, eval_problems=16, seed=5))
    return labeled_steps_table(eval_problems, seed=5, error_rate=0.5)


def _keys(critiques: pa.Table) -> list[tuple]:
    cols = ("solution_id", "step_idx", "sample_idx")
    return list(zip(*(critiques.column(c).to_pylist() for c in cols), strict=True))


def _replica_actors(app: str) -> list[str]:
    """The Ray actor names of a Serve application's replicas (namespace "serve")."""
    return [e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
            if e["namespace"] == "serve" and e["name"].startswith(f"SERVE_REPLICA::{app}#")]


def test_two_runs_judges_run_side_by_side_on_their_own_weights(runs, steps: pa.Table,
                                                               tiny_model_dir: Path, second_model_dir: Path) -> None:
    from ray import serve

    from rprm_ray.training import checksum_model_dir

    a, b = runs["judge_a"], runs["judge_b"]
    assert (a.name, b.name) == ("fault-a.judge", "fault-b.judge")
    assert {"fault-a.judge", "fault-b.judge"} <= set(serve.status().applications)
    out: dict[str, pa.Table] = {}
    threads = [threading.Thread(target=lambda c=c, k=k: out.__setitem__(k, c.score_steps(steps.slice(0, 8))[0]))
               for k, c in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert _keys(out["a"]) == _keys(out["b"]) and len(out["a"]) == 16
    assert out["a"].column("critique").to_pylist() != out["b"].column("critique").to_pylist()
    assert {i["checksum"] for i in a.replica_info().values()} == {checksum_model_dir(tiny_model_dir)}
    assert {i["checksum"] for i in b.replica_info().values()} == {checksum_model_dir(second_model_dir)}


def test_judge_replica_killed_mid_batch_yields_every_row_exactly_once(runs, steps: pa.Table) -> None:
    judge = runs["judge_a"]
    batch = steps.slice(0, 40)  # 10 requests of 4 rows on one replica
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=32, seed=7)
    expected, _ = judge.score_steps(batch, k=3, sampling=sampling)  # uninterrupted
    [victim] = _replica_actors("fault-a.judge")
    retries_before = judge.retries
    result: dict[str, object] = {}

    def score() -> None:
        try:
            result["critiques"] = judge.score_steps(batch, k=3, sampling=sampling)[0]
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    worker = threading.Thread(target=score)
    worker.start()
    time.sleep(1.5)  # the batch takes several seconds on one replica: kill it while busy
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    worker.join(timeout=600)
    assert "error" not in result, result.get("error")
    critiques = result["critiques"]
    assert judge.retries > retries_before, "the replica died after the batch: no request was sent again"
    assert _replica_actors("fault-a.judge") != [victim]  # Serve started a replacement
    # Every (step, sample) exactly once, in input order, the same critiques as without the fault
    # (samples are seeded per prompt, so the resent requests recompute the same text).
    assert _keys(critiques) == _keys(expected)
    assert len(set(_keys(critiques))) == batch.num_rows * 3
    assert critiques.column("critique").to_pylist() == expected.column("critique").to_pylist()


class KillsAfterFirstExpand:
    """The pool, with actor 0 killed (really, by Ray) right after the search's first expand."""

    def __init__(self, pool) -> None:
        self.pool, self.calls = pool, 0

    def expand(self, prefixes, w, sampling):
        out = self.pool.expand(prefixes, w, sampling)
        self.calls += 1
        if self.calls == 1:
            ray.kill(self.pool.actors[0], no_restart=True)
        return out

    def generate(self, problems, n, sampling):
        return self.pool.generate(problems, n, sampling)


def test_generator_actor_killed_mid_search_is_replaced_and_the_search_completes(runs, tiny_model_dir) -> None:
    from rprm_ray.prompts import get_style
    from rprm_ray.search.greedy import greedy_search
    from rprm_ray.tasks.arith import make_splits, problems_table

    pool = runs["a"].generator(tiny_model_dir)
    assert pool.names == ["fault-a.policy-generator-0", "fault-a.policy-generator-1"]
    _, eval_problems = make_splits(TaskConfig(train_problems=20, eval_problems=6, seed=2))
    problems = problems_table(eval_problems)
    cfg = SearchConfig(strategy="greedy", candidates_per_step=2, max_depth=3, batch_prompts=6,
                       sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, seed=3))
    style = get_style("compact")
    expected, _ = greedy_search(problems, pool, runs["judge_a"], cfg, style)
    first_actor = pool.actors[0]

    faulty = KillsAfterFirstExpand(pool)
    with waits.in_stage("iter_1/search"):
        results, _ = greedy_search(problems, faulty, runs["judge_a"], cfg, style)

    assert faulty.calls >= 2  # the search went on after the kill
    assert pool.replacements == 1 and pool.actors[0] != first_actor
    assert ray.get(pool.actors[0].ready.remote(), timeout=60) == "fault-a.policy-generator-0"
    assert results.equals(expected)


def test_an_engine_call_past_its_time_out_names_the_replica_and_fails_health(runs, steps: pa.Table) -> None:
    """The replica cannot tell a hung engine from one slower than its time-out: a real vLLM call
    far longer than a 0.3 s time-out is the hang here."""
    judge = runs["judge_b"]
    [replica_id] = judge.replica_info()
    normal = judge.cfg
    judge.cfg = normal.model_copy(update={"request_timeout_s": 0.3, "max_batch_rows_per_request": 64})
    long_sampling = SamplingConfig(temperature=1.0, max_new_tokens=400, seed=1)
    try:
        with waits.in_stage("iter_0/judge_samples"), pytest.raises(waits.StuckError) as info:
            judge.score_steps(steps.slice(0, 32), k=8, sampling=long_sampling)
        # The engine is still in that call: Serve's health probe hears the replica is unhealthy.
        with pytest.raises(Exception, match=rf"ProcessJudge replica {replica_id}: engine stuck in score_steps"):
            judge.handle.check_health.remote().result(timeout_s=30)
    finally:
        judge.cfg = normal
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"ProcessJudge replica {replica_id}: engine gave no answer within 0.3 s while "
                       "score_steps of 32 steps; the replica reports itself unhealthy "
                       "(app 'fault-b.judge', stage iter_0/judge_samples)")


def test_a_run_removes_what_a_killed_driver_left_and_leaves_other_runs_alone(runs) -> None:
    from ray import serve

    from rprm_ray.roles import Roles

    # A new driver of run A (as after a kill) finds A's judge app and generators still there.
    restarted = Roles(_recipe("fault-a"))
    removed = restarted.clean_leftovers()
    assert set(removed) == {"Serve application fault-a.judge", "actor fault-a.policy-generator-0",
                            "actor fault-a.policy-generator-1"}
    apps = serve.status().applications
    assert "fault-a.judge" not in apps
    assert "fault-b.judge" in apps  # run B's judge is untouched
    names = {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)}
    assert not any(n.startswith("fault-a.") for n in names)
    assert restarted.clean_leftovers() == []  # once per driver
    # Run A's own shutdown now finds nothing of its own and must not touch run B's.
    runs["a"]._judge = runs["a"]._generator = None
