import json
from pathlib import Path

import pytest

from rprm_ray.data import (
    DataError,
    load_bon_candidates,
    load_math_problems,
    load_processbench,
    normalize_answer,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _pb_row(i, **over):
    row = {"id": f"toy-{i}", "generator": "g", "problem": "1+1?", "steps": ["1+1=2", "so 2"],
           "final_answer_correct": True, "label": -1}
    row.update(over)
    return row


# ---- real files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, rows, first_id, first_answer",
    [
        ("gsm8k_test", 1319, "gsm8k_test-0", "18"),  # "... #### 18"
        ("math500", 500, "math500-0", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("aime24", 30, "aime24-60", "204"),
        ("amc23", 40, "amc23-0", "27"),  # 27.0 in the file
    ],
)
def test_real_math_files_normalise_to_problems(name, rows, first_id, first_answer):
    path = DATA / "math" / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    table = load_math_problems(path)
    assert table.num_rows == rows
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["problem_id"], first["answer"], first["source"]) == (first_id, first_answer, name)
    assert first["question"] and all(a for a in table.column("answer").to_pylist())


def test_real_processbench_file():
    path = DATA / "processbench" / "gsm8k.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    items = load_processbench(path)
    assert len(items) == 400 and {it.subset for it in items} == {"gsm8k"}
    assert sum(it.label == -1 for it in items) == 193  # ProcessBench gsm8k: 193 correct, 207 erroneous


def test_normalize_answer():
    assert normalize_answer("Janet sells 9.\n#### 18") == "18"
    assert normalize_answer(27.0) == "27"
    assert normalize_answer(2.5) == "2.5"
    assert normalize_answer(7) == "7"
    assert normalize_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"


# ---- errors name the file, the row and the field ------------------------------------------


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        load_processbench(tmp_path / "nope.json")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: file is empty"):
        load_math_problems(tmp_path / "empty.jsonl")


def test_malformed_jsonl_line_is_located(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0, "problem": "a", "answer": "1"}\n{"id": 1, "problem": "b", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: row 1 \(line 2\): malformed JSON"):
        load_math_problems(path)


def test_malformed_json_array_is_located(tmp_path):
    path = tmp_path / "pb.json"
    path.write_text('[\n {"id": "a"},\n {"id": "b",,}\n]')
    with pytest.raises(DataError, match=r"pb\.json: malformed JSON at line 3"):
        load_processbench(path)


def test_processbench_row_errors(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps([_pb_row(0), _pb_row(1, steps=None)]))
    with pytest.raises(DataError, match=r"toy\.json: row 1 \(id 'toy-1'\): missing field 'steps'"):
        load_processbench(path)
    path.write_text(json.dumps([_pb_row(0), _pb_row(1, label=2)]))
    with pytest.raises(DataError, match=r"row 1 \(id 'toy-1'\): field 'label' is 2, outside -1\.\.1"):
        load_processbench(path)
    # a type clash across rows defeats datasets' schema; the plain check names the row
    path.write_text(json.dumps([_pb_row(0), _pb_row(1), _pb_row(2, label="first")]))
    with pytest.raises(DataError, match=r"row 2 \(id 'toy-2'\): field 'label' must be int, got str"):
        load_processbench(path)
    path.write_text(json.dumps([_pb_row(0), _pb_row(0)]))
    with pytest.raises(DataError, match=r"duplicate id 'toy-0' at rows 0 and 1"):
        load_processbench(path)
    path.write_text(json.dumps([_pb_row(0, final_answer_correct="yes")]))
    with pytest.raises(DataError, match=r"field 'final_answer_correct' must be bool, got str"):
        load_processbench(path)


def test_processbench_subset_is_the_file_stem(tmp_path):
    items = load_processbench(_write_jsonl(tmp_path / "olympiadbench.jsonl", [_pb_row(0)]))
    assert items[0].subset == "olympiadbench"
    assert load_processbench(tmp_path / "olympiadbench.jsonl", subset="x")[0].subset == "x"


def test_math_row_errors(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": 0, "problem": "a", "answer": "1"}, {"id": 1, "answer": "2"}])
    with pytest.raises(DataError, match=r"m\.jsonl: row 1 \(id 1\): missing field 'problem' \(or 'question' / 'query'\)"):
        load_math_problems(path)
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": 0, "question": "a", "answer": ["1"]}])
    with pytest.raises(DataError, match=r"row 0 \(id 0\): field 'answer' must be str or int or float, got list"):
        load_math_problems(path)
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": 0, "question": "a", "answer": "  "}])
    with pytest.raises(DataError, match=r"row 0 \(id 0\): field 'answer' is empty"):
        load_math_problems(path)


def test_math_id_falls_back_to_row_index_where_a_row_has_none(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"id": 7, "problem": "a"}, {"problem": "b"}])
    assert load_math_problems(path).column("problem_id").to_pylist() == ["m-7", "m-1"]


def test_math_without_answers_and_with_name(tmp_path):
    path = _write_jsonl(tmp_path / "m.jsonl", [{"query": "what?"}, {"query": "who?"}])
    table = load_math_problems(path, name="custom")
    assert table.to_pylist() == [
        {"problem_id": "custom-0", "question": "what?", "answer": None, "source": "custom"},
        {"problem_id": "custom-1", "question": "who?", "answer": None, "source": "custom"},
    ]


def test_hub_name_without_network_is_one_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # offline mode is read at import time, so flip the imported flags (no waiting on a network)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"no-such-org/no-such-set: not a local file, and loading it from the hub failed"):
        load_math_problems("no-such-org/no-such-set")


def test_bon_candidate_file_errors(tmp_path):
    good = {"id": "q1", "question": "1+1?", "steps": [["1+1=2"], ["1+1=3"]], "labels": [True, False]}
    assert load_bon_candidates(_write_jsonl(tmp_path / "b.jsonl", [good]))[0].answers is None
    bad = dict(good, labels=[True])
    with pytest.raises(DataError, match=r"b\.jsonl: row 0 \(id 'q1'\): field 'labels' must be 2 booleans"):
        load_bon_candidates(_write_jsonl(tmp_path / "b.jsonl", [bad]))
    bad = dict(good, steps=[["ok"], "not a list"])
    with pytest.raises(DataError, match=r"field 'steps'\[1\] must be a list of str"):
        load_bon_candidates(_write_jsonl(tmp_path / "b.jsonl", [bad]))
    bad = dict(good, answers=["2"])
    with pytest.raises(DataError, match=r"field 'answers' must be 2 strings"):
        load_bon_candidates(_write_jsonl(tmp_path / "b.jsonl", [bad]))
