"""The arithmetic world's tables: policy SFT rows, labeled steps, worked-step and pairwise rows."""

from __future__ import annotations

from collections import Counter

import pytest

from rprm_ray.batches import validate
from rprm_ray.config import TaskConfig
from rprm_ray.prompts import get_style, parse_pairwise
from rprm_ray.tasks import arith, arith_tables, arith_teacher

STYLE = get_style("compact")
SMALL = TaskConfig(seed=3, train_problems=300, eval_problems=60)


@pytest.fixture(scope="module")
def splits() -> tuple[list[arith.ArithProblem], list[arith.ArithProblem]]:
    return arith.make_splits(SMALL)


def test_policy_sft_table(splits) -> None:
    table = arith_tables.policy_sft_table(splits[0][:5])
    validate(table, "sft_examples")
    for row, p in zip(table.to_pylist(), splits[0][:5], strict=True):
        assert row["kind"] == "policy" and row["example_id"] == f"policy/{p.problem_id}"
        assert row["prompt"] == f"Q:{p.question}\n"
        assert row["completion"].endswith(f"A:{p.answer}\n")
        assert STYLE.split_steps(row["completion"]) == list(p.steps)
        assert (row["prompt"] + row["completion"]).isascii()


def test_labeled_steps_table_is_a_processbench_expansion(splits) -> None:
    problems = splits[0][:200]
    table = arith_tables.labeled_steps_table(problems, seed=7, error_rate=0.5)
    validate(table, "labeled_steps")
    rows = table.to_pylist()
    by_solution: dict[str, list[dict]] = {}
    for r in rows:
        by_solution.setdefault(r["solution_id"], []).append(r)
    assert len(by_solution) == len(problems)
    n_err = 0
    for sid, steps in by_solution.items():
        labels = [r["label"] for r in steps]
        p = next(q for q in problems if q.problem_id == steps[0]["problem_id"])
        full = [r["now_step"] for r in steps]
        assert [r["step_idx"] for r in steps] == list(range(len(steps)))
        assert steps[-1]["previous_steps"] == full[:-1]
        if sid.endswith("/err"):
            n_err += 1
            assert labels == [True] * (len(steps) - 1) + [False]
            assert arith.label_steps(p, full) == len(steps) - 1
        else:
            assert labels == [True] * len(steps) and full == list(p.steps)
    assert 60 < n_err < 140  # error_rate 0.5 over 200 problems
    assert arith_tables.labeled_steps_table(problems, 7, 0.5).equals(table)
    # A problem's rows do not depend on which other problems are in the batch.
    sub = arith_tables.labeled_steps_table(problems[50:60], 7, 0.5).to_pylist()
    assert sub == [r for r in rows if r["problem_id"] in {p.problem_id for p in problems[50:60]}]
    assert all(r["label"] for r in arith_tables.labeled_steps_table(problems[:20], 7, 0.0).to_pylist())


def test_worked_step_rows_are_the_judgments_first_line_from_the_context_alone(splits) -> None:
    table = arith_tables.worked_step_table(splits[0][:20], seed=0, num_examples=45)
    validate(table, "sft_examples")
    rows = table.to_pylist()
    assert len(rows) == 45 and {r["kind"] for r in rows} == {"worked_step"}
    injected = 0
    for r in rows:
        lines = r["prompt"].rstrip("\n").split("\n")
        question, prefix = lines[0][2:], [x[2:] for x in lines if x.startswith("P:")]
        # Exactly the line a pairwise judgment opens with after the same context.
        assert r["completion"] == "R:" + arith_teacher.worked_step(arith.expected_step(question, prefix)) + "\n"
        problem = next(p for p in splits[0] if p.question == question)
        injected += prefix != list(problem.steps[:len(prefix)])
    assert 0 < injected < 45  # some prefixes carry an injected error, judged as written
    assert arith_tables.worked_step_table(splits[0][:20], seed=0, num_examples=45).equals(table)


def test_pairwise_sft_table_has_both_orders_with_the_right_winner(splits) -> None:
    table = arith_tables.pairwise_sft_table(splits[0][:50], seed=0, num_examples=101)
    validate(table, "sft_examples")
    rows = table.to_pylist()
    assert len(rows) == 100
    winners = Counter()
    for ab, ba in zip(rows[::2], rows[1::2], strict=True):
        assert ab["example_id"].endswith("/AB") and ba["example_id"].endswith("/BA")
        # The judge reads the context only; the steps are shown after its own R line.
        assert ab["prompt"] == ba["prompt"] and "\na:" not in ab["prompt"]
        lines = ab["prompt"].rstrip("\n").split("\n")
        question, prefix = lines[0][2:], [x[2:] for x in lines if x.startswith("P:")]
        shown = ab["completion"].split("\n")
        assert shown[0] == "R:" + arith_teacher.worked_step(arith.expected_step(question, prefix))
        a, b = shown[1][2:], shown[2][2:]
        assert ba["completion"].split("\n")[1:3] == [f"a:{b}", f"b:{a}"]  # the same pair, positions swapped
        wa, wb = parse_pairwise(ab["completion"]), parse_pairwise(ba["completion"])
        winner = a if wa == "A" else b
        assert winner == arith.expected_step(question, prefix) != (b if wa == "A" else a)
        assert {wa, wb} == {"A", "B"}  # the same step wins in both orders
        winners.update([wa, wb])
        assert (ab["prompt"] + ab["completion"]).isascii()
    assert winners["A"] == winners["B"] == 50
