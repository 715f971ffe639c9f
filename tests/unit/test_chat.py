"""Chat templates (rprm_ray/chat.py): one rendering of every prompt, the same in SFT rows, DPO
pairs, sampling and P(Yes) scoring, checked byte for byte against the prompts an engine receives."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from rprm_ray.chat import ChatStyle, ChatTemplateError, load_chat_template, render_user_turn, role_style
from rprm_ray.config import JudgeConfig, SamplingConfig, load_recipe
from rprm_ray.prompts import get_style

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny_arith.yaml"


@pytest.fixture
def chat_model(hub_tiny_cache):
    from rprm_ray.hub import resolve_model

    cache, repo_id = hub_tiny_cache
    return resolve_model(repo_id, cache=cache)


def test_render_equals_the_tokenizers_apply_chat_template(chat_model):
    from transformers import AutoTokenizer

    chat = load_chat_template("auto", chat_model, "models.policy.chat_template")
    text = get_style("paper").judge_prompt("What is 2+3?", ["Step 1: 2+3=5"], "The answer is \\boxed{5}")
    tok = AutoTokenizer.from_pretrained(str(chat_model))
    expected = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    assert render_user_turn(chat, text) == expected
    assert expected.startswith("<|im_start|>user\n") and expected.endswith("<|im_start|>assistant\n")
    assert render_user_turn(None, text) == text


def test_settings_auto_none_file_and_a_tokenizer_without_template(chat_model, tiny_model_dir, tmp_path):
    assert load_chat_template("none", chat_model, "x") is None
    assert load_chat_template("auto", tiny_model_dir, "x") is None  # the plain tiny tokenizer has none
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}{{ eos_token }}")
    chat = load_chat_template(str(f), tiny_model_dir, "models.judge.chat_template")
    assert render_user_turn(chat, "hi") == "[hi]</s>"
    with pytest.raises(ChatTemplateError, match="models.judge.chat_template: chat template file not found"):
        load_chat_template(str(tmp_path / "missing.jinja"), None, "models.judge.chat_template")


def test_chat_style_is_picklable_and_keeps_step_format(chat_model):
    import pickle

    style = ChatStyle(get_style("paper"), load_chat_template("auto", chat_model, "x"))
    again = pickle.loads(pickle.dumps(style))
    assert again.policy_prompt("Q") == style.policy_prompt("Q")
    assert style.render_prefix("Q", ["a", "b"]) == style.policy_prompt("Q") + "Step 1: a\n\nStep 2: b\n\n"
    assert style.step_stop == ["\n\n"] and style.extract_answer("\\boxed{4}") == "4"


def _recipe(hub_tiny_cache, *extra):
    cache, repo_id = hub_tiny_cache
    data = ROOT / ".." / "shared" / "data"
    return load_recipe(TINY, [
        "models.prompt_style=paper", f"models.policy.name_or_path={repo_id}",
        f"models.judge.name_or_path={repo_id}", f"models.hub_cache={cache}", "models.teacher.kind=vllm",
        f"models.teacher.model={repo_id}", "task.kind=dataset", "task.train_problems=4", "task.eval_problems=2",
        f"task.dataset={{train_problems: {data / 'math' / 'gsm8k_test.jsonl'}, "
        f"eval_problems: {data / 'math' / 'math500.jsonl'}, "
        f"train_labeled_solutions: {data / 'processbench' / 'gsm8k.json'}}}", *extra])


class RecordingEngine:
    """A real transformers engine on the tiny chat model that keeps every prompt it is sent."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []

    def generate(self, prompts, n, sampling, **kw):
        self.prompts.extend(prompts)
        return self.engine.generate(prompts, n, sampling, **kw)


