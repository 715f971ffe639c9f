"""The judge's evaluation set of the policy's own mistakes: its sampled solutions labelled by the
world's step labeler and expanded as ProcessBench expands a labeled solution."""

from __future__ import annotations

from rprm_ray import batches
from rprm_ray.evaluation.own_mistakes import first_error, own_labeled_steps
from rprm_ray.tasks import arith


def is_right(question: str, prefix: list[str], step: str) -> bool:
    return step.strip() == arith.expected_step(question, prefix)


def _solution(pid: str, steps: list[str], sample_idx: int = 0) -> dict:
    return {"problem_id": pid, "sample_idx": sample_idx, "question": "(3+4)*2", "text": "\n".join(steps),
            "steps": steps, "answer": None, "finished": True, "correct": None}


def test_first_error_is_the_first_step_that_does_not_follow_from_the_ones_before() -> None:
    assert first_error("(3+4)*2", ["3+4=7", "7*2=14", "A:14"], is_right) == -1
    assert first_error("(3+4)*2", ["3+4=8", "8*2=16", "A:16"], is_right) == 0  # later steps follow, the first is wrong
    assert first_error("(3+4)*2", ["3+4=7", "7*2=14", "A:15"], is_right) == 2
    assert first_error("(3+4)*2", ["3+4=7", "7*2=14", "A:14", "1+1=2"], is_right) == 3  # nothing may follow
    assert first_error("(3+4)*2", ["3+4=7"], is_right) == -1  # unfinished but right so far


def test_solutions_expand_to_their_steps_up_to_the_first_error() -> None:
    table = batches.from_rows([_solution("p", ["3+4=7", "7*2=14", "A:14"]),
                               _solution("q", ["3+4=7", "7*2=15", "A:15"], sample_idx=1),
                               _solution("r", [])], "solutions")
    steps, counts = own_labeled_steps(table, is_right)
    assert counts == {"own_solutions": 2, "own_solutions_with_error": 1}
    rows = [(r["solution_id"], r["step_idx"], r["now_step"], r["label"]) for r in steps.to_pylist()]
    assert rows == [("own/p/0", 0, "3+4=7", True), ("own/p/0", 1, "7*2=14", True), ("own/p/0", 2, "A:14", True),
                    ("own/q/1", 0, "3+4=7", True), ("own/q/1", 1, "7*2=15", False)]
    assert steps.to_pylist()[4]["previous_steps"] == ["3+4=7"]
    empty, none = own_labeled_steps(batches.empty("solutions"), is_right)
    assert empty.num_rows == 0 and none == {"own_solutions": 0, "own_solutions_with_error": 0}


def test_the_stage_labels_m1s_sampled_solutions_of_the_held_out_problems(tmp_path) -> None:
    from pathlib import Path

    from stage_roles import Roles
    from test_search_world import world

    from rprm_ray.config import load_recipe
    from rprm_ray.loop import Run, StageResult
    from rprm_ray.stages.data import DATA
    from rprm_ray.stages.own_mistakes import STAGE, measures_own_mistakes, own_solutions_stage, own_steps

    _, table, gen = world(6, p_correct=0.7)
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}"])
    run = Run.open(recipe, roles=Roles(gen, None))
    run.stage(DATA, lambda: StageResult(tables={"problems_eval": (table, "problems")}, state={"m1_dir": "m1"}))
    assert measures_own_mistakes(run) and own_steps(run) is None
    m = run.stage(STAGE, lambda: own_solutions_stage(run))
    steps = own_steps(run)
    assert m["own_solutions"] == 6 and m["own_steps"] == steps.num_rows and m["temperature"] == 1.0
    solutions = run.table(STAGE, "solutions", "solutions").to_pylist()
    # Exactly the solutions with a wrong step end in a step labelled False, and only there.
    wrong = {f"own/{s['problem_id']}/0" for s in solutions if first_error(s["question"], s["steps"], is_right) >= 0}
    assert m["own_solutions_with_error"] == len(wrong) > 0
    assert {r["solution_id"] for r in steps.to_pylist() if r["label"] is False} == wrong
    assert all(s["correct"] is not None for s in solutions)  # graded for the record
