"""End to end: a small guided recipe through all four roles on real Ray, vLLM and DeepSpeed; the
driver is killed (SIGKILL) right after a stage finishes, resumed, and must produce the same outputs
as an uninterrupted run with the same seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER = "iter_0/judge_sft"

SMALL = [
    "task.train_problems=400", "task.eval_problems=24",
    "bootstrap.policy_sft_steps=40", "bootstrap.judge_sft_steps=40",
    "trainer.micro_batch_size_per_device=32", "trainer.global_batch_size=32",
    "loop.iterations=1", "loop.problems_per_iteration=8", "loop.max_steps_per_solution=6",
    "generator.candidates_per_step=3",
    "judge.sampling.max_new_tokens=96",
    "evaluation.bon_samples_per_prompt=[1,2]", "evaluation.critiques_per_step=[1,2]",
    "search.samples_per_prompt=2", "search.beam_width=2", "search.max_depth=6",
]


def cli(run_root: Path, cache: Path, *extra: str) -> list[str]:
    sets = [*SMALL, f"run_root={run_root}", f"model_cache={cache}", "name=e2e"]
    args = [sys.executable, "-m", "rprm_ray.cli", "run", str(ROOT / "recipes" / "tiny_arith.yaml")]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.pop("RAY_ADDRESS", None)  # the driver starts its own local cluster
    e.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return e


def stage_outputs(run_dir: Path) -> dict[str, list[dict]]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    out = {}
    for key, stage in manifest["stages"].items():
        for name, rel in stage["outputs"].items():
            out[f"{key}/{name}"] = pq.read_table(run_dir / rel).to_pylist()
    return out


def finished_stages(run_dir: Path) -> set[str]:
    path = run_dir / "manifest.json"
    try:
        return set(json.loads(path.read_text())["stages"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return set()


def test_kill_after_a_stage_then_resume_matches_uninterrupted(tmp_path):
    cache = tmp_path / "models"  # shared: the second run reuses the bootstrapped models

    full = subprocess.run(cli(tmp_path / "full", cache), env=env(), capture_output=True, text=True, timeout=1500)
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    assert "report:" in full.stdout
    full_dir = tmp_path / "full" / "e2e"
    assert (full_dir / "report.html").is_file() and (full_dir / "metrics.json").is_file()

    # Interrupted run: killed as soon as KILL_AFTER is recorded.
    killed_dir = tmp_path / "killed" / "e2e"
    proc = subprocess.Popen(cli(tmp_path / "killed", cache), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while KILL_AFTER not in finished_stages(killed_dir):
        assert proc.poll() is None, "the driver exited before the stage to kill after"
        assert time.time() < deadline, "timed out waiting for the stage"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = finished_stages(killed_dir)

    resumed = subprocess.run(cli(tmp_path / "killed", cache, "--resume", str(killed_dir)), env=env(),
                             capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for key in done_before:
        assert f"[skip] {key}" in resumed.stdout

    a, b = stage_outputs(full_dir), stage_outputs(killed_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between the uninterrupted and the resumed run"
    ma = json.loads((full_dir / "metrics.json").read_text())
    mb = json.loads((killed_dir / "metrics.json").read_text())
    assert ma["pass@1_per_iteration"] == mb["pass@1_per_iteration"]