def test_training_rows_and_engine_prompts_are_byte_identical(hub_tiny_cache, chat_model, shared_data_dir):
    from rprm_ray import judging
    from rprm_ray.engines import make_engine
    from rprm_ray.pairs import step_pairs
    from rprm_ray.stages.judge import with_judge_prompts
    from rprm_ray.tasks import make_task

    recipe = _recipe(hub_tiny_cache)
    policy, judge = role_style(recipe, "policy"), role_style(recipe, "judge")
    assert isinstance(policy, ChatStyle) and isinstance(judge, ChatStyle)
    task = make_task(recipe)
    problems = task.problems("train")
    engine = RecordingEngine(make_engine(str(chat_model), "transformers", JudgeConfig(max_model_len_tokens=4096)))
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=4)

    # Policy SFT rows vs the prompts the generator sends (PolicyGenerator.generate: style.policy_prompt).
    sft = task.policy_sft(problems)
    engine.generate([policy.policy_prompt(q) for q in problems.column("question").to_pylist()], 1, sampling)
    assert sft.column("prompt").to_pylist() == engine.prompts[: sft.num_rows]
    assert all(p.startswith("<|im_start|>user\n") for p in engine.prompts)

    # Judge SFT rows (teacher critiques re-prompted for the judge) vs the judge's scoring prompts.
    steps = task.labeled_steps("train").slice(0, 3)
    engine.prompts.clear()
    critiques, _ = judging.score_steps(engine, judge, steps, 1, sampling, "p_yes")
    teacher_rows = critiques.set_column(critiques.column_names.index("prompt"), "prompt",
                                        pa.array(["(the teacher's own rendering)"] * critiques.num_rows))
    sft_rows = with_judge_prompts(teacher_rows, steps, judge)
    assert sft_rows.column("prompt").to_pylist() == engine.prompts == critiques.column("prompt").to_pylist()
    assert all("<|im_start|>assistant\n" in p and "Now Step:" in p for p in engine.prompts)

    # Step-DPO pairs vs the prefix the generator expands (PolicyGenerator.expand: style.render_prefix).
    question, prefix = problems.column("question")[0].as_py(), ["Step one."]
    engine.prompts.clear()
    engine.generate([policy.render_prefix(question, prefix)], 1, sampling)
    candidates = pa.table({
        "problem_id": ["p"] * 2, "prefix_id": ["p/0"] * 2, "question": [question] * 2,
        "prefix_steps": [prefix] * 2, "candidate_id": [0, 1], "step": ["Step two.", "Step 2 wrong."],
        "finished": [False, False], "num_tokens": [9, 13], "cumulative_logprob": [None, None]})
    judgments = pa.table({"problem_id": ["p"] * 2, "prefix_id": ["p/0"] * 2, "candidate_a": [0, 0], "candidate_b": [1, 1],
                          "order": ["AB", "BA"], "judgment": ["[[A]]", "[[B]]"], "winner": [0, 0],
                          "valid": [True, True]})
    from rprm_ray import batches

    pairs, _ = step_pairs(batches.from_rows(candidates.to_pylist(), "candidates"),
                          batches.from_rows(judgments.to_pylist(), "pairwise_judgments"), policy)
    assert pairs.column("prompt").to_pylist() == engine.prompts


def test_tiny_recipe_prompts_stay_raw():
    recipe = load_recipe(TINY)
    assert role_style(recipe, "policy") is get_style("compact")
    assert role_style(recipe, "judge") is get_style("compact")


@pytest.mark.parametrize(("sets", "marker"), [
    ([], "Q:"),  # guided: a judge of its own, prompts as measured
    (["loop.mode=psrlm"], "J:"),  # one model is policy and judge
    (["loop.mode=psrlm", "models.distinct_judge_prompts=false"], "Q:"),
    (["models.distinct_judge_prompts=true"], "J:"),
])
def test_judge_prompts_open_with_j_where_one_model_does_both_jobs(sets, marker):
    recipe = load_recipe(TINY, sets)
    for role in ("policy", "judge"):
        style = role_style(recipe, role)
        assert style.policy_prompt("1+2") == "Q:1+2\n"
        assert style.judge_prompt("1+2", [], "1+2=3").startswith(marker)
        assert style.pairwise_prompt("1+2", [], "1+2=3", "1+2=4").startswith(marker)
