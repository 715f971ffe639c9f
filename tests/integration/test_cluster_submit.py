"""`rprm-ray submit/status/logs` against a real Ray head started with `ray start --head`.

The head is this module's own: its own --temp-dir (so `ray.init()` in other tests, which looks for
the last cluster under /tmp/ray, never finds it), free ports on 127.0.0.1, and it is stopped by
signalling the `ray start --block` process this module started: `ray stop` would stop every Ray
process on the machine, including other sessions' clusters."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rprm_ray.commands import submit

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HEAD_START_TIMEOUT_S = 120
PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "ray-client-server-port", "node-manager-port", "object-manager-port",
              "metrics-export-port", "runtime-env-agent-port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client_auth_mode() -> str:
    """Ray 2.60 turns token auth on for a head when ~/.ray/auth_token exists, but the SDK sends the
    token only when RAY_AUTH_MODE=token in this process: give the head this process's mode."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return "token" if is_token_auth_enabled() else "disabled"


def _stop(proc: subprocess.Popen, descendants: list) -> None:
    """SIGTERM to `ray start --block` makes it stop the processes it started; anything of ours
    still alive after that (by pid, recorded at start) is killed."""
    import psutil

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A real single-node Ray head with the dashboard on 127.0.0.1; yields its dashboard URL."""
    import psutil
    import requests

    venv_bin = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="rprm-submit-", dir="/tmp")  # short: Ray's socket paths
    ports = {flag: _free_port() for flag in PORT_FLAGS}
    cmd = [str(venv_bin / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=1",
           "--disable-usage-stats", f"--temp-dir={temp_dir}",
           *(f"--{flag}={port}" for flag, port in ports.items())]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"  # jobs find `python`/`rprm-ray` here
    env["RAY_AUTH_MODE"] = _client_auth_mode()
    log_path = Path(temp_dir) / "ray-start.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    descendants: list = []
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"dashboard not up after {HEAD_START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                    break
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.5)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        yield address
    finally:
        try:
            descendants += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        _stop(proc, descendants)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _workdir(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny working_dir with a valid recipe and a runtime env file pointing at it."""
    wd = tmp_path / "wd"
    (wd / "recipes").mkdir(parents=True)
    # An absolute run_root: submit refuses a relative one (it would land in Ray's temporary copy).
    (wd / "recipes" / "job.yaml").write_text(f"name: submit-test\nrun_root: {tmp_path / 'runs'}\n")
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(f"working_dir: {wd}\nexcludes: ['/runs/']\nenv_vars:\n  RPRM_TEST_VAR: from-runtime-env\n")
    return wd, env_file


def _submit_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    submit.add_submit_arguments(p)
    return p.parse_args(list(argv))


# ---------------------------------------------------------------------------- upload accounting


