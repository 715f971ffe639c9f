"""The teacher client against vLLM's own OpenAI-compatible server (a tiny model with a
ChatML-style chat template, started on 127.0.0.1), behind a proxy that answers some requests
with 429/500; and the R-PRM seed stage resuming after the endpoint failed mid-pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flaky_openai import FlakyProxy, every

from rprm_ray.config import Recipe, TeacherConfig, TinyModelConfig
from rprm_ray.loop import Run, StageError
from rprm_ray.shards import ShardStore
from rprm_ray.teacher_client import TeacherClient

pytestmark = pytest.mark.integration

# ChatML, as Qwen2.5 tokenizers carry it (without the default system turn).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def teacher_url(tmp_path_factory) -> str:
    from transformers import AutoTokenizer

    from rprm_ray.teacher_server import vllm_openai_server
    from rprm_ray.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("teacher")
    model = build_tiny_model(TinyModelConfig(max_position_embeddings=4096), root / "model", seed=1)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = CHATML
    tok.save_pretrained(model)
    with vllm_openai_server(model, max_model_len=4096, log_path=root / "server.log") as url:
        yield url


def _cfg(url: str, **kw) -> TeacherConfig:
    return TeacherConfig(**{**dict(kind="openai", url=url, model="teacher", temperature=1.0,
                                   retry_backoff_s=0.05, retry_backoff_max_s=0.2, requests_per_shard=3), **kw})


def test_chat_completions_through_a_proxy_that_answers_429_and_500(teacher_url, tmp_path):
    prompts = [f"Is {a} + {a} = {2 * a}?" for a in range(10)]
    with FlakyProxy(upstream=teacher_url, faults=[every(3, "429", 1), every(4, "500", 2)]) as proxy:
        client = TeacherClient(_cfg(proxy.url, max_concurrent_requests=4, max_retries=20), max_tokens=8)
        store = ShardStore(tmp_path / "teacher", "teacher_responses")
        out = client.generate(prompts, 2, store)
    assert [len(s) for s in out] == [2] * 10 and all(isinstance(t, str) for s in out for t in s)
    assert proxy.injected.get("429", 0) >= 1 and proxy.injected.get("500", 0) >= 1
    assert client.stats["retries"] == sum(proxy.injected.values())
    assert store.table().num_rows == 20 and len(store.parts()) >= 4  # persisted as they arrived
    assert 2 <= proxy.max_in_flight <= 4


def _write_data(root: Path) -> dict[str, str]:
    problems = [{"problem": f"What is {a} + {b}?", "answer": str(a + b),
                 "solution": f"{a} + {b} = {a + b}, so the answer is $\\boxed{{{a + b}}}$."}
                for a, b in [(2, 3), (4, 5), (6, 1)]]
    (root / "train.jsonl").write_text("\n".join(json.dumps(p) for p in problems))
    (root / "test.jsonl").write_text(json.dumps({"problem": "What is 7 + 7?", "answer": "14"}))
    labeled = [
        {"id": f"s{i}", "generator": "test", "problem": f"What is {a} + {b}?",
         "steps": [f"We add {a} and {b}.", f"{a} + {b} = {a + b + (i == 1)}.", f"The answer is {a + b + (i == 1)}."],
         "final_answer_correct": i != 1, "label": 1 if i == 1 else -1}
        for i, (a, b) in enumerate([(2, 3), (4, 5), (6, 1), (8, 2)])
    ] + [  # a second solution of the first two questions, wrong at once: first steps to pair
        {"id": f"w{i}", "generator": "test", "problem": f"What is {a} + {b}?",
         "steps": [f"We subtract {b} from {a}.", f"That gives {a - b}."], "final_answer_correct": False, "label": 0}
        for i, (a, b) in enumerate([(2, 3), (4, 5)])
    ]
    (root / "labeled.json").write_text(json.dumps(labeled))
    return {"train_problems": str(root / "train.jsonl"), "eval_problems": str(root / "test.jsonl"),
            "train_labeled_solutions": str(root / "labeled.json"),
            "eval_labeled_solutions": str(root / "labeled.json")}


def test_seed_stage_keeps_paid_answers_when_the_endpoint_fails_and_resume_asks_only_for_the_rest(
        teacher_url, tmp_path):
    from rprm_ray.stages.data import data_stage
    from rprm_ray.stages.judge import judge_seed_stage

    with FlakyProxy(upstream=teacher_url) as proxy:
        recipe = Recipe.model_validate({
            "name": "teacher_resume", "run_root": str(tmp_path / "runs"), "loop": {"mode": "rprm"},
            "task": {"kind": "dataset", "dataset": _write_data(tmp_path), "train_problems": 3, "eval_problems": 1},
            # Paper prompts do not fit the tiny models' 512 positions: keep them (truncated), as the
            # data stage would otherwise leave every labeled solution out.
            "models": {"prompt_style": "paper", "too_long": "truncate_left",
                       "teacher": {"kind": "openai", "url": proxy.url, "model": "teacher", "critiques_per_step": 2,
                                   "max_concurrent_requests": 1, "max_retries": 1, "retry_backoff_s": 0.0,
                                   "requests_per_shard": 1}},
            "judge": {"sampling": {"max_new_tokens": 8}},
        })
        run = Run.open(recipe)
        run.stage("iter_0/data", lambda: data_stage(run))
        steps = run.table("iter_0/data", "steps_train", "labeled_steps").num_rows
        held_out = steps - _seed_steps(run)
        proxy.stop_after = 3  # the endpoint breaks for good after 3 answers
        with pytest.raises(StageError, match=r"stage iter_0/judge_seed: .*HTTP 500.*3 of \d+ requests are saved"):
            run.stage("iter_0/judge_seed", lambda: judge_seed_stage(run))
        assert not run.manifest.is_done("iter_0/judge_seed")
        saved = ShardStore(run.dir / "iter_0/judge_seed/chunks/teacher", "teacher_responses").table()
        assert saved.num_rows == 3 * 2

        proxy.stop_after = None
        asked_before = proxy.count
        resumed = Run.open(recipe, resume_dir=run.dir)
        # The untrained tiny teacher writes no verdicts: the stage then refuses to train on nothing.
        with pytest.raises(StageError, match=r"stage iter_0/judge_seed: none of the \d+ teacher critiques has a "
                                             r"verdict that agrees with its step's label"):
            resumed.stage("iter_0/judge_seed", lambda: judge_seed_stage(resumed))
        total = _seed_steps(resumed)
        assert proxy.count - asked_before == total - 3  # only the missing requests were paid for
        assert held_out >= 0
        store = ShardStore(run.dir / "iter_0/judge_seed/chunks/teacher", "teacher_responses")
        assert store.table().num_rows == total * 2


def _seed_steps(run: Run) -> int:
    """Distinct teacher prompts of the seed stage (its steps minus those held out of the SFT)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rprm_ray.stages.judge import judge_sft_held_out_ids

    steps = run.table("iter_0/data", "steps_train", "labeled_steps")
    held = pa.array(sorted(judge_sft_held_out_ids(run)), pa.string())
    kept = steps.filter(pc.invert(pc.is_in(steps.column("problem_id"), held)))
    return len({(r["question"], tuple(r["previous_steps"]), r["now_step"]) for r in kept.to_pylist()})


