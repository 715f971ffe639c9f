"""The final stages' comparisons, from stage outputs written to a real run directory: Best-of-N
candidates rebuilt from the graded solutions and the judge's step scores, and beam search compared
with Best-of-n problem by problem at its step budget."""

from __future__ import annotations

from pathlib import Path

from rprm_ray import batches
from rprm_ray.config import load_recipe
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages.final import beam_vs_best_of_n, best_of_n_problems

ROOT = Path(__file__).resolve().parents[2]


def solutions(per_problem: dict[str, list[tuple[list[str], bool]]]):
    rows = [
        {"problem_id": pid, "sample_idx": i, "question": pid, "text": "\n".join(steps), "steps": steps,
         "answer": steps[-1], "finished": True, "correct": correct}
        for pid, sols in per_problem.items()
        for i, (steps, correct) in enumerate(sols)
    ]
    return batches.from_rows(rows, "solutions")


def step_scores(scores: dict[str, list[float]]):
    return batches.from_rows(
        [{"problem_id": sid.split("/")[0], "solution_id": sid, "step_idx": i, "score": s, "num_valid": 1,
          "num_invalid": 0} for sid, per_step in scores.items() for i, s in enumerate(per_step)],
        "step_scores")


# p0: sample 1 (correct) has the higher min score; p1: sample 0 (wrong) does.
SOLUTIONS = solutions({"p0": [(["a", "A:1"], False), (["b", "A:2"], True)],
                       "p1": [(["c", "A:3"], False), (["d", "A:4"], True)]})
SCORES = step_scores({"p0/s0": [0.9, 0.2], "p0/s1": [0.8, 0.7], "p1/s0": [0.9, 0.9], "p1/s1": [0.1, 0.9]})


def test_candidates_are_rebuilt_in_sample_order_with_their_step_scores():
    problems = best_of_n_problems(SOLUTIONS, SCORES)
    assert [p.id for p in problems] == ["p0", "p1"]
    assert problems[0].step_scores == [[0.9, 0.2], [0.8, 0.7]]
    assert problems[1].correct == [False, True]
    assert problems[1].answers == ["A:3", "A:4"]


def test_beam_is_compared_with_best_of_n_at_the_n_that_spends_its_budget(tmp_path):
    run = Run.open(load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}"]))
    run.stage("final/best_of_n", lambda: StageResult(
        metrics={"best_aggregation": "min", "candidate_steps_at_n": {"1": 4, "2": 8}},
        tables={"solutions": (SOLUTIONS, "solutions"), "step_scores": (SCORES, "step_scores")}))
    # Best-of-2 (min) is right on p0 only; beam is right on both: +50 points over 2 problems.
    vs = beam_vs_best_of_n(run, {"p0": True, "p1": True}, beam_steps=8)
    assert (vs["n"], vs["points"], vs["problems"]) == (2, 50.0, 2)
    # At 4 steps Best-of-1 is the fair comparison: wrong on both.
    assert beam_vs_best_of_n(run, {"p0": True, "p1": False}, beam_steps=4)["points"] == 50.0
    assert beam_vs_best_of_n(run, {"p0": True, "p1": True}, beam_steps=100) is None


def test_a_run_from_before_step_scores_were_kept_gets_no_comparison(tmp_path):
    run = Run.open(load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}"]))
    run.stage("final/best_of_n", lambda: StageResult(
        metrics={"best_aggregation": "min", "candidate_steps_at_n": {"1": 4, "2": 8}},
        tables={"solutions": (SOLUTIONS, "solutions")}))
    assert beam_vs_best_of_n(run, {"p0": True, "p1": True}, beam_steps=8) is None
