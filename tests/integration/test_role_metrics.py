"""Per-role metrics (actors/metrics.py) on the Prometheus endpoint Ray exports, scraped while the
roles work: the judge as a Serve replica (transformers engine on the tiny model, to stay cheap)
and the PairBuilder as a plain actor. What the endpoint shows must equal each role's own totals."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from rprm_ray.config import AutoscalingConfig, JudgeConfig, PairsConfig, SamplingConfig, TaskConfig

pytestmark = pytest.mark.integration

# Ray's workers report metrics to the node every 10 s by default; allow a few rounds.
EXPORT_WAIT_S = 60.0


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels without the per-process ones): value} of every rprm_ sample,
    summed over workers."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith("ray_rprm_"):
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k in ("role", "replica", "WorkerId")))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def exported(samples: dict, name: str, **labels: str) -> float | None:
    """The value of `ray_rprm_<name>` with the given labels (None when not exported yet)."""
    want = set(labels.items())
    values = [v for (n, ls), v in samples.items() if n == f"ray_rprm_{name}" and want <= set(ls)]
    return sum(values) if values else None


def wait_until_exported(url: str, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict:
    """Scrape until every expected {(name, labels): value} shows; the last scrape either way."""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        samples = scrape(url)
        if all(exported(samples, name, **dict(labels)) == value for (name, labels), value in expected.items()):
            return samples
        if time.monotonic() > deadline:
            return samples
        time.sleep(2.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge(ray_cluster, tiny_model_dir: Path):
    from actors.judge import deploy_judge

    cfg = JudgeConfig(backend="transformers", critiques_per_step=2, num_cpus_per_replica=0.5,
                      sampling=SamplingConfig(temperature=1.0, max_new_tokens=8, seed=0),
                      autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1))
    client = deploy_judge(cfg, tiny_model_dir, name="judge_metrics", port=_free_port())
    yield client
    client.shutdown()


def test_judge_and_pair_builder_metrics_reach_the_prometheus_endpoint(judge, ray_metrics_url: str) -> None:
    from actors.pair_builder import PairBuilder
    from rprm_ray.tasks.arith import make_splits
    from rprm_ray.tasks.arith_tables import labeled_steps_table

    _, problems = make_splits(TaskConfig(train_problems=4, eval_problems=3, seed=1))
    steps = labeled_steps_table(problems, seed=1, error_rate=0.5)
    # The judge works in the background while the endpoint is scraped: its counters show up
    # before the work ends.
    calls, stop = [], threading.Event()

    def work() -> None:
        while not stop.is_set() or not calls:
            calls.append(judge.score_steps(steps))

    worker = threading.Thread(target=work)
    worker.start()
    try:
        deadline = time.monotonic() + EXPORT_WAIT_S
        while (exported(scrape(ray_metrics_url), "rows_in_total", role="judge") or 0) < steps.num_rows:
            assert worker.is_alive() and time.monotonic() < deadline, "no judge metrics while the judge worked"
            time.sleep(1.0)
    finally:
        stop.set()
        worker.join()

    builder = PairBuilder.remote(PairsConfig(), "compact")
    critiques = calls[0][0]
    ray.get(builder.critique_pairs.remote(critiques))
    built = ray.get(builder.critique_pairs.remote(critiques))
    builder_worker = ray.get(builder.__ray_call__.remote(lambda self: ray.get_runtime_context().get_worker_id()))

    [info] = judge.replica_info(probes=1).values()
    totals = info["totals"]
    assert totals["rows_in"] == len(calls) * steps.num_rows
    assert totals["judge_critiques"] == len(calls) * 2 * steps.num_rows
    replica = (("replica", info["replica_id"]), ("role", "judge"))
    pair_builder = (("WorkerId", builder_worker), ("role", "pair_builder"))
    expected = {
        ("rows_in_total", replica): totals["rows_in"],
        ("rows_out_total", replica): totals["rows_out"],
        ("judge_critiques_total", replica): totals["judge_critiques"],
        ("judge_weight_loads_total", replica): totals["judge_weight_loads"],
        ("rows_in_total", pair_builder): 2.0 * critiques.num_rows,
    }
    if built.num_rows:
        expected[("pairs_built_total", pair_builder)] = 2.0 * built.num_rows
    samples = wait_until_exported(ray_metrics_url, expected)
    shown = {key: exported(samples, key[0], **dict(key[1])) for key in expected}
    ray.kill(builder)
    assert shown == expected