def test_psrlm_eft_pairs_are_judged_by_the_served_teacher_in_both_orders(teacher_url, tmp_path):
    """The pairwise (EFT) path against the real server: every candidate pair is asked in both
    orders through the chat API; the untrained tiny teacher writes no [[A]]/[[B]] verdict, so
    the policy SFT stage refuses to bootstrap a self-judge on nothing and says why."""
    from rprm_ray.stages.data import data_stage
    from rprm_ray.stages.policy import policy_sft_stage

    with FlakyProxy(upstream=teacher_url, faults=[every(3, "429", 0)]) as proxy:
        recipe = Recipe.model_validate({
            "name": "eft", "run_root": str(tmp_path / "runs"), "loop": {"mode": "psrlm", "search_pool_problems": 0},
            "bootstrap": {"pairwise_judge_examples": 8},
            "task": {"kind": "dataset", "dataset": _write_data(tmp_path), "train_problems": 3, "eval_problems": 1},
            "models": {"prompt_style": "paper", "judge": None, "too_long": "truncate_left",
                       "teacher": {"kind": "openai", "url": proxy.url, "model": "teacher", "retry_backoff_s": 0.0,
                                   "max_retries": 20}},
            "judge": {"sampling": {"max_new_tokens": 8}},
        })
        run = Run.open(recipe)
        run.stage("iter_0/data", lambda: data_stage(run))
        with pytest.raises(StageError, match=r"stage iter_0/policy_sft: no pairwise judge \(EFT\) examples.*"
                                             r"eft_pairs (\d+), eft_unparsable \1"):
            run.stage("iter_0/policy_sft", lambda: policy_sft_stage(run))
    asked = [p for p in proxy.prompts if "impartial judge" in p]
    assert asked and len(set(asked)) % 2 == 0 and proxy.injected.get("429")
    store = ShardStore(run.dir / "iter_0/policy_sft/chunks/teacher_pairwise", "teacher_responses")
    assert store.table().num_rows == len(set(asked))  # the paid judgments are kept for a resume
