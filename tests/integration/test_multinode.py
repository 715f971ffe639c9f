"""A multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head without CPUs and
three one-CPU worker nodes; two judge replicas (Serve) and two generator actors spread over them.
A guided search (generator + judge, one loop iteration's work) runs once undisturbed, then again
with a node removed while the judge scores the first level's steps: the node holding a generator
and, where one node holds both, a judge replica. The second search must complete with results
equal to the first: every problem exactly once, same steps.

The simulation needs its own cluster, so it runs in a child Python process (the session's
cluster fixture stays untouched); the child writes what it saw as JSON for the assertions here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def simulate(out_path: Path) -> None:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

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
    from rprm_ray.prompts import get_style
    from rprm_ray.roles import Roles
    from rprm_ray.search.greedy import greedy_search
    from rprm_ray.tasks.arith import make_splits, problems_table
    from rprm_ray.tiny import build_tiny_model

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]  # one spare for replacements
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}})
    # One HTTP proxy: every simulated node shares this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": 0})
    report: dict = {}
    try:
        model_dir = build_tiny_model(TinyModelConfig(), Path(tempfile.mkdtemp()) / "tiny", seed=0, verdict_token=True)
        recipe = Recipe(
            name="multinode",
            judge=JudgeConfig(num_cpus_per_replica=0.5, max_batch_rows_per_request=2, enforce_eager=True,
                              sampling=SamplingConfig(temperature=0.0, max_new_tokens=16),
                              autoscaling=AutoscalingConfig(min_replicas=2, max_replicas=2)),
            generator=GeneratorConfig(replicas=2, num_cpus_per_replica=0.5, enforce_eager=True),
        )
        roles = Roles(recipe)
        judge = roles.judge(model_dir)
        pool = roles.generator(model_dir)

        def node_of(actor) -> str | None:
            try:
                return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()),
                               timeout=60)
            except ray.exceptions.RayActorError:  # on the removed node, and not called since
                return None

        judge_nodes: dict[str, str] = {}
        for _ in range(20):  # the probes reach both replicas within a few rounds
            judge_nodes.update({rid: i["node_id"] for rid, i in judge.replica_info().items()})
            if len(judge_nodes) == 2:
                break
        gen_nodes = [node_of(a) for a in pool.actors]
        report["judge_nodes"] = sorted(judge_nodes.values())
        report["generator_nodes"] = gen_nodes
        report["worker_nodes"] = [w.node_id for w in workers]

        _, eval_problems = make_splits(TaskConfig(train_problems=20, eval_problems=6, seed=4))
        problems = problems_table(eval_problems)
        cfg = SearchConfig(strategy="greedy", candidates_per_step=2, max_depth=3, batch_prompts=6,
                           sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, seed=3))
        style = get_style("compact")
        expected, _ = greedy_search(problems, pool, judge, cfg, style)

        both = [n for n in gen_nodes if n in judge_nodes.values()]
        victim_id = both[0] if both else gen_nodes[0]
        victim = next(w for w in workers if w.node_id == victim_id)
        report["removed_node"] = victim_id

        class RemovesANodeMidJudging:
            """The judge, with the victim node removed 0.5 s into its first batch."""

            calls = 0

            def score_steps(self, steps):
                RemovesANodeMidJudging.calls += 1
                if RemovesANodeMidJudging.calls == 1:
                    threading.Timer(0.5, cluster.remove_node, (victim,), {"allow_graceful": False}).start()
                return judge.score_steps(steps)

        results, _ = greedy_search(problems, pool, RemovesANodeMidJudging(), cfg, style)
        report["judge_calls_after_removal"] = RemovesANodeMidJudging.calls - 1
        report["equal"] = results.equals(expected)
        report["problem_ids"] = results.column("problem_id").to_pylist()
        report["expected_problem_ids"] = problems.column("problem_id").to_pylist()
        report["generator_replacements"] = pool.replacements
        report["judge_retries"] = judge.retries
        report["generator_nodes_after"] = [node_of(a) for a in pool.actors]
        roles.shutdown()
    finally:
        out_path.write_text(json.dumps(report))
        ray.shutdown()
        cluster.shutdown()


def test_a_node_removed_mid_iteration_loses_no_row(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    # No automatic reconnect: Serve's handle threads would otherwise start a new Ray session
    # after the simulation shuts its cluster down.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_AUTO_CONNECT": "0"}
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    workers = set(report["worker_nodes"])
    # The roles really were spread: two nodes hold them, the head holds none.
    assert set(report["judge_nodes"]) | set(report["generator_nodes"]) <= workers
    assert len(set(report["judge_nodes"]) | set(report["generator_nodes"])) >= 2
    assert report["removed_node"] in set(report["generator_nodes"])
    # The removal hit work: a judge request resent, or a generator replaced (whichever the search
    # reached first on the dead node).
    assert report["judge_retries"] + report["generator_replacements"] >= 1
    assert report["removed_node"] not in report["generator_nodes_after"]
    assert report["problem_ids"] == report["expected_problem_ids"]  # every problem exactly once
    assert report["equal"], "the search with a node removed gave other results than without"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's code, whatever the environment has installed
    simulate(Path(sys.argv[1]))
