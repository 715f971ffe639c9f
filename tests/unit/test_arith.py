"""The embedded arithmetic world: generator, labels, error injection (the teacher and the tables:
test_arith_teacher.py, test_arith_tables.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rprm_ray.batches import validate
from rprm_ray.config import TaskConfig
from rprm_ray.prompts import get_style
from rprm_ray.tasks import arith

STYLE = get_style("compact")
SMALL = TaskConfig(seed=3, train_problems=300, eval_problems=60)


@pytest.fixture(scope="module")
def splits() -> tuple[list[arith.ArithProblem], list[arith.ArithProblem]]:
    return arith.make_splits(SMALL)


def _eval_left_to_right(question: str) -> int:
    # Python's own precedence agrees with the world's, so eval is an independent reference.
    return eval(question, {"__builtins__": {}})  # noqa: S307 - digits and + - * ( ) only


def test_reference_solution_of_the_example() -> None:
    p = arith.make_problem("x", "(37+25)*3-8")
    assert p.steps == ("37+25=62", "62*3=186", "186-8=178", "A:178")
    assert p.answer == "178"
    assert arith.solve("2+3*4") == ["3*4=12", "2+12=14", "A:14"]  # precedence as written


def test_parse_expression_rejects_garbage() -> None:
    for bad in ("", "12", "1+", "(1+2", "1+2)", "1/2", "-1+2"):
        with pytest.raises(ValueError, match="expression"):
            arith.parse_expression(bad)


def test_generated_problems_respect_the_config(splits) -> None:
    train, eval_set = splits
    bound = arith.value_bound(SMALL)
    for p in train + eval_set:
        assert set(p.question) <= set("0123456789+-*()")
        ops = len(p.steps) - 1
        assert SMALL.min_steps <= ops <= SMALL.max_steps
        assert p.steps[-1] == f"A:{p.answer}"
        assert int(p.answer) == _eval_left_to_right(p.question)
        for step in p.steps[:-1]:
            a, rest = step.split("=")[0], step.split("=")[1]
            assert 1 <= int(rest) <= bound, step
            assert a[0].isdigit()
        assert arith.label_steps(p, list(p.steps)) == -1
    ops_seen = Counter(ch for p in train for ch in p.question if ch in "+-*")
    assert set(ops_seen) == {"+", "-", "*"}


def test_operators_and_sizes_follow_the_config() -> None:
    cfg = TaskConfig(
        seed=1,
        train_problems=50,
        eval_problems=5,
        operators=["*"],
        min_steps=2,
        max_steps=2,
        max_operand=9,
        max_multiplier=5,
    )
    train, _ = arith.make_splits(cfg)
    for p in train:
        assert "+" not in p.question and "-" not in p.question
        assert len(p.steps) == 3


def test_splits_are_disjoint_deterministic_and_stable(splits) -> None:
    train, eval_set = splits
    assert len(train) == SMALL.train_problems and len(eval_set) == SMALL.eval_problems
    tq, eq = [p.question for p in train], [p.question for p in eval_set]
    assert len(set(tq)) == len(tq) and len(set(eq)) == len(eq)
    assert not set(tq) & set(eq)
    assert train[0].problem_id == "arith-train-000000" and eval_set[59].problem_id == "arith-eval-000059"
    again_train, again_eval = arith.make_splits(SMALL)
    assert again_train == train and again_eval == eval_set
    # The eval set does not depend on the train size; another seed gives other problems.
    _, eval_bigger = arith.make_splits(SMALL.model_copy(update={"train_problems": 500}))
    assert eval_bigger == eval_set
    other_train, _ = arith.make_splits(SMALL.model_copy(update={"seed": 4}))
    assert [p.question for p in other_train] != tq


def test_too_small_a_world_fails_with_a_clear_message() -> None:
    cfg = TaskConfig(
        train_problems=500,
        eval_problems=5,
        min_steps=1,
        max_steps=1,
        max_operand=3,
        operators=["+"],
        max_multiplier=2,
    )
    with pytest.raises(ValueError, match="distinct train problems"):
        arith.make_splits(cfg)


def test_problems_table(splits) -> None:
    table = arith.problems_table(splits[1])
    validate(table, "problems")
    row = table.to_pylist()[0]
    assert row == {
        "problem_id": "arith-eval-000000",
        "question": splits[1][0].question,
        "answer": splits[1][0].answer,
        "source": "arith",
    }


def test_label_steps_and_answers() -> None:
    p = arith.make_problem("x", "(37+25)*3-8")
    assert arith.label_steps(p, ["37+25=62", "62*3=186", "186-8=178", "A:178"]) == -1
    assert arith.label_steps(p, ["37+25=63", "63*3=189", "189-8=181", "A:181"]) == 0
    assert arith.label_steps(p, ["37+25=62", "62*3=186", "186-8=178", "A:179"]) == 3
    assert arith.label_steps(p, [" 37+25=62 ", "62+3=65"]) == 1
    assert arith.label_steps(p, ["37+25=62"]) == -1  # unfinished, nothing wrong yet
    assert arith.label_steps(p, [*p.steps, "1+1=2"]) == 4  # a step after the answer
    assert arith.is_correct_answer(p, "178") and arith.is_correct_answer(p, " 178 ")
    assert not arith.is_correct_answer(p, "179")
    assert not arith.is_correct_answer(p, None) and not arith.is_correct_answer(p, "17 8")


def test_injected_errors_are_labeled_at_the_injection_and_continue_consistently(splits) -> None:
    rng = random.Random(0)
    kinds = Counter()
    positions = Counter()
    for p in splits[0]:
        inj = arith.inject_error(p, rng)
        kinds[inj.kind] += 1
        positions[inj.error_idx == len(p.steps) - 1] += 1
        assert arith.label_steps(p, inj.steps) == inj.error_idx
        assert STYLE.is_final_step(inj.steps[-1]) and len(inj.steps) == len(p.steps)
        assert (
            not arith.is_correct_answer(p, STYLE.extract_answer(inj.steps))
            or inj.error_idx < len(p.steps) - 1
        )
        # After the error every step follows from the steps as written.
        for i in range(inj.error_idx + 1, len(inj.steps)):
            assert inj.steps[i] == arith.expected_step(p.question, inj.steps[:i])
    assert set(kinds) == {"off_by_one", "wrong_operator", "carried_error", "digit_slip"}
    assert positions[True] > 0 and positions[False] > 0  # answer-step errors and others


def test_carried_error_keeps_the_result_consistent_with_the_wrong_operand() -> None:
    rng = random.Random(1)
    for _ in range(200):
        step, kind = arith.corrupt_step(rng, "(37+25)*3-8", ["37+25=62"])
        a, rest = step.split("*")
        b, c = rest.split("=")
        assert step != "62*3=186"
        if kind == "carried_error":
            assert a != "62" and int(a) * int(b) == int(c)
            return
    pytest.fail("no carried_error in 200 draws")


def test_expected_step_uses_previous_steps_as_written() -> None:
    q = "(37+25)*3-8"
    assert arith.expected_step(q, []) == "37+25=62"
    assert arith.expected_step(q, ["37+25=63"]) == "63*3=189"
    assert arith.expected_step(q, ["37+25=63", "63*3=189", "189-8=181"]) == "A:181"
    assert arith.expected_step(q, ["garbage"]) == "62*3=186"  # unreadable: fall back to the right value
    assert arith.expected_step(q, ["37+25=62", "A:62"]) is None  # nothing follows an answer
