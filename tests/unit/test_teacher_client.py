"""The OpenAI-compatible teacher client against a local HTTP endpoint that injects faults:
retries with backoff, bounded concurrency, shard-by-shard persistence and resume, the key."""

from __future__ import annotations

import logging
import random

import pyarrow as pa
import pytest
from flaky_openai import FlakyProxy, every

from rprm_ray.config import TeacherConfig
from rprm_ray.shards import ShardStore
from rprm_ray.teacher_client import TeacherClient, TeacherError, backoff_seconds

SECRET = "sk-test-DO-NOT-LOG-4f9a2c"


def cfg(url: str, **kw) -> TeacherConfig:
    base = dict(kind="openai", url=url, model="teacher", retry_backoff_s=0.0, retry_backoff_max_s=0.0,
                max_retries=4, requests_per_shard=2, request_timeout_s=10.0)
    return TeacherConfig(**{**base, **kw})


def answer(prompt: str, n: int) -> list[str]:
    return [f"{prompt} sample {i}" for i in range(n)]


def store(tmp_path) -> ShardStore:
    return ShardStore(tmp_path / "teacher", "teacher_responses")


def test_backoff_doubles_caps_and_honours_retry_after():
    rng = random.Random(0)
    delays = [backoff_seconds(a, 1.0, 10.0, rng=rng) for a in range(6)]
    for a, d in enumerate(delays):
        ceiling = min(10.0, 2.0 ** a)
        assert ceiling / 2 <= d <= ceiling
    assert backoff_seconds(3, 1.0, 10.0, retry_after=2.5) == 2.5
    assert backoff_seconds(3, 1.0, 10.0, retry_after=99) == 10.0


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_transient_errors_are_retried_and_answers_come_back_in_order(tmp_path, api):
    faults = [every(4, "429", 1), every(5, "500", 2), every(7, "few", 3)]
    prompts = [f"p{i}" for i in range(12)] + ["p3"]  # a repeated prompt is asked once
    with FlakyProxy(faults=faults, answer=answer) as proxy:
        client = TeacherClient(cfg(proxy.url, api=api, max_retries=30), max_tokens=16)  # ~55% of requests fail
        out = client.generate(prompts, 2, store(tmp_path))
    assert out == [answer(p, 2) for p in prompts]
    assert set(proxy.injected) == {"429", "500", "few"}
    assert client.stats["retries"] == sum(proxy.injected.values())
    assert client.stats["requests"] == proxy.count == 12 + client.stats["retries"]


def test_concurrency_is_bounded_by_the_recipe(tmp_path):
    with FlakyProxy(answer=answer, delay_s=0.05) as proxy:
        client = TeacherClient(cfg(proxy.url, max_concurrent_requests=3), max_tokens=16)
        client.generate([f"p{i}" for i in range(24)], 1, store(tmp_path))
    assert 2 <= proxy.max_in_flight <= 3


def test_a_failed_pass_keeps_what_was_answered_and_resume_asks_only_for_the_rest(tmp_path):
    prompts = [f"p{i}" for i in range(9)]
    with FlakyProxy(answer=answer) as proxy:
        proxy.stop_after = 5  # the endpoint breaks for good after 5 answers
        client = TeacherClient(cfg(proxy.url, max_concurrent_requests=1, max_retries=1), max_tokens=16)
        with pytest.raises(TeacherError, match=r"still failing after 1 retries.*5 of 9 requests are saved.*other 4"):
            client.generate(prompts, 2, store(tmp_path))
    assert store(tmp_path).table().num_rows == 10  # 5 answered requests x 2 samples, paid once
    with FlakyProxy(answer=answer) as healthy:
        resumed = TeacherClient(cfg(healthy.url), max_tokens=16)
        out = resumed.generate(prompts, 2, store(tmp_path))
    assert sorted(healthy.prompts) == prompts[5:]
    assert resumed.stats["reused"] == 5
    assert out == [answer(p, 2) for p in prompts]


def test_a_rejected_prompt_is_skipped_and_counted_and_the_pass_goes_on(tmp_path):
    with FlakyProxy(faults=[lambda i, body: "400" if "long" in body["messages"][-1]["content"] else None],
                    answer=answer) as proxy:
        client = TeacherClient(cfg(proxy.url), max_tokens=16)
        out = client.generate(["a", "too long", "b"], 2, store(tmp_path))
    assert out == [answer("a", 2), [], answer("b", 2)]
    assert client.stats["rejected"] == 1 and client.stats["retries"] == 0 and proxy.count == 3


def test_a_request_past_its_time_out_is_retried(tmp_path):
    with FlakyProxy(faults=[every(1000, "hang", 0)], answer=answer) as proxy:
        client = TeacherClient(cfg(proxy.url, request_timeout_s=0.5), max_tokens=16)
        assert client.generate(["q"], 1, store(tmp_path)) == [answer("q", 1)]
    assert client.stats["retries"] == 1


