import json

import pytest

from rprm_ray.data import DataError, PRMBenchItem, load_prmbench
from rprm_ray.evaluation.prmbench import Confusion, evaluate_prmbench, labeled_steps_table, step_confusion


def _item(classification, idx, n_steps, error_steps):
    return PRMBenchItem(
        id=f"{classification}_{idx}", classification=classification, question="q",
        steps=[f"s{i}" for i in range(n_steps)], error_steps=error_steps,
    )


ITEMS = [
    _item("counterfactual", 1, 4, [2]),  # ES
    _item("multi_solutions", 2, 3, []),  # MS
    _item("redundency", 3, 2, [1, 2]),  # NR
]
SCORES = {
    "counterfactual_1": [0.9, 0.2, 0.8, 0.3],  # TP, TN, TP, FN
    "multi_solutions_2": [0.9, 0.4, None],  # TP, FN, TP (missing = correct)
    "redundency_3": [0.7, 0.1],  # FP, TN
}


def test_step_confusion_converts_one_based_error_steps():
    assert step_confusion([2], [True, False, True, False]) == Confusion(tp=2, fp=0, tn=1, fn=1)
    assert step_confusion([1], [True, True]) == Confusion(tp=1, fp=1, tn=0, fn=0)


def test_hand_computed_prmscores():
    result = evaluate_prmbench(ITEMS, SCORES)
    # ES: TP2 TN1 FN1 -> F1+ = 4/5, F1- = 2/3
    assert result.categories["ES"] == pytest.approx(100 * (0.5 * 0.8 + 0.5 * 2 / 3))
    # MS: positive F1 only: TP2 FN1 -> 4/5
    assert result.categories["MS"] == pytest.approx(80.0)
    # NR: FP1 TN1 -> F1+ = 0, F1- = 2/3
    assert result.categories["NR"] == pytest.approx(100 / 3)
    assert result.groups == pytest.approx({"Simplicity": 100 / 3, "Soundness": 73.3333333, "Sensitivity": 80.0})
    # Overall pools counts: TP4 TN2 FN2 FP1 -> F1+ = 8/11, F1- = 4/7
    assert result.overall == pytest.approx(100 * (0.5 * 8 / 11 + 0.5 * 4 / 7))
    assert result.num_missing_scores == 1


def test_threshold_moves_labels():
    strict = evaluate_prmbench(ITEMS, SCORES, threshold=0.85)
    # ES now: 0.9 TP, 0.2 TN, 0.8 FN, 0.3 FN -> F1+ = 2/4, F1- = 2/4
    assert strict.categories["ES"] == pytest.approx(50.0)


def test_group_average_of_several_categories():
    items = [_item("counterfactual", 1, 2, [2]), _item("confidence", 1, 2, [2])]
    scores = {"counterfactual_1": [0.9, 0.1], "confidence_1": [0.9, 0.9]}
    result = evaluate_prmbench(items, scores)
    assert result.categories == pytest.approx({"ES": 100.0, "CI": 100 * (0.5 * 2 / 3)})
    assert result.groups["Soundness"] == pytest.approx((100.0 + 100 / 3) / 2)
    assert "Simplicity" not in result.groups


def test_scores_must_match_steps():
    with pytest.raises(DataError, match="no step_scores for id 'redundency_3'"):
        evaluate_prmbench(ITEMS, {k: v for k, v in SCORES.items() if k != "redundency_3"})
    with pytest.raises(DataError, match="'counterfactual_1': 3 step scores for 4 steps"):
        evaluate_prmbench(ITEMS, {**SCORES, "counterfactual_1": [0.5] * 3})


def test_load_prmbench_file_and_expand(tmp_path):
    path = tmp_path / "prmbench.jsonl"
    rows = [
        {"idx": "p1", "classification": "deception", "modified_question": "Q1", "original_question": "Q1",
         "modified_process": ["a", "b", "c"], "original_process": ["a", "b", "c"], "error_steps": [3]},
        {"idx": "p1", "classification": "circular", "modified_question": "Q1",
         "modified_process": ["a", "x"], "error_steps": [1]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_prmbench(path)
    assert [it.id for it in items] == ["deception_p1", "circular_p1"]
    table = labeled_steps_table(items)
    assert [(r["solution_id"], r["step_idx"], r["label"]) for r in table.to_pylist()] == [
        ("deception_p1", 0, True), ("deception_p1", 1, True), ("deception_p1", 2, False),
        ("circular_p1", 0, False), ("circular_p1", 1, True),
    ]
    rows[1]["error_steps"] = [0]  # 0 is not a 1-based index
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"row 1 \(id 'p1'\): field 'error_steps'\[0\] is 0; expected a 1-based"):
        load_prmbench(path)
