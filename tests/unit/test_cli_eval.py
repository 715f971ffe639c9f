import json
from pathlib import Path

import pytest

from rprm_ray import cli

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def only_eval_command(monkeypatch):
    # Build the real router with the eval command alone, so these tests exercise `rprm-ray eval`
    # whatever state the other command modules are in.
    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pb_file(tmp_path):
    rows = [
        {"id": "t-0", "generator": "g", "problem": "p", "steps": ["a", "b", "c"], "final_answer_correct": True, "label": -1},
        {"id": "t-1", "generator": "g", "problem": "p", "steps": ["a", "b", "c"], "final_answer_correct": False, "label": 1},
        {"id": "t-2", "generator": "g", "problem": "p", "steps": ["a", "b"], "final_answer_correct": False, "label": 0},
    ]
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(rows))
    return str(path)


def _run_json(capsys, argv):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object
    return json.loads(out)


def test_processbench_json_and_table(tmp_path, capsys):
    data = _pb_file(tmp_path)
    scores = _jsonl(tmp_path / "s.jsonl", [
        {"id": "t-0", "step_scores": [0.9, 0.8, 0.7]},  # match
        {"id": "t-1", "step_scores": [0.9, 0.3]},  # match
        {"id": "t-2", "step_scores": [0.6]},  # pred -1 != 0
    ])
    figures = _run_json(capsys, ["eval", "processbench", "--data", data, "--scores", scores, "--json"])
    assert (figures["error_acc"], figures["correct_acc"]) == (50.0, 100.0)
    assert figures["f1"] == pytest.approx(200 / 3)
    figures = _run_json(capsys, ["eval", "processbench", "--data", data, "--scores", scores, "--threshold", "0.65", "--json"])
    assert (figures["error_acc"], figures["correct_acc"], figures["threshold"]) == (100.0, 100.0, 0.65)
    assert cli.main(["eval", "processbench", "--data", data, "--scores", scores]) == 0
    table = capsys.readouterr().out
    assert "error_acc" in table and "toy" in table and "66.7" in table


def test_processbench_real_gsm8k_with_label_derived_scores(tmp_path, capsys):
    path = DATA / "processbench" / "gsm8k.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    items = json.loads(path.read_text())
    scores = _jsonl(tmp_path / "s.jsonl", [
        {"id": it["id"], "step_scores": [1.0] * len(it["steps"]) if it["label"] == -1 else [1.0] * it["label"] + [0.0]}
        for it in items
    ])
    figures = _run_json(capsys, ["eval", "processbench", "--data", str(path), "--scores", scores, "--json"])
    assert (figures["error_acc"], figures["correct_acc"], figures["f1"]) == (100.0, 100.0, 100.0)