def test_a_permanent_error_is_not_retried_and_never_shows_the_key(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEACHER_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FlakyProxy(faults=[every(1, "401-echo-key")], answer=answer) as proxy:
        client = TeacherClient(cfg(proxy.url, api_key_env="TEACHER_TEST_KEY"), max_tokens=16)
        with pytest.raises(TeacherError) as info:
            client.generate(["q"], 1, store(tmp_path))
    assert proxy.auth == {f"Bearer {SECRET}"}  # the key reached the endpoint ...
    assert proxy.count == 1  # ... a 401 is not retried ...
    message = str(info.value)
    assert "AuthenticationError" in message and "***" in message and SECRET not in message  # ... and is redacted
    assert SECRET not in caplog.text
    assert SECRET not in repr(client.cfg.model_dump())


def test_retries_are_logged_without_the_key(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEACHER_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FlakyProxy(faults=[every(2, "429", 0)], answer=answer) as proxy:
        client = TeacherClient(cfg(proxy.url, api_key_env="TEACHER_TEST_KEY"), max_tokens=16)
        client.generate(["a", "b", "c"], 1, store(tmp_path))
    assert "HTTP 429; retry 1 of 4" in caplog.text and SECRET not in caplog.text
    blob = pa.concat_tables([pa.parquet.read_table(p) for p in store(tmp_path).parts()]).to_pylist()
    assert SECRET not in repr(blob)


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("NO_SUCH_TEACHER_KEY", raising=False)
    with pytest.raises(TeacherError, match="environment variable NO_SUCH_TEACHER_KEY is not set"):
        TeacherClient(cfg("http://127.0.0.1:9/v1", api_key_env="NO_SUCH_TEACHER_KEY"), max_tokens=16)


def test_a_store_of_another_kind_is_refused(tmp_path):
    client = TeacherClient(cfg("http://127.0.0.1:9/v1"), max_tokens=16)
    with pytest.raises(TeacherError, match="holds 'teacher_responses'"):
        client.generate(["q"], 1, ShardStore(tmp_path, "critiques"))


def test_a_driver_killed_mid_pass_loses_at_most_one_unflushed_shard(tmp_path):
    """SIGKILL the process running a pass once some shards exist; the next pass pays only for
    prompts with no persisted answer and returns every answer."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    prompts = [f"p{i}" for i in range(40)]
    with FlakyProxy(answer=answer, delay_s=0.05) as proxy:
        script = textwrap.dedent(f"""
            from rprm_ray.config import TeacherConfig
            from rprm_ray.shards import ShardStore
            from rprm_ray.teacher_client import TeacherClient
            cfg = TeacherConfig(kind="openai", url={proxy.url!r}, model="teacher", max_concurrent_requests=2,
                                requests_per_shard=2)
            TeacherClient(cfg, 16).generate({prompts!r}, 2, ShardStore({str(tmp_path / "teacher")!r},
                                            "teacher_responses"))
        """)
        child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "teacher").glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        answered_before_kill = proxy.count
    saved = store(tmp_path).table()
    saved_requests = len(set(saved.column("request_id").to_pylist()))
    assert 3 * 2 <= saved_requests < len(prompts)
    assert answered_before_kill - saved_requests <= 2 * 2 + 2  # one unflushed shard + requests in flight
    with FlakyProxy(answer=answer) as proxy:
        out = TeacherClient(cfg(proxy.url), 16).generate(prompts, 2, store(tmp_path))
    assert proxy.count == len(prompts) - saved_requests
    assert out == [answer(p, 2) for p in prompts]


def test_a_resume_may_change_how_the_teacher_is_reached_but_not_what_it_is_asked(tmp_path):
    from rprm_ray.config import load_recipe
    from rprm_ray.loop import Run, RunError

    tiny = __import__("pathlib").Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"
    first = load_recipe(tiny, [f"run_root={tmp_path}"])
    run = Run.open(first)
    moved = load_recipe(tiny, [f"run_root={tmp_path}", "models.teacher.url=http://elsewhere:8000/v1",
                               "models.teacher.max_concurrent_requests=2", "models.teacher.max_retries=20"])
    assert Run.open(moved, resume_dir=run.dir).recipe.models.teacher.max_concurrent_requests == 2
    hotter = load_recipe(tiny, [f"run_root={tmp_path}", "models.teacher.temperature=0.9"])
    with pytest.raises(RunError, match=r"models.teacher.temperature: 0.4 -> 0.9"):
        Run.open(hotter, resume_dir=run.dir)


def test_each_request_is_seeded_from_the_recipe_and_its_prompt_and_carries_its_extra_body(tmp_path):
    from rprm_ray.engines.base import prompt_seed

    pairwise = {"structured_outputs": {"regex": "\\[\\[(A|B)\\]\\]"}}
    with FlakyProxy(answer=answer) as proxy:
        critic = TeacherClient(cfg(proxy.url, seed=7, extra_body={"top_k": 5}), max_tokens=16)
        critic.generate(["a", "b"], 1, store(tmp_path))
        judge = TeacherClient(cfg(proxy.url, seed=7, extra_body={"top_k": 5}), max_tokens=16, extra_body=pairwise)
        judge.generate(["a"], 1, ShardStore(tmp_path / "pairwise", "teacher_responses"))
        unseeded = TeacherClient(cfg(proxy.url, seed=None), max_tokens=16)
        unseeded.generate(["c"], 1, ShardStore(tmp_path / "unseeded", "teacher_responses"))
    by_prompt = {(b["messages"][-1]["content"], "structured_outputs" in b): b for b in proxy.bodies}
    # One seed per prompt: one shared seed drew the same random numbers for every request.
    assert by_prompt[("a", False)]["seed"] == prompt_seed(7, "a") != by_prompt[("b", False)]["seed"] == prompt_seed(7, "b")
    assert by_prompt[("a", False)]["top_k"] == 5 and by_prompt[("b", False)]["top_k"] == 5
    assert by_prompt[("a", True)]["structured_outputs"] == pairwise["structured_outputs"]
    assert "top_k" not in by_prompt[("a", True)]  # the pairwise body replaces the critiques' one
    assert "seed" not in by_prompt[("c", False)]
    assert critic.request_id("a", 1) != judge.request_id("a", 1)  # persisted answers never mix
