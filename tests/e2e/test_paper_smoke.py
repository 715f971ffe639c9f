"""The real path on CPU: `recipes/paper_smoke.yaml` in both paper modes, end to end, offline.

Paper prompts through the tiny tokenizer's chat template, ProcessBench / GSM8K / MATH-500 files
from ../shared/data, models taken by hub id from a hub cache laid by `rprm-ray tiny` (an id other
than the recipe's), and the teacher an OpenAI-compatible vLLM server that the run starts on
127.0.0.1 and stops. Every stage that runs must write rows, and the report must be written. The
numbers mean nothing (tiny models)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEACHER_PORT = 8321  # the recipe's teacher url


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# The tiny smoke models learn the paper formats only partly in the recipe's SFT budget: measured,
# the rprm judge then writes near-miss verdict lines ("Is the ste corest (Yes/No)? Yes"), so every
# critique is invalid and judge_dpo has no pairs; psrlm's teacher-written pairwise (EFT) examples are
# mostly unparsable from the random tiny teacher, and where some survive its self-judged search finds
# no step pairs.
# Such a stage must stop the run with one line naming it (never train on zero rows or keep the old
# model), so the run either finishes every stage or stops exactly there. Every stage before it has
# run for real on the real path, with rows.
ZERO_ROW_STOPS = {  # stage where the run may stop -> the stages that must have finished before it
    "rprm": {"iter_0/judge_dpo": {"iter_0/judge_seed", "iter_0/judge_sft", "iter_0/judge_eval_sft",
                                  "iter_0/judge_samples"}},
    "psrlm": {"iter_0/policy_sft": set(), "iter_1/step_dpo": {"iter_0/policy_sft", "iter_0/policy_eval",
                                                              "iter_1/search"}},
}


@pytest.mark.parametrize("mode", ["rprm", "psrlm"])
def test_paper_smoke_from_hub_ids_offline_finishes_or_stops_at_a_zero_row_stage(mode, tmp_path, hub_tiny_cache, shared_data_dir):
    cache, repo_id = hub_tiny_cache
    sets = [f"loop.mode={mode}", f"run_root={tmp_path}", f"model_cache={tmp_path / 'models'}", f"name={mode}",
            f"models.hub_cache={cache}", f"models.policy.name_or_path={repo_id}",
            f"models.judge.name_or_path={repo_id}", f"models.teacher.model={repo_id}"]
    if mode == "psrlm":  # EFT pairs need questions with several labeled solutions: the whole file
        sets += ["models.judge=null", "task.max_labeled_solutions=null"]
    args = [sys.executable, "-m", "rprm_ray.cli", "run", str(ROOT / "recipes" / "paper_smoke.yaml")]
    for s in sets:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    run_dir = tmp_path / mode
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    if done.returncode == 0:
        expected = {"iter_0/data"} | ({"iter_0/judge_seed", "iter_0/judge_sft", "iter_0/judge_dpo"}
                                      if mode == "rprm" else {"iter_0/policy_sft", "iter_1/search", "iter_1/step_dpo"})
    else:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("rprm-ray run: error: ")]
        stops = ZERO_ROW_STOPS[mode]
        stopped = next((key for key in stops if errors and errors[0].startswith(f"rprm-ray run: error: stage {key}: ")),
                       None)
        assert done.returncode == 1 and len(errors) == 1 and stopped, done.stdout[-3000:] + done.stderr[-3000:]
        assert stopped not in stages, f"{stopped} failed but was recorded as finished"
        expected = {"iter_0/data"} | stops[stopped]
        empty_ok = {"pairs"}  # the zero pairs that stop the run are its finished stages' honest output
    assert expected <= set(stages), sorted(stages)
    for key, stage in stages.items():
        for name, rel in stage["outputs"].items():
            if done.returncode != 0 and name in empty_ok:
                continue
            assert pq.read_metadata(run_dir / rel).num_rows > 0, f"{key}/{name} wrote no rows"
    assert (run_dir / "report.html").is_file()
    assert (run_dir / "teacher-server.log").is_file()
    assert _port_free(TEACHER_PORT), "the run left its teacher server running"
