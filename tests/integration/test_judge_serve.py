"""ProcessJudge on real Ray Serve with a real vLLM engine (the untrained tiny model).

Serve and the judge application start once for this module (~20-50 s on 2 cores) and every test
shares them. Order matters and is the file order: judging, bad input, autoscaling 1 -> 2 -> 1,
then the weight update (which must leave the replicas it found alive).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from rprm_ray import batches
from rprm_ray.config import AutoscalingConfig, JudgeConfig, SamplingConfig, TaskConfig, TinyModelConfig
from rprm_ray.prompts import VERDICT_PREFIX, VERDICTS, parse_pairwise, parse_verdict

pytestmark = pytest.mark.integration

K = 2
# Long enough that a burst of requests keeps replicas busy (the autoscaling test).
MAX_NEW_TOKENS = 24
# Fewer tokens than the shortest valid critique ending (the verdict prefix, then " No"), so an
# untrained model cannot write a valid critique: checked against the tiny model's tokenizer.
TOO_SHORT_FOR_A_VERDICT = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition: Callable[[], bool], timeout_s: float, every_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


@pytest.fixture(scope="module")
def judge_cfg() -> JudgeConfig:
    return JudgeConfig(
        critiques_per_step=K,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=0),
        # Two replicas must fit beside whatever else the session's 2-CPU cluster holds.
        num_cpus_per_replica=0.5,
        max_batch_rows_per_request=4,
        autoscaling=AutoscalingConfig(
            min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=1, downscale_delay_s=2
        ),
    )


@pytest.fixture(scope="module")
def judge(ray_cluster, tiny_model_dir: Path, judge_cfg: JudgeConfig) -> Iterator:
    from actors.judge import deploy_judge

    client = deploy_judge(judge_cfg, tiny_model_dir, name="judge_test", port=_free_port())
    yield client
    client.shutdown()


@pytest.fixture(scope="module")
def eval_steps() -> pa.Table:
    from rprm_ray.tasks.arith import make_splits
    from rprm_ray.tasks.arith_tables import labeled_steps_table

    _, eval_problems = make_splits(TaskConfig(train_problems=20, eval_problems=8, seed=3))
    return labeled_steps_table(eval_problems, seed=3, error_rate=0.5)


def test_untrained_judge_critiques_are_all_counted_invalid(judge, eval_steps: pa.Table, tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    shortest = min(len(tok.encode(f"{VERDICT_PREFIX} {v}", add_special_tokens=False)) for v in VERDICTS)
    assert TOO_SHORT_FOR_A_VERDICT < shortest
    short = SamplingConfig(temperature=1.0, max_new_tokens=TOO_SHORT_FOR_A_VERDICT, seed=0)
    steps = eval_steps.slice(0, 10)  # 10 rows at 4 per request: 3 concurrent requests
    critiques, scores = judge.score_steps(steps, sampling=short)

    assert critiques.num_rows == 10 * K
    expected_keys = [
        (sid, idx, s)
        for sid, idx in zip(steps.column("solution_id").to_pylist(), steps.column("step_idx").to_pylist(), strict=True)
        for s in range(K)
    ]
    got_keys = list(
        zip(*(critiques.column(c).to_pylist() for c in ("solution_id", "step_idx", "sample_idx")), strict=True)
    )
    assert got_keys == expected_keys  # row order survives the split into requests
    assert critiques.column("label").to_pylist() == [lab for lab in steps.column("label").to_pylist() for _ in range(K)]
    assert not any(critiques.column("valid").to_pylist())
    assert all(parse_verdict(text) is None for text in critiques.column("critique").to_pylist())
    assert critiques.column("p_yes").null_count == critiques.num_rows

    assert scores.column("solution_id").to_pylist() == steps.column("solution_id").to_pylist()
    assert scores.column("score").null_count == scores.num_rows
    assert scores.column("num_invalid").to_pylist() == [K] * 10
    assert scores.column("num_valid").to_pylist() == [0] * 10


def test_k_and_sampling_overrides_reach_the_engine(judge, eval_steps: pa.Table) -> None:
    short = SamplingConfig(temperature=0.0, max_new_tokens=5, seed=0)
    critiques, _ = judge.score_steps(eval_steps.slice(0, 3), k=3, sampling=short)
    assert critiques.num_rows == 9
    # Greedy: the K critiques of a step are identical. The compact judge writes its own line, is
    # shown the step, and writes the rest: each written part at most 5 tokens of one byte each.
    texts = critiques.column("critique").to_pylist()
    steps = eval_steps.slice(0, 3).column("now_step").to_pylist()
    for i in range(0, 9, 3):
        assert texts[i] == texts[i + 1] == texts[i + 2]
        own, rest = texts[i].split("\n", 1)
        shown = f"N:{steps[i // 3]}\n"
        assert rest.startswith(shown), texts[i]
        assert len(own.encode()) <= 5 and len(rest[len(shown):].encode()) <= 5


def test_compare_judges_every_pair_in_both_orders(judge) -> None:
    rows = [
        {"problem_id": f"q{p}", "prefix_id": f"x{p}", "candidate_id": c, "question": "(3+4)*2",
         "prefix_steps": ["3+4=7"], "step": f"7*2={13 + c}", "finished": False, "num_tokens": 6,
         "cumulative_logprob": None}
        for p in range(3)
        for c in range(3)
    ]
    judgments = judge.compare(batches.from_rows(rows, "candidates"))
    keys = {
        (r["prefix_id"], r["candidate_a"], r["candidate_b"], r["order"]) for r in judgments.to_pylist()
    }
    assert keys == {
        (f"x{p}", a, b, o) for p in range(3) for a, b in ((0, 1), (0, 2), (1, 2)) for o in ("AB", "BA")
    }
    for r in judgments.to_pylist():
        verdict = parse_pairwise(r["judgment"])
        assert r["valid"] == (verdict is not None)
        assert (r["winner"] is None) == (verdict is None)
        # The compact judge writes its own line from the context, then is shown both steps.
        a, b = (r["candidate_a"], r["candidate_b"]) if r["order"] == "AB" else (r["candidate_b"], r["candidate_a"])
        assert r["judgment"].split("\n")[1:3] == [f"a:7*2={13 + a}", f"b:7*2={13 + b}"], r["judgment"]


def test_bad_input_names_the_judge_and_the_column(judge, eval_steps: pa.Table) -> None:
    broken = eval_steps.slice(0, 2).drop(["now_step"])
    with pytest.raises(batches.BatchError, match=r"ProcessJudge\.score_steps: labeled_steps: missing column 'now_step'"):
        judge.score_steps(broken)
    # The replica validates too (callers may use the handle directly).
    with pytest.raises(Exception, match=r"ProcessJudge\.score_steps: labeled_steps: missing column 'now_step'"):
        judge.handle.score_steps.remote(broken).result()


def test_burst_scales_from_one_to_two_replicas_and_back(judge, eval_steps: pa.Table) -> None:
    assert _wait_for(lambda: judge.replica_states() == {"RUNNING": 1}, 180), judge.replica_states()
    steps = eval_steps.slice(0, 24)  # 6 concurrent requests per call against a target of 1
    stop = threading.Event()
    completed: list[int] = []
    errors: list[BaseException] = []

    def burst() -> None:
        while not stop.is_set():
            try:
                _, scores = judge.score_steps(steps)
                completed.append(scores.num_rows)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
                return

    threads = [threading.Thread(target=burst, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        scaled_up = _wait_for(lambda: judge.running_replicas() == 2, 300)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[0]
    assert scaled_up, f"no second replica under load: {judge.replica_states()}"
    assert completed and set(completed) == {24}

    scaled_down = _wait_for(lambda: judge.replica_states() == {"RUNNING": 1}, 300)
    assert scaled_down, f"did not scale back down when idle: {judge.replica_states()}"


def test_user_config_reloads_weights_in_place(judge, tmp_path: Path) -> None:
    from rprm_ray.tiny import build_tiny_model
    from rprm_ray.training import checksum_model_dir

    new_dir = build_tiny_model(TinyModelConfig(), tmp_path / "judge_v2", seed=1, verdict_token=True)
    new_checksum = checksum_model_dir(new_dir)
    before = judge.replica_info()
    assert {i["checksum"] for i in before.values()} == {judge.checksum}
    assert judge.checksum != new_checksum

    held = judge.update_weights(new_dir, new_checksum)

    after = judge.replica_info()
    assert held == new_checksum
    assert {i["checksum"] for i in after.values()} == {new_checksum}
    assert {i["model_dir"] for i in after.values()} == {str(Path(new_dir).resolve())}
    # In place: the same replica processes answer, no restart.
    assert {(rid, i["pid"]) for rid, i in after.items()} == {(rid, i["pid"]) for rid, i in before.items()}
