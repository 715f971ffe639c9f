"""The console of a run shows its own progress, not Serve's per-request access lines: a driver
started by `init_ray` (as `rprm-ray run` starts it) calls a Serve deployment through its handle;
the access lines land in the replica's log file under the session's logs/serve/ and not on the
driver's console. With Serve's stderr logging switched back on, the same lines do reach the
console, which is what this test would otherwise miss."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CALLS = 6

DRIVER = f"""
import socket, sys
import ray
from ray import serve
from rprm_ray.config import load_recipe
from rprm_ray.roles import init_ray

init_ray(load_recipe({str(ROOT / "recipes" / "tiny_arith.yaml")!r}, ["resources.num_cpus=2"]))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
serve.start(http_options={{"host": "127.0.0.1", "port": port}})

@serve.deployment(ray_actor_options={{"num_cpus": 0}})
class Echo:
    def __call__(self, x):
        return x

handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
print("stage progress:", [handle.remote(i).result() for i in range({CALLS})], flush=True)
print("SESSION_DIR", ray._private.worker._global_node.get_session_dir_path(), flush=True)
serve.shutdown()
ray.shutdown()
"""

ACCESS_LINE = re.compile(r"\bCALL __call__ OK\b")


def run_driver(serve_to_stderr: str | None) -> tuple[str, Path]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_SERVE_LOG_TO_STDERR"}
    if serve_to_stderr is not None:
        env["RAY_SERVE_LOG_TO_STDERR"] = serve_to_stderr
    out = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    session = Path(re.search(r"^SESSION_DIR (.+)$", out.stdout, re.M).group(1))
    return console, session


def replica_access_lines(session: Path) -> int:
    logs = list((session / "logs" / "serve").glob("replica_echo_*.log"))
    return sum(len(ACCESS_LINE.findall(p.read_text(errors="replace"))) for p in logs)


def test_serve_access_lines_stay_in_log_files_not_on_the_console() -> None:
    console, session = run_driver(None)
    assert f"stage progress: {list(range(CALLS))}" in console
    assert not ACCESS_LINE.search(console), [line for line in console.splitlines() if ACCESS_LINE.search(line)]
    assert replica_access_lines(session) == CALLS


def test_with_serve_logging_to_stderr_the_access_lines_reach_the_console() -> None:
    console, _ = run_driver("1")
    assert len(ACCESS_LINE.findall(console)) == CALLS
