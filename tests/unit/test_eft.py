"""PSRLM's pairwise (EFT) data from labeled steps judged by a teacher: pairs share a prefix,
judgments are kept only when consistent in both orders and, where labels differ, right."""

from __future__ import annotations

import json

import pytest
from flaky_openai import FlakyProxy

from rprm_ray import batches
from rprm_ray.config import Recipe
from rprm_ray.eft import candidate_pairs, judged_examples
from rprm_ray.loop import Run, StageError
from rprm_ray.prompts import get_style, parse_pairwise

STYLE = get_style("paper")


def steps_table(rows):
    return batches.from_rows([{"problem_id": pid, "solution_id": pid, "step_idx": len(prev), "question": q,
                               "previous_steps": prev, "now_step": now, "label": label}
                              for pid, q, prev, now, label in rows], "labeled_steps")


STEPS = steps_table([
    ("s1", "What is 2+2?", [], "2+2 = 4.", True),
    ("s2", "What is 2+2?", [], "2+2 = 5.", False),
    ("s3", "What is  2+2?", [], "Two plus two is four.", True),  # same question, other spacing
    ("s2", "What is 2+2?", ["2+2 = 5."], "So 5.", None),  # after the first error: unlabeled
    ("s4", "What is 3+3?", [], "3+3 = 7.", False),
    ("s5", "What is 3+3?", [], "3+3 = 8.", False),  # two wrong steps: no pair
    ("s6", "What is 3+3?", ["3+3 = 6."], "The answer is 6.", True),  # alone after its prefix
])


def test_pairs_share_a_prefix_have_a_correct_step_and_labelled_ones_come_first():
    pairs = candidate_pairs(STEPS, 10, seed=0)
    got = [({p["step_a"], p["step_b"]}, p["label_a"] != p["label_b"]) for p in pairs]
    assert len(pairs) == 3 and all(p["prefix"] == [] and p["question"].startswith("What is") for p in pairs)
    assert [mixed for _, mixed in got] == [True, True, False]
    assert {frozenset(s) for s, _ in got} == {
        frozenset({"2+2 = 4.", "2+2 = 5."}), frozenset({"Two plus two is four.", "2+2 = 5."}),
        frozenset({"2+2 = 4.", "Two plus two is four."})}
    assert candidate_pairs(STEPS, 10, seed=0) == pairs and len(candidate_pairs(STEPS, 1, seed=0)) == 1


def _step_of(prompt: str, slot: str) -> str:
    return prompt.split(f"[The Start of Assistant {slot}'s Next Step]")[1].split("[The End")[0]


def prefers(word: str):
    """A judge that picks the step containing `word` (or A when neither does): position-bias-free."""
    def judge(prompts):
        return [f"Reasoning... {'[[B]]' if word in _step_of(p, 'B') and word not in _step_of(p, 'A') else '[[A]]'}"
                for p in prompts]
    return judge


def test_only_consistent_label_agreeing_judgments_are_kept_in_both_orders():
    pairs = candidate_pairs(STEPS, 10, seed=0)
    table, counts = judged_examples(pairs, STYLE, prefers("4"))
    # Right and consistent where one step shows a "4"; "four" vs "5" shows none: A both times.
    assert counts["eft_kept_pairs"] == 2 and counts["eft_inconsistent"] == 1 and table.num_rows == 4
    for r in table.to_pylist():
        winner = parse_pairwise(r["completion"])
        chosen = _step_of(r["prompt"], winner)
        assert "4" in chosen or "four" in chosen
    assert {r["example_id"].rsplit("/", 1)[1] for r in table.to_pylist()} == {"AB", "BA"}

    _, wrong = judged_examples(pairs, STYLE, prefers("5"))
    assert wrong["eft_against_label"] == 2
    _, biased = judged_examples(pairs, STYLE, lambda prompts: ["[[A]]"] * len(prompts))
    assert biased["eft_inconsistent"] == 3 and biased["eft_kept_pairs"] == 0
    _, silent = judged_examples(pairs, STYLE, lambda prompts: ["no verdict"] * len(prompts))
    assert silent["eft_unparsable"] == 3


def test_a_recompute_first_style_cannot_be_judged_in_one_call():
    pairs = [{"problem_id": "p", "question": "1+1", "prefix": [], "step_a": "1+1=2", "step_b": "1+1=3",
              "label_a": True, "label_b": False}]
    with pytest.raises(ValueError, match="'compact' writes its own step first"):
        judged_examples(pairs, get_style("compact"), lambda prompts: ["[[A]]"] * len(prompts))


def _psrlm_run(tmp_path, url: str, examples: int) -> Run:
    (tmp_path / "train.jsonl").write_text(json.dumps({"problem": "What is 2+2?", "answer": "4",
                                                      "solution": "2+2 = 4, so $\\boxed{4}$."}))
    (tmp_path / "test.jsonl").write_text(json.dumps({"problem": "What is 9+1?", "answer": "10"}))
    labeled = [{"id": f"s{i}", "generator": "t", "problem": "What is 2+2?", "steps": [s, "Done."],
                "final_answer_correct": ok, "label": -1 if ok else 0}
               for i, (s, ok) in enumerate([("2+2 = 4.", True), ("2+2 = 5.", False), ("Two plus two is four.", True)])]
    (tmp_path / "labeled.json").write_text(json.dumps(labeled))
    recipe = Recipe.model_validate({
        # One training problem: M1 trains on it (no search pool held back).
        "name": "eft", "run_root": str(tmp_path / "runs"), "loop": {"mode": "psrlm", "search_pool_problems": 0},
        "bootstrap": {"pairwise_judge_examples": examples},
        "task": {"kind": "dataset", "train_problems": 1, "eval_problems": 1, "dataset": {
            "train_problems": str(tmp_path / "train.jsonl"), "eval_problems": str(tmp_path / "test.jsonl"),
            "train_labeled_solutions": str(tmp_path / "labeled.json")}},
        "models": {"prompt_style": "paper", "judge": None, "too_long": "truncate_left",  # no data left out
                   "teacher": {"kind": "openai", "url": url, "model": "t", "retry_backoff_s": 0.0}},
    })
    from rprm_ray.stages import data

    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    return run


def test_the_teacher_writes_eft_rows_through_the_endpoint_and_they_persist(tmp_path):
    from rprm_ray.stages.policy import teacher_pairwise_sft

    judge = prefers("4")
    with FlakyProxy(answer=lambda prompt, n: judge([prompt]) * n) as proxy:
        run = _psrlm_run(tmp_path, proxy.url, examples=4)
        run.current_stage = "iter_0/policy_sft"
        table, metrics = teacher_pairwise_sft(run, 4)
    assert table.num_rows == 4 and metrics["eft_examples"] == 4
    assert metrics["eft_pairs"] == 3 and proxy.count == 6  # every pair asked in both orders
    assert metrics["eft_teacher_requests"] == 6
    stored = run.dir / "iter_0/policy_sft/chunks/teacher_pairwise"
    assert len(list(stored.glob("part-*.parquet"))) >= 1


def test_psrlm_bootstrap_without_any_usable_eft_row_fails_naming_the_stage(tmp_path):
    from rprm_ray.stages.policy import policy_sft_stage

    with FlakyProxy(answer=lambda prompt, n: ["I cannot decide."] * n) as proxy:
        run = _psrlm_run(tmp_path, proxy.url, examples=4)
        with pytest.raises(StageError, match=r"^stage iter_0/policy_sft: no pairwise judge \(EFT\) examples .*"
                                             r"eft_pairs 3, eft_unparsable 3"):
            run.stage("iter_0/policy_sft", lambda: policy_sft_stage(run))
