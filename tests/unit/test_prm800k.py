"""`rprm-ray data prm800k`: PRM800K's published JSONL -> ProcessBench-format labeled solutions
that the seed stage's loader reads. The sample lines follow the dataset README's annotated line."""

from __future__ import annotations

import json

import pytest

from rprm_ray.cli import main
from rprm_ray.data import load_processbench
from rprm_ray.evaluation.processbench import labeled_steps_table
from rprm_ray.prm800k import Prm800kError, convert

GCF = "What is the greatest common factor of $20 !$ and $200,\\!000$?"


def c(text, rating, flagged=None):
    return {"text": text, "rating": rating, "flagged": flagged}


def line(problem, steps, finish, generation=9, screening=False, qc=False):
    return {"labeler": "340d89bc-f5b7-45e9-b272-909ba68ee363", "timestamp": "2023-01-22T04:34:27.052924",
            "generation": generation, "is_quality_control_question": qc, "is_initial_screening_question": screening,
            "question": {"problem": problem, "ground_truth_solution": "...", "ground_truth_answer": "40,\\!000",
                         "pre_generated_steps": None, "pre_generated_answer": None,
                         "pre_generated_verifier_score": None},
            "label": {"steps": steps, "total_time": 278270, "finish_reason": finish}}


def step(completions, chosen=0, human=None):
    return {"completions": completions, "human_completion": human, "chosen_completion": chosen}


# Phase 2, README's example: two neutral steps, then the labeler stops at a step rated -1.
FOUND_ERROR = line(GCF, [
    step([c("I want to find the largest positive integer that divides both.", 0)]),
    step([c("One way to do this is to factor both numbers into prime factors.", 0)]),
    step([c("I know that $200,\\!000 = 2^5\\cdot 10^4 = 2^9\\cdot 5^4$.", -1),
          c("To factor $20 !$, I can use the fact that every factorial is a multiple.", 0, False)], chosen=None),
], "found_error")
# Phase 1: alternatives at a step, a human-written step where every completion was wrong.
PHASE1_SOLUTION = line("What is $1+2+3$?", [
    step([c("First, $1+2=4$.", -1), c("First, $1+2=3$.", 1)], chosen=1),
    step([c("Then $3+3=7$.", -1)], chosen=None, human="Then $3+3=6$."),
    step([c("# Answer\n\n6", 1)]),
], "solution", generation=None)
GIVE_UP = line("Hard problem?", [step([c("Let me think.", 0)]), step([c("Maybe.", 0)], chosen=None)], "give_up")
SCREENING = line("Screen?", [step([c("x", 1)])], "solution", generation=-1, screening=True)
UNRATED = line("Unrated?", [step([c("y", None)])], "solution")


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_converted_file_loads_as_processbench_with_the_first_error_labels(tmp_path, capsys):
    src = write_jsonl(tmp_path / "phase2_train.jsonl",
                      [FOUND_ERROR, PHASE1_SOLUTION, GIVE_UP, SCREENING, UNRATED, FOUND_ERROR | {"qc": True}])
    out = tmp_path / "prm800k_train.jsonl"
    assert main(["data", "prm800k", str(src), str(out)]) == 0
    said = capsys.readouterr().out
    assert "wrote 2 solutions (1 with a wrong step)" in said
    assert "give_up without a wrong step 1" in said and "repeated solution 1" in said
    assert "screening question 1" in said and "unrated step 1" in said

    items = {i.problem: i for i in load_processbench(out)}
    err = items[GCF]
    assert err.label == 2 and len(err.steps) == 3 and not err.final_answer_correct
    assert err.steps[2].startswith("I know that $200")  # the rejected step, not an alternative
    assert err.generator == "prm800k-gen9"
    ok = items["What is $1+2+3$?"]
    assert ok.steps == ["First, $1+2=3$.", "Then $3+3=6$.", "# Answer\n\n6"]
    assert ok.label == -1 and ok.final_answer_correct and ok.generator == "prm800k-phase1"
    steps = labeled_steps_table(list(items.values()))
    labels = {(r["solution_id"], r["step_idx"]): r["label"] for r in steps.to_pylist()}
    assert [labels[(err.id, i)] for i in range(3)] == [True, True, False]


def test_neutral_steps_can_count_as_errors(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [FOUND_ERROR])
    assert convert(src, neutral="error").rows[0]["label"] == 0


def test_ids_are_stable_and_unique_per_solution(tmp_path):
    a = convert(write_jsonl(tmp_path / "a.jsonl", [FOUND_ERROR, PHASE1_SOLUTION])).rows
    b = convert(write_jsonl(tmp_path / "b.jsonl", [PHASE1_SOLUTION, FOUND_ERROR])).rows
    assert {r["id"] for r in a} == {r["id"] for r in b} and len({r["id"] for r in a}) == 2


@pytest.mark.parametrize("content, message", [
    ("{not json\n", r"p.jsonl:1: not a JSON line"),
    ('{"question": {"problem": "x"}}\n', r"p.jsonl:1: needs 'question' and 'label' objects"),
    ("version https://git-lfs.github.com/spec/v1\n", r"p.jsonl: a Git LFS pointer, not the data"),
    (b"\xff\xfe{}".decode("latin-1"), r"p.jsonl: not UTF-8 text"),
])
def test_bad_input_gets_one_line_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "p.jsonl").write_bytes(content.encode("latin-1"))
    with pytest.raises(Prm800kError, match=message):
        convert(tmp_path / "p.jsonl")


def test_a_file_with_nothing_usable_is_an_error(tmp_path, capsys):
    src = write_jsonl(tmp_path / "p.jsonl", [GIVE_UP])
    assert main(["data", "prm800k", str(src), str(tmp_path / "o.jsonl")]) == 2
    assert "no usable labeled solution (skipped: give_up without a wrong step 1)" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
