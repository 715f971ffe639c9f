from pathlib import Path

import pytest

from rprm_ray.data import DataError, ProcessBenchItem, load_processbench
from rprm_ray.evaluation.processbench import (
    evaluate_processbench,
    harmonic_f1,
    labeled_steps_table,
    predicted_first_error,
)

PB_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "processbench"


def _item(ident, label, n_steps, subset="toy"):
    return ProcessBenchItem(
        id=ident, generator="g", problem=f"problem {ident}", steps=[f"step {i}" for i in range(n_steps)],
        final_answer_correct=label == -1, label=label, subset=subset,
    )


def test_predicted_first_error_uses_strict_threshold_and_skips_missing():
    assert predicted_first_error([0.9, 0.5, 0.49, 0.1]) == 2  # 0.5 is not below 0.5
    assert predicted_first_error([0.9, None, 0.8]) == -1
    assert predicted_first_error([None, 0.3], threshold=0.2) == -1
    assert predicted_first_error([0.6, 0.7], threshold=0.65) == 0


def test_hand_computed_subset():
    items = [_item("a", -1, 3), _item("b", -1, 2), _item("c", 1, 4), _item("d", 0, 2), _item("e", 2, 3)]
    scores = {
        "a": [0.9, 0.8, 0.7],  # pred -1 = label: match
        "b": [0.9, 0.3],  # pred 1 != -1
        "c": [0.8, 0.2],  # pred 1 = label (truncated list is enough)
        "d": [0.6, 0.1],  # pred 1 != 0
        "e": [0.7, 0.6, None],  # missing last step -> pred -1 != 2
    }
    result = evaluate_processbench(items, scores)
    sub = result.subsets["toy"]
    assert (sub.num_error, sub.num_correct, sub.num_missing_scores) == (3, 2, 1)
    assert sub.error_acc == pytest.approx(100 / 3)
    assert sub.correct_acc == pytest.approx(50.0)
    assert sub.f1 == pytest.approx(2 * (100 / 3) * 50 / (100 / 3 + 50))  # 40.0
    assert sub.f1 == pytest.approx(40.0)
    assert result.f1 == sub.f1


def test_mean_over_subsets_and_empty_group():
    items = [_item("x1", -1, 2, "s1"), _item("x2", 0, 2, "s1"), _item("y1", 1, 2, "s2")]
    scores = {"x1": [0.9, 0.9], "x2": [0.1], "y1": [0.9, 0.9]}
    result = evaluate_processbench(items, scores)
    assert (result.subsets["s1"].error_acc, result.subsets["s1"].correct_acc, result.subsets["s1"].f1) == (100, 100, 100)
    # s2 has no correct solution: correct_acc 0 as in the reference script, so F1 0
    assert (result.subsets["s2"].error_acc, result.subsets["s2"].correct_acc, result.subsets["s2"].f1) == (0, 0, 0)
    assert result.f1 == 50.0
    assert result.error_acc == 50.0
    assert harmonic_f1(0.0, 0.0) == 0.0


def test_scores_must_cover_the_judged_steps():
    items = [_item("a", -1, 3), _item("c", 1, 4)]
    with pytest.raises(DataError, match="no step_scores for id 'a'"):
        evaluate_processbench(items, {"c": [0.5, 0.5]})
    with pytest.raises(DataError, match="id 'a': 2 step scores; expected 3 \\(solution has 3 steps"):
        evaluate_processbench(items, {"a": [0.5, 0.5], "c": [0.5, 0.5]})
    with pytest.raises(DataError, match="id 'c': 1 step scores; expected 2 to 4"):
        evaluate_processbench(items, {"a": [0.5] * 3, "c": [0.5]})
    with pytest.raises(DataError, match="id 'c': 5 step scores"):
        evaluate_processbench(items, {"a": [0.5] * 3, "c": [0.5] * 5})


def test_labeled_steps_expansion_truncates_after_first_error():
    items = [_item("a", -1, 3), _item("c", 1, 4)]
    rows = labeled_steps_table(items).to_pylist()
    assert [(r["solution_id"], r["step_idx"], r["label"]) for r in rows] == [
        ("a", 0, True), ("a", 1, True), ("a", 2, True), ("c", 0, True), ("c", 1, False),
    ]
    assert rows[4]["previous_steps"] == ["step 0"] and rows[4]["now_step"] == "step 1"
    full = labeled_steps_table(items, truncate=False).to_pylist()
    assert [r["label"] for r in full if r["solution_id"] == "c"] == [True, False, None, None]


# ---- the real benchmark files ------------------------------------------------------------


def _real(name):
    path = PB_DIR / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return load_processbench(path)


@pytest.mark.parametrize("name, expected_rows", [("gsm8k", 1568), ("math", 4368)])
def test_real_expansion_matches_the_r_prm_record_counts(name, expected_rows):
    # method_spec A7: the repo's filtered files hold 1,568 (gsm8k) and 4,368 (math) step records
    assert labeled_steps_table(_real(name)).num_rows == expected_rows


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_real_perfect_and_constant_judges(name):
    items = _real(name)
    perfect = {
        it.id: [1.0] * len(it.steps) if it.label == -1 else [1.0] * it.label + [0.0] for it in items
    }
    result = evaluate_processbench(items, perfect).subsets[name]
    assert (result.error_acc, result.correct_acc, result.f1) == (100.0, 100.0, 100.0)

    always_yes = {it.id: [0.9] * len(it.steps) for it in items}
    result = evaluate_processbench(items, always_yes).subsets[name]
    assert (result.error_acc, result.correct_acc, result.f1) == (0.0, 100.0, 0.0)

    # flagging step 0 everywhere is right exactly for solutions whose first step is wrong
    always_no = {it.id: [0.1] * len(it.steps) for it in items}
    result = evaluate_processbench(items, always_no).subsets[name]
    wrong_first = sum(it.label == 0 for it in items) / sum(it.label >= 0 for it in items)
    assert result.error_acc == pytest.approx(100 * wrong_first)
    assert 0 < result.error_acc < 100
    assert result.correct_acc == 0.0


def test_real_both_subsets_mean():
    items = _real("gsm8k") + _real("math")
    perfect = {it.id: [1.0] * len(it.steps) if it.label == -1 else [1.0] * it.label + [0.0] for it in items}
    # break the judge on gsm8k's erroneous solutions only: gsm8k F1 0, math F1 100, mean 50
    scores = {it.id: ([0.9] * len(it.steps) if it.subset == "gsm8k" else perfect[it.id]) for it in items}
    result = evaluate_processbench(items, scores)
    assert list(result.subsets) == ["gsm8k", "math"]
    assert result.subsets["gsm8k"].f1 == 0.0 and result.subsets["math"].f1 == 100.0
    assert result.f1 == 50.0