def test_measured_upload_is_exactly_what_ray_zips(tmp_path):
    """Same files and the same byte count as Ray's own packager, with .gitignore, a nested
    .rayignore, an anchored exclude and Ray's default excludes in play."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import create_package

    wd = tmp_path / "repo"
    for rel, text in {
        "rprm_ray/cli.py": "print('cli')\n",
        "rprm_ray/models/llama.py": "x = 1\n",        # must survive the anchored "/models/"
        "models/tiny/weights.txt": "w" * 5000,         # excluded: /models/
        "runs/r1/out.txt": "o" * 100,                  # excluded: .gitignore
        ".venv/lib/site.py": "v",                      # excluded: Ray's default excludes
        "docs/notes.md": "n" * 321,
        "docs/draft.tmp": "d",                         # excluded: docs/.rayignore
        "docs/.rayignore": "*.tmp\n",
        ".gitignore": "runs/\n",
        "recipes/r.yaml": "name: r\n",
    }.items():
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text(text)
    (wd / "empty").mkdir()
    excludes = ["/models/"]
    upload = submit.measure_upload(wd, excludes)
    names = {n for n, _ in upload.files}
    assert "rprm_ray/models/llama.py" in names and "recipes/r.yaml" in names
    assert not any(n.startswith(("models/", "runs/", ".venv/")) or n.endswith(".tmp") for n in names)

    zip_path = tmp_path / "pkg.zip"
    # What JobSubmissionClient does with a local working_dir (working_dir.py + dashboard_sdk.py).
    create_package(str(wd), zip_path, include_gitignore=True,
                   excludes=get_runtime_env_default_excludes() + excludes)
    with zipfile.ZipFile(zip_path) as z:
        zipped = {i.filename for i in z.infolist() if not i.is_dir()}
        zipped_dirs = {i.filename for i in z.infolist() if i.is_dir()}
    assert zipped == names
    assert zipped_dirs == {f"{d}/" for d in upload.empty_dirs} == {"empty/"}
    assert upload.zip_bytes == zip_path.stat().st_size


def test_repository_fits_the_upload_limit_with_the_shipped_runtime_env(monkeypatch):
    monkeypatch.chdir(REPO)
    env, _ = submit.load_runtime_env(None)
    upload = submit.measure_upload(Path(env["working_dir"]), env["excludes"])
    names = [n for n, _ in upload.files]
    assert "pyproject.toml" in names and "recipes/psrlm_qwen2.5-math-7b.yaml" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "runs/", "models/"))]
    print(f"repo working_dir upload: {len(names)} files, {upload.zip_bytes / 2**20:.2f} MiB")
    assert upload.zip_bytes < submit.upload_limit_bytes()


def test_oversized_working_dir_fails_before_contacting_the_cluster(tmp_path, capsys):
    wd, env_file = _workdir(tmp_path)
    with (wd / "checkpoint.bin.part").open("wb") as f:  # sparse: no disk used
        f.truncate(submit.upload_limit_bytes() + 1)
    args = _submit_args(str(wd / "recipes" / "job.yaml"), "--runtime-env", str(env_file),
                        "--address", "http://127.0.0.1:9")  # nothing listens: must not get there
    assert submit.run_submit(args) == 2
    err = capsys.readouterr().err
    assert "over Ray's 100.0 MiB limit" in err and "checkpoint.bin.part" in err
    assert "cannot reach" not in err


# ---------------------------------------------------------------------------- real jobs


def test_submit_no_wait_then_status_and_logs(ray_head, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")  # --address must win over the env
    wd, env_file = _workdir(tmp_path)
    probe = ("import os, pathlib; print('hello from rprm-ray job', "
             "pathlib.Path('recipes/job.yaml').is_file(), os.environ.get('RPRM_TEST_VAR'))")
    args = _submit_args(str(wd / "recipes" / "job.yaml"), "--runtime-env", str(env_file),
                        "--address", ray_head, "--no-wait", "--entrypoint", f'python -c "{probe}"')
    assert submit.run_submit(args) == 0
    out = capsys.readouterr().out
    job_id = out.split()[1]
    assert job_id.startswith("rprm-submit-test-")
    assert f"{ray_head}/#/jobs/{job_id}" in out

    assert submit.run_logs(argparse.Namespace(job_id=job_id, address=ray_head, follow=True)) == 0
    out = capsys.readouterr().out
    # The job ran in the uploaded working_dir with the runtime env's variables.
    assert "hello from rprm-ray job True from-runtime-env" in out
    assert out.rstrip().endswith(f"job {job_id}: SUCCEEDED")

    assert submit.run_status(argparse.Namespace(job_id=job_id, address=ray_head)) == 0
    assert "status:     SUCCEEDED" in capsys.readouterr().out
    assert submit.run_logs(argparse.Namespace(job_id=job_id, address=ray_head, follow=False)) == 0
    assert "hello from rprm-ray job True from-runtime-env" in capsys.readouterr().out

    assert submit.run_logs(argparse.Namespace(job_id="rprm-no-such-job", address=ray_head, follow=True)) == 2
    assert "rprm-no-such-job" in capsys.readouterr().err


def test_submit_follows_a_failing_job_and_exits_nonzero(ray_head, tmp_path, capsys):
    wd, env_file = _workdir(tmp_path)
    args = _submit_args(str(wd / "recipes" / "job.yaml"), "--runtime-env", str(env_file),
                        "--address", ray_head, "--submission-id", "rprm-fails-on-purpose",
                        "--entrypoint", "python -c \"import sys; print('about to fail'); sys.exit(3)\"")
    assert submit.run_submit(args) == 1
    out = capsys.readouterr().out
    assert "submitted rprm-fails-on-purpose" in out and "about to fail" in out
    assert out.rstrip().endswith("job rprm-fails-on-purpose: FAILED")
    # Submission ids are unique per cluster: reusing one is refused with Ray's reason, in one line.
    assert submit.run_submit(args) == 2
    err = capsys.readouterr().err.strip()
    assert "submitting the job at" in err and "rprm-fails-on-purpose" in err and "\n" not in err


def test_stop_ends_a_running_job(ray_head, tmp_path, capsys):
    wd, env_file = _workdir(tmp_path)
    args = _submit_args(str(wd / "recipes" / "job.yaml"), "--runtime-env", str(env_file),
                        "--address", ray_head, "--no-wait", "--submission-id", "rprm-stopped-on-purpose",
                        "--entrypoint", "python -c \"import time; print('waiting', flush=True); time.sleep(600)\"")
    assert submit.run_submit(args) == 0
    capsys.readouterr()
    stop = argparse.Namespace(job_id="rprm-stopped-on-purpose", address=ray_head, no_wait=False)
    started = time.monotonic()
    assert submit.run_stop(stop) == 0
    out = capsys.readouterr().out
    assert "rprm-stopped-on-purpose: stop requested" in out
    assert out.rstrip().endswith("job rprm-stopped-on-purpose: STOPPED")
    assert time.monotonic() - started < 120  # the 600 s sleep did not run out
    # Stopping it again says so; an unknown id is an error in one line.
    assert submit.run_stop(stop) == 0
    assert "already STOPPED" in capsys.readouterr().out
    with pytest.raises(submit.SubmitError, match="rprm-no-such-job"):
        submit.run_stop(argparse.Namespace(job_id="rprm-no-such-job", address=ray_head, no_wait=True))
