"""The console of a run shows its own progress, not Serve's per-request access lines: a driver
started by `init_ray` (as `rprm-ray run` starts it) deploys the real ProcessJudge (vLLM, tiny
model) and scores steps through it; the access lines land in the replica's log file under the
session's logs/serve/ and not on the driver's console. With Serve's stderr logging switched back
on, the same lines do reach the console, which is what this test would otherwise miss."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CALLS = 3

DRIVER = f"""
import socket, sys, tempfile
import ray
from rprm_ray.config import JudgeConfig, SamplingConfig, TaskConfig, TinyModelConfig, load_recipe
from rprm_ray.roles import init_ray
from rprm_ray.tasks.arith import make_splits
from rprm_ray.tasks.arith_tables import labeled_steps_table
from rprm_ray.tiny import build_tiny_model

init_ray(load_recipe({str(ROOT / "recipes" / "tiny_arith.yaml")!r}, ["resources.num_cpus=2"]))
from actors.judge import deploy_judge

model = build_tiny_model(TinyModelConfig(), tempfile.mkdtemp(), seed=0, verdict_token=True)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cfg = JudgeConfig(critiques_per_step=1, num_cpus_per_replica=0.5, max_batch_rows_per_request=64,
                  sampling=SamplingConfig(temperature=0.0, max_new_tokens=8, seed=0))
judge = deploy_judge(cfg, model, name="judge_console", port=port)
_, problems = make_splits(TaskConfig(train_problems=2, eval_problems=2, seed=0))
steps = labeled_steps_table(problems, seed=0, error_rate=0.5)
for i in range({CALLS}):
    judge.score_steps(steps)
    print(f"[done] stage {{i}}", flush=True)
print("SESSION_DIR", ray._private.worker._global_node.get_session_dir_path(), flush=True)
judge.shutdown()
ray.shutdown()
"""

ACCESS_LINE = re.compile(r"\bCALL score_steps OK\b")


def run_driver(serve_to_stderr: str | None) -> tuple[str, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_SERVE_LOG_TO_STDERR", "RAY_ADDRESS")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if serve_to_stderr is not None:
        env["RAY_SERVE_LOG_TO_STDERR"] = serve_to_stderr
    out = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=400)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    session = Path(re.search(r"^SESSION_DIR (.+)$", out.stdout, re.M).group(1))
    return console, session


def replica_access_lines(session: Path) -> int:
    logs = list((session / "logs" / "serve").glob("replica_judge_console_*.log"))
    return sum(len(ACCESS_LINE.findall(p.read_text(errors="replace"))) for p in logs)


def test_judge_access_lines_stay_in_its_log_file_not_on_the_console() -> None:
    console, session = run_driver(None)
    assert all(f"[done] stage {i}" in console for i in range(CALLS))
    assert not ACCESS_LINE.search(console), [line for line in console.splitlines() if ACCESS_LINE.search(line)]
    assert replica_access_lines(session) == CALLS


def test_with_serve_logging_to_stderr_the_access_lines_reach_the_console() -> None:
    console, _ = run_driver("1")
    assert len(ACCESS_LINE.findall(console)) == CALLS
