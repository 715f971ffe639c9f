import json
from pathlib import Path

import pytest

from rprm_ray.data import load_math_problems
from rprm_ray.evaluation.math_accuracy import extract_boxed, math_accuracy

MATH_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "math"


def test_extract_boxed():
    assert extract_boxed("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{1} then \\boxed{ 2 }") == "2"
    assert extract_boxed("$\\framebox{204}$ minutes") == "204"
    assert extract_boxed("\\boxed {x^{2}}") == "x^{2}"
    assert extract_boxed("the answer is 5") is None
    assert extract_boxed("\\boxed{3} and \\boxed{unterminated") == "3"
    assert extract_boxed("\\boxed{}") is None


def test_hand_computed_pass_and_majority():
    golds = ["2", "\\frac{1}{2}", "7"]
    completions = [
        ["\\boxed{2}", "\\boxed{3}", "so \\boxed{3}"],  # pass@1 yes, majority 3 (wrong), pass@3 yes
        ["it is \\boxed{0.5}", "no box here", "\\boxed{1/2}"],  # 0.5 and 1/2 vote together with the gold
        ["\\boxed{6}", "\\boxed{7}", "\\boxed{\\text{}}"],  # 6-7 tie -> 6 (first); last one unparsable
    ]
    result = math_accuracy(completions, golds)
    assert result.k == 3 and result.num_problems == 3
    assert result.pass_at_1 == pytest.approx(200 / 3)
    assert result.maj_at_k == pytest.approx(100 / 3)
    assert result.pass_at_k == 100.0
    assert (result.num_no_answer, result.num_parse_failures, result.num_grader_errors) == (1, 1, 0)
    one = math_accuracy(completions, golds, k=1)
    assert (one.pass_at_1, one.maj_at_k, one.pass_at_k) == (one.pass_at_1,) * 3
    assert one.as_dict()["pass@1"] == pytest.approx(200 / 3) and "maj@k" in one.as_dict()


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=3 but some problem has only 2"):
        math_accuracy([["\\boxed{1}", "\\boxed{1}"]], ["1"], k=3)
    with pytest.raises(ValueError, match="problem 1 has no completions"):
        math_accuracy([["\\boxed{1}"], []], ["1", "2"])
    with pytest.raises(ValueError, match="2 completion lists for 1"):
        math_accuracy([["a"], ["b"]], ["1"])


def test_grader_failures_are_counted_not_raised(monkeypatch):
    import math_verify
    from math_verify.errors import TimeoutException

    def exploding_verify(*args, **kwargs):
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(math_verify, "verify", exploding_verify)
    result = math_accuracy([["\\boxed{1}"], ["\\boxed{2}"]], ["1", "2"])
    assert result.pass_at_1 == 0.0 and result.num_grader_errors == 4  # 2 checks + 2 majority checks

    def timing_out_parse(*args, **kwargs):
        raise TimeoutException("Operation timed out!")  # a BaseException in math-verify

    monkeypatch.setattr(math_verify, "parse", timing_out_parse)
    result = math_accuracy([["\\boxed{1}"]], ["1"])
    assert result.pass_at_1 == 0.0 and result.num_parse_failures == 2  # reference and answer


def _math500():
    path = MATH_DIR / "math500.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return load_math_problems(path), rows


def test_math500_reference_solutions_grade_100_against_their_answers():
    problems, rows = _math500()
    golds = problems.column("answer").to_pylist()
    result = math_accuracy([[r["solution"]] for r in rows], golds)
    assert result.num_problems == 500
    assert (result.pass_at_1, result.maj_at_k, result.pass_at_k) == (100.0, 100.0, 100.0)
    assert (result.num_no_answer, result.num_parse_failures, result.num_grader_errors) == (0, 0, 0)


def test_math500_solutions_against_other_problems_answers_score_low():
    problems, rows = _math500()
    golds = problems.column("answer").to_pylist()[:100]
    shifted = [[r["solution"]] for r in rows[1:101]]
    assert math_accuracy(shifted, golds).pass_at_1 < 10.0
