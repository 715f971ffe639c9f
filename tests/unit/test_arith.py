"""The embedded arithmetic world: generator, labels, error injection, teacher, tables."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rprm_ray.batches import validate
from rprm_ray.config import TaskConfig
from rprm_ray.prompts import get_style, parse_pairwise, parse_verdict
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


def test_aligned_pairs_put_each_expected_digit_beside_the_claimed_one() -> None:
    assert arith.aligned_pairs("116", "611") == "16x 11= 61x"
    assert arith.aligned_pairs("1302", "92") == "1_x 3_x 09x 22="  # right-aligned, `_` pads
    assert arith.aligned_pairs("A", "A") == "AA="


def test_worked_digits_go_from_the_units_up_with_each_carry() -> None:
    # 57: 12-5=7 borrow 1, 12-6-1=5 borrow 1, 1-0-1=0
    assert arith.worked_digits(122, "-", 65) == "2-5-0=71 2-6-1=51 1-0-1=00"
    assert arith.worked_digits(65, "-", 122) == arith.worked_digits(122, "-", 65)  # below zero: worked as 122-65
    # 1302: each digit's product plus the carry it takes in, then digit and carry; the last carry leads
    assert arith.worked_digits(186, "*", 7) == "6*7=42+0=24 8*7=56+4=06 1*7=07+6=31"
    assert arith.worked_digits(7, "*", 186) == arith.worked_digits(186, "*", 7)  # the one-digit factor multiplies
    assert arith.worked_digits(999, "+", 1) == "9+1+0=01 9+0+1=01 9+0+1=01"  # 1000
    assert arith.worked_digits(12, "*", 34) is None and arith.worked_digits(-3, "+", 4) is None
    assert arith.worked_step("186-8=178") == "186-8=6-8-0=81 8-0-1=70 1-0-0=10>178"
    assert arith.worked_step("62*3=187") == "62*3=2*3=06+0=60 6*3=18+0=81>187"  # the stated result, right or not
    assert arith.worked_step("A:178") == "A:178" and arith.worked_step("-") == "-"
    for step in ("186-8=178", "62*3=187", "A:178", "12*34=408"):
        assert arith.unworked_step(arith.worked_step(step)) == step


def test_teacher_critique_format() -> None:
    q = "(37+25)*3-8"
    assert arith.teacher_critique(q, ["37+25=62"], "62*3=186") == (
        "R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:62*3=186\nC:66= 22=|11= 88= 66=\nV:Y\nVerification: Is the step correct (Yes/No)? Yes"
    )
    assert arith.teacher_critique(q, ["37+25=62"], "26*3=78") == (
        "R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:26*3=78\nC:62x 26x|1_x 87x 68x\nV:N\nVerification: Is the step correct (Yes/No)? No"
    )
    assert arith.teacher_critique(q, ["37+25=62", "62*3=186", "186-8=178"], "A:179") == (
        "R:A:178\nN:A:179\nC:AA=|11= 77= 89x\nV:N\nVerification: Is the step correct (Yes/No)? No"
    )
    # An answer given too early and a malformed step are critiqued, never a crash.
    early = arith.teacher_critique(q, ["37+25=62"], "A:62")
    assert early.startswith("R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:A:62\nC:6_x 2Ax|1_x 86x 62x\nV:N\n") and parse_verdict(early) == "No"
    junk = arith.teacher_critique(q, [], "37+x")
    assert junk.startswith("R:37+25=7+5+0=21 3+2+1=60>62\nN:37+x\nC:33= 77=|6_x 2?x\nV:N\n") and parse_verdict(junk) == "No"
    after = arith.teacher_critique(q, ["37+25=62", "62*3=186", "186-8=178", "A:178"], "1+1=2")
    assert after.startswith("R:-\n") and parse_verdict(after) == "No"


def test_teacher_critiques_parse_to_the_right_verdict(splits) -> None:
    rng = random.Random(5)
    counts = Counter()
    for p in splits[0]:
        for steps in (list(p.steps), arith.inject_error(p, rng).steps):
            err = arith.label_steps(p, steps)
            last = len(steps) - 1 if err < 0 else err
            for i in range(last + 1):
                label = i != err
                right = arith.teacher_critique(p.question, steps[:i], steps[i])
                wrong = arith.teacher_critique(p.question, steps[:i], steps[i], agree=False, rng=rng)
                assert parse_verdict(right) == ("Yes" if label else "No"), (p.question, steps, i)
                assert parse_verdict(wrong) == ("No" if label else "Yes")
                assert right.isascii() and wrong.isascii()
                # The comparison line exposes every wrong step: some digit pair differs, and
                # the V line states the decision the verdict line repeats.
                assert right.split("\n")[1] == f"N:{steps[i]}"  # the step, shown after R
                pairs = right.split("\n")[2][2:].replace("|", " ").split(" ")
                assert all(p[2] == ("=" if p[0] == p[1] else "x") for p in pairs), right
                mismatch = any(pair[0] != pair[1] for pair in pairs)
                assert mismatch == (not label), right
                assert right.split("\n")[3] == ("V:N" if mismatch else "V:Y")
                counts[label] += 1
    assert counts[True] > 0 and counts[False] > 0


def test_teacher_pairwise_works_its_own_step_then_marks_both() -> None:
    q = "(37+25)*3-8"
    j = arith.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62*3=187")
    assert j == ("R:62*3=2*3=06+0=60 6*3=18+0=81>186\na:62*3=186\nb:62*3=187\n"
                 "Ca:66= 22=|11= 88= 66=\nVa:Y\nCb:66= 22=|11= 88= 67x\nVb:N\n[[A]]")
    # The R line is the critique's: the judge works the step before it sees either candidate.
    critique = arith.teacher_critique(q, ["37+25=62"], "62*3=186")
    assert j.split("\n")[0] == critique.split("\n")[0]
    flipped = arith.teacher_pairwise(q, ["37+25=62"], "62*3=187", "62*3=186")
    assert parse_pairwise(flipped) == "B" and "\nVa:N\n" in flipped and "\nVb:Y\n" in flipped
    answer = arith.teacher_pairwise(q, ["37+25=62", "62*3=186", "186-8=178"], "A:187", "A:178")
    assert answer == "R:A:178\na:A:187\nb:A:178\nCa:AA=|11= 78x 87x\nVa:N\nCb:AA=|11= 77= 88=\nVb:Y\n[[B]]"
    # A weak judge copies the wrong step into R: that step's line is clean, the right one's is not.
    weak = arith.teacher_pairwise(q, ["37+25=62"], "62*3=187", "62*3=186", agree=False)
    assert parse_pairwise(weak) == "A" and weak.startswith("R:62*3=2*3=06+0=60 6*3=18+0=81>187\n")
    assert "\nVa:Y\n" in weak and "\nVb:N\n" in weak
    assert arith.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62*3=186") is None  # both right
    assert arith.teacher_pairwise(q, ["37+25=62"], "62*3=1", "62*3=2") is None  # both wrong
    # A wrong step whose left operand and result are right: the lines cannot expose it.
    assert arith.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62+124=186") is None


def test_policy_sft_table(splits) -> None:
    table = arith.policy_sft_table(splits[0][:5])
    validate(table, "sft_examples")
    for row, p in zip(table.to_pylist(), splits[0][:5], strict=True):
        assert row["kind"] == "policy" and row["example_id"] == f"policy/{p.problem_id}"
        assert row["prompt"] == f"Q:{p.question}\n"
        assert row["completion"].endswith(f"A:{p.answer}\n")
        assert STYLE.split_steps(row["completion"]) == list(p.steps)
        assert (row["prompt"] + row["completion"]).isascii()


def test_labeled_steps_table_is_a_processbench_expansion(splits) -> None:
    problems = splits[0][:200]
    table = arith.labeled_steps_table(problems, seed=7, error_rate=0.5)
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
    assert arith.labeled_steps_table(problems, 7, 0.5).equals(table)
    # A problem's rows do not depend on which other problems are in the batch.
    sub = arith.labeled_steps_table(problems[50:60], 7, 0.5).to_pylist()
    assert sub == [r for r in rows if r["problem_id"] in {p.problem_id for p in problems[50:60]}]
    assert all(r["label"] for r in arith.labeled_steps_table(problems[:20], 7, 0.0).to_pylist())


def test_worked_step_rows_are_the_judgments_first_line_from_the_context_alone(splits) -> None:
    table = arith.worked_step_table(splits[0][:20], seed=0, num_examples=45)
    validate(table, "sft_examples")
    rows = table.to_pylist()
    assert len(rows) == 45 and {r["kind"] for r in rows} == {"worked_step"}
    injected = 0
    for r in rows:
        lines = r["prompt"].rstrip("\n").split("\n")
        question, prefix = lines[0][2:], [x[2:] for x in lines if x.startswith("P:")]
        # Exactly the line a pairwise judgment opens with after the same context.
        assert r["completion"] == "R:" + arith.worked_step(arith.expected_step(question, prefix)) + "\n"
        problem = next(p for p in splits[0] if p.question == question)
        injected += prefix != list(problem.steps[:len(prefix)])
    assert 0 < injected < 45  # some prefixes carry an injected error, judged as written
    assert arith.worked_step_table(splits[0][:20], seed=0, num_examples=45).equals(table)


def test_pairwise_sft_table_has_both_orders_with_the_right_winner(splits) -> None:
    table = arith.pairwise_sft_table(splits[0][:50], seed=0, num_examples=101)
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
        assert shown[0] == "R:" + arith.worked_step(arith.expected_step(question, prefix))
        a, b = shown[1][2:], shown[2][2:]
        assert ba["completion"].split("\n")[1:3] == [f"a:{b}", f"b:{a}"]  # the same pair, positions swapped
        wa, wb = parse_pairwise(ab["completion"]), parse_pairwise(ba["completion"])
        winner = a if wa == "A" else b
        assert winner == arith.expected_step(question, prefix) != (b if wa == "A" else a)
        assert {wa, wb} == {"A", "B"}  # the same step wins in both orders
        winners.update([wa, wb])
        assert (ab["prompt"] + ab["completion"]).isascii()
    assert winners["A"] == winners["B"] == 50