def test_processbench_errors_are_named(tmp_path, capsys):
    data = _pb_file(tmp_path)
    scores = _jsonl(tmp_path / "s.jsonl", [{"id": "t-0", "step_scores": [0.9, 0.8, 0.7]}])
    assert cli.main(["eval", "processbench", "--data", data, "--scores", scores]) == 2
    assert "s.jsonl: no step_scores for id 't-1'" in capsys.readouterr().err

    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "t-0", "step_scores": [0.9, "high"]}])
    assert cli.main(["eval", "processbench", "--data", data, "--scores", bad]) == 2
    assert "bad.jsonl: row 0 (id 't-0'): field 'step_scores' must be a list of numbers" in capsys.readouterr().err

    assert cli.main(["eval", "processbench", "--data", str(tmp_path / "missing.json"), "--scores", scores]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err

    assert cli.main(["eval", "processbench", "--data", data]) == 2
    assert "one of --scores SCORES.jsonl or --judge MODEL_OR_RUN is required" in capsys.readouterr().err


def test_bon_json(tmp_path, capsys):
    data = _jsonl(tmp_path / "cands.jsonl", [
        {"id": "q1", "question": "?", "steps": [["a", "b"], ["a", "c"]], "labels": [False, True], "answers": ["5", "7"]},
        {"id": "q2", "question": "?", "steps": [["d"], ["e"]], "labels": [True, False], "answers": ["1", "2"]},
    ])
    scores = _jsonl(tmp_path / "s.jsonl", [
        {"id": "q1", "step_scores": [[0.99, 0.4], [0.6, 0.7]]},
        {"id": "q2", "step_scores": [[0.4], [0.8]]},
    ])
    by_min = _run_json(capsys, ["eval", "bon", "--data", data, "--scores", scores, "--agg", "min", "--json"])
    assert by_min["accuracy"] == 50.0  # q1 picks c1 (min 0.6 > 0.4): right; q2 picks c1 (0.8): wrong
    assert by_min["accuracy_at_n"] == {"1": 50.0, "2": 50.0}
    assert (by_min["majority_accuracy"], by_min["oracle_at_n"]["2"]) == (50.0, 100.0)
    by_mean = _run_json(capsys, ["eval", "bon", "--data", data, "--scores", scores, "--agg", "mean", "--json"])
    assert by_mean["accuracy"] == 0.0  # q1 now picks c0 (mean 0.695 > 0.65): wrong
    assert cli.main(["eval", "bon", "--data", data, "--scores", scores]) == 0
    assert "best-of-N (min)" in capsys.readouterr().out


def test_bon_score_shape_errors(tmp_path, capsys):
    data = _jsonl(tmp_path / "cands.jsonl", [
        {"id": "q1", "question": "?", "steps": [["a", "b"], ["a"]], "labels": [False, True]},
    ])
    scores = _jsonl(tmp_path / "s.jsonl", [{"id": "q1", "step_scores": [[0.9, 0.2], [0.6, 0.7]]}])
    assert cli.main(["eval", "bon", "--data", data, "--scores", scores]) == 2
    assert "s.jsonl: id 'q1': candidate 1: 2 step scores for 1 steps" in capsys.readouterr().err


def test_math_json_and_ids(tmp_path, capsys):
    data = _jsonl(tmp_path / "toy.jsonl", [
        {"id": 0, "problem": "1+1", "answer": "2"},
        {"id": 1, "problem": "half", "answer": "\\frac{1}{2}"},
        {"id": 2, "problem": "unused", "answer": "9"},
    ])
    preds = _jsonl(tmp_path / "p.jsonl", [
        {"id": 0, "completions": ["\\boxed{2}", "\\boxed{3}", "\\boxed{3}"]},
        {"id": "toy-1", "completions": ["\\boxed{0.4}", "\\boxed{0.5}", "\\boxed{1/2}"]},
    ])
    figures = _run_json(capsys, ["eval", "math", "--data", data, "--predictions", preds, "--json"])
    assert (figures["pass@1"], figures["maj@k"], figures["pass@k"]) == (50.0, 50.0, 100.0)
    assert (figures["k"], figures["num_problems"]) == (3, 2)
    figures = _run_json(capsys, ["eval", "math", "--data", data, "--predictions", preds, "--k", "1", "--json"])
    assert (figures["pass@1"], figures["maj@k"], figures["pass@k"]) == (50.0, 50.0, 50.0)
    assert cli.main(["eval", "math", "--data", data, "--predictions", preds]) == 0
    assert "2 of 3 problems, k = 3" in capsys.readouterr().out


def test_math_errors(tmp_path, capsys):
    data = _jsonl(tmp_path / "toy.jsonl", [{"id": 0, "problem": "1+1", "answer": "2"}])
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": 5, "completions": ["\\boxed{2}"]}])
    assert cli.main(["eval", "math", "--data", data, "--predictions", preds]) == 2
    assert "p.jsonl: row 0: id 5 is not a problem of" in capsys.readouterr().err
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": 0, "completions": "\\boxed{2}"}])
    assert cli.main(["eval", "math", "--data", data, "--predictions", preds]) == 2
    assert "row 0 (id 0): field 'completions' must be a non-empty list of str" in capsys.readouterr().err
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": 0, "completions": ["\\boxed{2}"]}])
    assert cli.main(["eval", "math", "--data", data, "--predictions", preds, "--k", "2"]) == 2
    assert "k=2 but some problem has only 1 completions" in capsys.readouterr().err
