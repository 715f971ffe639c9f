"""The arithmetic world's programmatic teacher: worked digits, critiques, pairwise judgments."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rprm_ray.config import TaskConfig
from rprm_ray.prompts import parse_pairwise, parse_verdict
from rprm_ray.tasks import arith, arith_teacher

SMALL = TaskConfig(seed=3, train_problems=300, eval_problems=60)


@pytest.fixture(scope="module")
def splits() -> tuple[list[arith.ArithProblem], list[arith.ArithProblem]]:
    return arith.make_splits(SMALL)


def test_aligned_pairs_put_each_expected_digit_beside_the_claimed_one() -> None:
    assert arith_teacher.aligned_pairs("116", "611") == "16x 11= 61x"
    assert arith_teacher.aligned_pairs("1302", "92") == "1_x 3_x 09x 22="  # right-aligned, `_` pads
    assert arith_teacher.aligned_pairs("A", "A") == "AA="


def test_worked_digits_go_from_the_units_up_with_each_carry() -> None:
    # 57: 12-5=7 borrow 1, 12-6-1=5 borrow 1, 1-0-1=0
    assert arith_teacher.worked_digits(122, "-", 65) == "2-5-0=71 2-6-1=51 1-0-1=00"
    assert arith_teacher.worked_digits(65, "-", 122) == arith_teacher.worked_digits(122, "-", 65)  # below zero: worked as 122-65
    # 1302: each digit's product plus the carry it takes in, then digit and carry; the last carry leads
    assert arith_teacher.worked_digits(186, "*", 7) == "6*7=42+0=24 8*7=56+4=06 1*7=07+6=31"
    assert arith_teacher.worked_digits(7, "*", 186) == arith_teacher.worked_digits(186, "*", 7)  # the one-digit factor multiplies
    assert arith_teacher.worked_digits(999, "+", 1) == "9+1+0=01 9+0+1=01 9+0+1=01"  # 1000
    assert arith_teacher.worked_digits(12, "*", 34) is None and arith_teacher.worked_digits(-3, "+", 4) is None
    assert arith_teacher.worked_step("186-8=178") == "186-8=6-8-0=81 8-0-1=70 1-0-0=10>178"
    assert arith_teacher.worked_step("62*3=187") == "62*3=2*3=06+0=60 6*3=18+0=81>187"  # the stated result, right or not
    assert arith_teacher.worked_step("A:178") == "A:178" and arith_teacher.worked_step("-") == "-"
    for step in ("186-8=178", "62*3=187", "A:178", "12*34=408"):
        assert arith_teacher.unworked_step(arith_teacher.worked_step(step)) == step


def test_teacher_critique_format() -> None:
    q = "(37+25)*3-8"
    assert arith_teacher.teacher_critique(q, ["37+25=62"], "62*3=186") == (
        "R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:62*3=186\nC:66= 22=|11= 88= 66=\nV:Y\nVerification: Is the step correct (Yes/No)? Yes"
    )
    assert arith_teacher.teacher_critique(q, ["37+25=62"], "26*3=78") == (
        "R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:26*3=78\nC:62x 26x|1_x 87x 68x\nV:N\nVerification: Is the step correct (Yes/No)? No"
    )
    assert arith_teacher.teacher_critique(q, ["37+25=62", "62*3=186", "186-8=178"], "A:179") == (
        "R:A:178\nN:A:179\nC:AA=|11= 77= 89x\nV:N\nVerification: Is the step correct (Yes/No)? No"
    )
    # An answer given too early and a malformed step are critiqued, never a crash.
    early = arith_teacher.teacher_critique(q, ["37+25=62"], "A:62")
    assert early.startswith("R:62*3=2*3=06+0=60 6*3=18+0=81>186\nN:A:62\nC:6_x 2Ax|1_x 86x 62x\nV:N\n") and parse_verdict(early) == "No"
    junk = arith_teacher.teacher_critique(q, [], "37+x")
    assert junk.startswith("R:37+25=7+5+0=21 3+2+1=60>62\nN:37+x\nC:33= 77=|6_x 2?x\nV:N\n") and parse_verdict(junk) == "No"
    after = arith_teacher.teacher_critique(q, ["37+25=62", "62*3=186", "186-8=178", "A:178"], "1+1=2")
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
                right = arith_teacher.teacher_critique(p.question, steps[:i], steps[i])
                wrong = arith_teacher.teacher_critique(p.question, steps[:i], steps[i], agree=False, rng=rng)
                assert parse_verdict(right) == ("Yes" if label else "No"), (p.question, steps, i)
                assert parse_verdict(wrong) == ("No" if label else "Yes")
                assert right.isascii() and wrong.isascii()
                # Right or deliberately wrong, a teacher critique follows from its own lines.
                assert arith_teacher.critique_is_sound(right) and arith_teacher.critique_is_sound(wrong)
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


def test_a_critique_is_sound_when_its_comparison_follows_from_its_own_lines() -> None:
    yes, no = "Verification: Is the step correct (Yes/No)? Yes", "Verification: Is the step correct (Yes/No)? No"
    r_line = "R:320+6=0+6+0=80 2+0+0=20 3+0+0=30>328\nN:320+6=326\n"
    # A wrong R line compared faithfully is sound (the judge erred, but by its own reasoning).
    assert arith_teacher.critique_is_sound(f"{r_line}C:33= 22= 00=|33= 22= 86x\nV:N\n{no}")
    # Sampled at T 1.5: the right verdict for a right step, through a digit pair marked `=` that differs.
    assert not arith_teacher.critique_is_sound(f"{r_line}C:33= 22= 00=|33= 22= 86=\nV:Y\n{yes}")
    assert not arith_teacher.critique_is_sound(f"{r_line}C:33= 22= 00=|33= 22= 86x\nV:Y\n{yes}")  # V ignores the x
    assert not arith_teacher.critique_is_sound(f"{r_line}C:33= 22= 00=|33= 22= 86x\nV:N\n{yes}")  # verdict ignores V
    assert not arith_teacher.critique_is_sound(f"C:9+68=9+8+0=71\nN:9+68=77\nC:Y\n{yes}")  # lines missing
    assert arith_teacher.critique_is_sound(f"R:A:178\nN:A:179\nC:AA=|11= 77= 89x\nV:N\n{no}")


def test_teacher_pairwise_works_its_own_step_then_marks_both() -> None:
    q = "(37+25)*3-8"
    j = arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62*3=187")
    assert j == ("R:62*3=2*3=06+0=60 6*3=18+0=81>186\na:62*3=186\nb:62*3=187\n"
                 "Ca:66= 22=|11= 88= 66=\nVa:Y\nCb:66= 22=|11= 88= 67x\nVb:N\n[[A]]")
    # The R line is the critique's: the judge works the step before it sees either candidate.
    critique = arith_teacher.teacher_critique(q, ["37+25=62"], "62*3=186")
    assert j.split("\n")[0] == critique.split("\n")[0]
    flipped = arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=187", "62*3=186")
    assert parse_pairwise(flipped) == "B" and "\nVa:N\n" in flipped and "\nVb:Y\n" in flipped
    answer = arith_teacher.teacher_pairwise(q, ["37+25=62", "62*3=186", "186-8=178"], "A:187", "A:178")
    assert answer == "R:A:178\na:A:187\nb:A:178\nCa:AA=|11= 78x 87x\nVa:N\nCb:AA=|11= 77= 88=\nVb:Y\n[[B]]"
    # A weak judge copies the wrong step into R: that step's line is clean, the right one's is not.
    weak = arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=187", "62*3=186", agree=False)
    assert parse_pairwise(weak) == "A" and weak.startswith("R:62*3=2*3=06+0=60 6*3=18+0=81>187\n")
    assert "\nVa:Y\n" in weak and "\nVb:N\n" in weak
    assert arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62*3=186") is None  # both right
    assert arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=1", "62*3=2") is None  # both wrong
    # A wrong step whose left operand and result are right: the lines cannot expose it.
    assert arith_teacher.teacher_pairwise(q, ["37+25=62"], "62*3=186", "62+124=186") is None
