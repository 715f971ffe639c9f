"""The real path on CPU: `recipes/paper_smoke.yaml` in both paper modes, end to end, offline.

Paper prompts through the tiny tokenizer's chat template, ProcessBench / GSM8K / MATH-500 files
from ../shared/data, models taken by hub id from a hub cache laid by `rprm-ray tiny` (an id other
than the recipe's), and the teacher an OpenAI-compatible vLLM server that the run starts on
127.0.0.1 and stops. Every stage that runs must write rows, and the report must be written. The
numbers mean nothing (tiny models)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# Every stage each mode runs (the recipe: one iteration). The tiny smoke models learn the paper
# formats in the recipe's short SFT only because the teacher is held to bare formats and the tiny
# tokenizer spells the verdict prefix as one token (recipes/paper_smoke.yaml says why).
STAGES = {
    "rprm": {"iter_0/data", "iter_0/judge_seed", "iter_0/judge_sft", "iter_0/judge_eval_sft",
             "iter_0/judge_samples", "iter_0/judge_dpo", "iter_0/judge_eval_dpo"},
    "psrlm": {"iter_0/data", "iter_0/policy_sft", "iter_0/policy_eval", "iter_1/search", "iter_1/step_dpo",
              "iter_1/policy_eval"},
}


@pytest.mark.parametrize("mode", ["rprm", "psrlm"])
def test_paper_smoke_from_hub_ids_offline_runs_every_stage(mode, tmp_path, hub_tiny_cache, shared_data_dir):
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
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / mode
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert STAGES[mode] <= set(stages), sorted(stages)
    for key, stage in stages.items():
        for name, rel in stage["outputs"].items():
            assert pq.read_metadata(run_dir / rel).num_rows > 0, f"{key}/{name} wrote no rows"
    trained = "iter_0/judge_dpo" if mode == "rprm" else "iter_1/step_dpo"
    assert stages[trained]["metrics"]["steps"] >= 1 and stages[trained]["metrics"]["pairs"] >= 1
    assert (run_dir / "report.html").is_file()
    assert (run_dir / "teacher-server.log").is_file()
    # The recipe's url has port 0: the run chose a free port and said which.
    port = int(re.search(r"teacher: starting .* on 127\.0\.0\.1:(\d+)", done.stdout).group(1))
    assert port != 0 and _port_free(port), "the run left its teacher server running"
