"""Judge-DPO step selection with the ids real data carries (labeled PRM800K solutions beside
NuminaMath-style problems, ids from different sources), and stages that refuse to train on
zero rows."""

from __future__ import annotations

import json

import pytest

from rprm_ray.config import Recipe
from rprm_ray.loop import Run, StageError
from rprm_ray.stages import data, judge

QUESTIONS = [f"What is {a} + {a}?" for a in range(1, 9)]


def _run(tmp_path, mode: str, per_iteration: int, iterations: int = 1) -> Run:
    (tmp_path / "train.jsonl").write_text("\n".join(
        json.dumps({"problem": q, "answer": str(2 * (i + 1)), "id": f"numina-{i}"}) for i, q in enumerate(QUESTIONS)))
    (tmp_path / "test.jsonl").write_text(json.dumps({"problem": "What is 99 + 1?", "answer": "100"}))
    labeled = []
    for i, q in enumerate(QUESTIONS):
        for s in range(2):  # two labeled solutions per question, as in PRM800K
            wrong = s == 1
            labeled.append({"id": f"prm800k-{i}-{s}", "generator": "t", "problem": q,
                            "steps": [f"Add {i + 1} twice.", f"That is {2 * (i + 1) + wrong}."],
                            "final_answer_correct": not wrong, "label": 1 if wrong else -1})
    (tmp_path / "labeled.json").write_text(json.dumps(labeled))
    recipe = Recipe.model_validate({
        "name": f"ids_{mode}", "run_root": str(tmp_path / "runs"),
        "loop": {"mode": mode, "problems_per_iteration": per_iteration, "iterations": iterations},
        "task": {"kind": "dataset", "train_problems": 8, "eval_problems": 1, "dataset": {
            "train_problems": str(tmp_path / "train.jsonl"), "eval_problems": str(tmp_path / "test.jsonl"),
            "train_labeled_solutions": str(tmp_path / "labeled.json")}},
        "models": {"prompt_style": "paper", "too_long": "truncate_left", "judge": None if mode == "psrlm" else {},
                   "teacher": {"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": "t"}},
    })
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    return run


def _questions(run: Run, ids) -> set[str]:
    steps = data.labeled_steps(run, "train")
    return {q for pid, q in zip(steps.column("problem_id").to_pylist(), steps.column("question").to_pylist(),
                                strict=True) if pid in set(ids)}


def test_rprm_selects_whole_labeled_questions_by_their_own_ids(tmp_path):
    run = _run(tmp_path, "rprm", per_iteration=3)
    ids = judge.judge_dpo_problem_ids(run)
    assert ids == [f"prm800k-{i}-{s}" for i in range(3) for s in range(2)]  # every solution of 3 questions
    steps = judge.judge_dpo_steps(run)
    assert steps.num_rows == 12 and set(steps.column("label").to_pylist()) == {True, False}
    assert judge.judge_sft_held_out_ids(run) == set(ids)


def test_psrlm_keeps_searched_questions_out_of_the_judge_sft_and_the_dpo_samples(tmp_path):
    run = _run(tmp_path, "psrlm", per_iteration=2)
    searched = set(QUESTIONS[:2])  # the iteration searches the first 2 training problems (numina ids)
    dpo = judge.judge_dpo_problem_ids(run)
    assert _questions(run, dpo) == set(QUESTIONS[2:4])
    held = judge.judge_sft_held_out_ids(run)
    assert _questions(run, held) == searched | set(QUESTIONS[2:4])


def test_at_most_half_the_labeled_questions_go_to_dpo(tmp_path):
    run = _run(tmp_path, "rprm", per_iteration=100)
    assert len(_questions(run, judge.judge_dpo_problem_ids(run))) == 4


def test_a_stage_with_nothing_to_train_on_fails_naming_itself(tmp_path):
    """A judge whose sampled critiques gave no pairs: the DPO stage fails instead of keeping the
    SFT judge, and records nothing."""
    run = _run(tmp_path, "rprm", per_iteration=3)
    run.stage("iter_0/judge_samples", _empty_pairs)
    with pytest.raises(StageError, match=r"^stage iter_0/judge_dpo: no critique pairs to train on"):
        run.stage("iter_0/judge_dpo", lambda: judge.judge_dpo_stage(run))
    assert not run.manifest.is_done("iter_0/judge_dpo")


def test_labeled_steps_are_required_for_the_seed_stage(tmp_path):
    run = _run(tmp_path, "rprm", per_iteration=3)
    no_steps = data.labeled_steps(run, "train").slice(0, 0)
    with pytest.raises(StageError, match=r"^stage x: no labeled training steps for the teacher"):
        run.stage("x", lambda: judge.judge_seed_stage(_with_steps(run, no_steps)))


def _empty_pairs():
    from rprm_ray import batches
    from rprm_ray.loop import StageResult

    return StageResult(tables={"pairs": (batches.empty("preference_pairs"), "preference_pairs")})


def _with_steps(run: Run, steps) -> Run:
    """The run, with the data stage's training steps replaced (a file without labeled solutions)."""
    from rprm_ray import batches

    batches.to_parquet(steps, run.dir / data.DATA / "steps_train.parquet", "labeled_steps")
    return run
