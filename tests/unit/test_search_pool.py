"""The problems psrlm's iterations search are held back from M1's SFT (its solutions and its
pairwise judgments), and the searches read no reference answer."""

from __future__ import annotations

import pytest

from rprm_ray.config import Recipe
from rprm_ray.loop import Run
from rprm_ray.stages import data
from rprm_ray.stages.policy import iteration_problems, m1_problems, search_pool


def _run(tmp_path, **loop) -> Run:
    recipe = Recipe.model_validate({
        "name": "pool", "run_root": str(tmp_path / "runs"), "models": {"too_long": "truncate_left"},
        "task": {"train_problems": 40, "eval_problems": 4},
        "loop": {"problems_per_iteration": 6, "iterations": 3, **loop},
    })
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    return run


def _ids(table) -> list[str]:
    return table.column("problem_id").to_pylist()


def test_psrlm_searches_problems_m1_never_trained_on(tmp_path):
    run = _run(tmp_path, mode="psrlm")
    train = _ids(data.problems(run, "train"))
    searched = [_ids(iteration_problems(run, k)) for k in (1, 2, 3)]
    assert searched == [train[0:6], train[6:12], train[12:18]]  # a new slice per iteration
    assert _ids(search_pool(run)) == train[:18]
    m1 = set(_ids(m1_problems(run)))
    assert m1 == set(train[18:]) and not m1 & {p for ids in searched for p in ids}
    # What M1 is trained on: the task's rows for exactly those problems (solutions and judgments).
    sft = run.task.policy_sft(m1_problems(run)).column("example_id").to_pylist()
    assert {e.split("/", 1)[1] for e in sft} == m1
    eft = run.task.pairwise_sft(m1_problems(run), 20, 0).column("example_id").to_pylist()
    assert {e.split("/")[1] for e in eft} <= m1


def test_a_smaller_pool_is_cycled_and_zero_keeps_every_problem_for_m1(tmp_path):
    run = _run(tmp_path, mode="psrlm", search_pool_problems=9)
    train = _ids(data.problems(run, "train"))
    assert [_ids(iteration_problems(run, k)) for k in (1, 2, 3)] == [train[0:6], train[2:8], train[0:6]]
    assert _ids(m1_problems(run)) == train[9:]
    guided = _run(tmp_path / "g", mode="guided")
    assert _ids(m1_problems(guided)) == _ids(data.problems(guided, "train"))  # as before: nothing held back
    assert _ids(iteration_problems(guided, 2)) == _ids(data.problems(guided, "train"))[6:12]


@pytest.mark.parametrize("mode", ["psrlm", "guided"])
def test_the_searched_problems_carry_no_reference_answer(tmp_path, mode):
    run = _run(tmp_path, mode=mode)
    for k in (1, 2, 3):
        table = iteration_problems(run, k)
        assert table.num_rows == 6 and table.column("answer").null_count == 6
