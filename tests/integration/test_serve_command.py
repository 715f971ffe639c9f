"""`rprm-ray serve` end to end: the command in its own process (its own local Ray cluster, Serve
and a vLLM judge on the untrained tiny model), spoken to over real HTTP, then stopped with
SIGTERM. A separate process is the point: the test checks what a user sees, including that
stopping leaves no Ray process behind, which the session's shared cluster could not show.

Tests run in file order: the service starts once (~1-2 min on 2 cores) and the last test stops it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from rprm_ray.client import JudgeServiceError, get_rewards, health, score_steps

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
K = 2
START_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path, port: int):
        self.proc, self.url, self.log, self.port = proc, url, log, port

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        sys.executable, "-m", "rprm_ray.cli", "serve", str(tiny_model_dir), "--port", str(port),
        "--prompt-style", "compact",
        "--set", f"judge.critiques_per_step={K}",
        # Shorter than the verdict prefix: the untrained judge's critiques are all invalid.
        "--set", "judge.sampling.max_new_tokens=24",
        "--set", "judge.sampling.temperature=1.0",
        "--set", "judge.max_batch_rows_per_request=2",  # a 3-step request is 2 judge requests
        "--set", "judge.enforce_eager=true",
        "--set", "judge.num_cpus_per_replica=0.5",
        "--set", "judge.autoscaling.max_replicas=1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    svc = Service(proc, f"http://127.0.0.1:{port}", log, port)
    try:
        _wait_until_ready(svc)
        yield svc
    finally:
        _stop(proc)  # after a failure before the stop test: leave nothing behind


def _wait_until_ready(svc: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if svc.proc.poll() is not None:
            pytest.fail(f"rprm-ray serve exited with {svc.proc.returncode} before it was ready:\n{svc.log_tail()}")
        try:
            health(svc.url, timeout_s=30)
            if "judge ready at" in svc.log.read_text():
                return
        except JudgeServiceError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"rprm-ray serve not ready after {START_TIMEOUT_S}s:\n{svc.log_tail()}")
        time.sleep(2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    for child in psutil.wait_procs(family, timeout=30)[1]:
        child.kill()


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_healthz_names_the_model_and_is_bound_to_localhost(service: Service, tiny_model_dir: Path) -> None:
    info = health(service.url)
    assert info["status"] == "ok"
    assert info["model_dir"] == str(tiny_model_dir.resolve())
    assert info["prompt_style"] == "compact" and info["aggregation"] == "min"
    assert isinstance(info["checksum"], str) and info["checksum"]  # the replica's weights
    # Bound to 127.0.0.1 by default: the port is not open on the machine's other addresses.
    other = next((a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family == socket.AF_INET and not a.address.startswith("127.")), None)
    if other is not None:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((other, service.port)) != 0, f"judge reachable on {other}"
    assert "judge ready at http://127.0.0.1:" in service.log.read_text()


def test_score_returns_k_critiques_and_a_score_per_step(service: Service) -> None:
    steps = ["3+4=7", "7*2=14", "A:14"]
    result = score_steps(service.url, "(3+4)*2", steps, k=K)
    assert set(result) == {"step_scores", "critiques", "verdicts"}
    # The untrained judge writes no valid critique: no score, no verdict, for every step.
    assert result["step_scores"] == [None, None, None]
    assert result["verdicts"] == [[None] * K] * 3
    assert [len(c) for c in result["critiques"]] == [K] * 3
    # The compact judge is shown each step after its own first line: each critique belongs to its step.
    for step, critiques in zip(steps, result["critiques"], strict=True):
        for text in critiques:
            assert f"\nN:{step}\n" in text, text
    # k defaults to the served recipe's judge.critiques_per_step; k=1 asks for one.
    assert [len(c) for c in score_steps(service.url, "(3+4)*2", steps[:1], k=1)["critiques"]] == [1]
    assert [len(c) for c in score_steps(service.url, "(3+4)*2", steps[:1])["critiques"]] == [K]


def test_concurrent_requests_each_get_their_own_answer(service: Service) -> None:
    requests = [(f"({a}+1)*2", [f"{a}+1={a + 1}", f"{a + 1}*2={2 * a + 2}"][: 1 + a % 2]) for a in range(8)]

    def call(req: tuple[str, list[str]]) -> dict:
        return score_steps(service.url, req[0], req[1], k=1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, requests))
    for (_, steps), result in zip(requests, results, strict=True):
        assert len(result["step_scores"]) == len(steps)
        for step, critiques in zip(steps, result["critiques"], strict=True):
            assert len(critiques) == 1 and f"\nN:{step}\n" in critiques[0]


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        ("/v1/score", b"{not json", "/v1/score: request body is not JSON"),
        ("/v1/score", b"[1, 2]", "/v1/score: request body must be a JSON object, got list"),
        ("/v1/score", b'{"question": "1+1"}', "/v1/score: field 'steps': missing field"),
        ("/v1/score", b'{"question": "1+1", "steps": []}', "/v1/score: field 'steps': List should have at least 1 item"),
        ("/v1/score", b'{"question": "1+1", "steps": ["A:2"], "k": 0}', "/v1/score: field 'k': Input should be greater than or equal to 1"),
        ("/v1/score", b'{"question": "1+1", "steps": ["A:2"], "n": 1}', "/v1/score: field 'n': unknown field"),
        ("/v1/score", b'{"question": "1+1", "steps": ["A:2", " "]}', "/v1/score: field 'steps'[1]: a step must not be empty"),
        ("/get_reward", b'{"query": "Q:1+1"}', "/get_reward: field 'query': Input should be a valid list"),
        ("/get_reward", b'{"query": ["Q:1+1\\nA:2\\n", "no prompt here"]}', "/get_reward: field 'query'[1]: no 'Q:' line"),
    ],
)
def test_bad_requests_get_400_and_one_line(service: Service, route: str, body: bytes, reason: str) -> None:
    status, answer = _post(service.url + route, body)
    assert status == 400
    assert answer["error"].startswith(reason), answer
    assert "\n" not in answer["error"]


def test_unknown_route_and_method_are_4xx(service: Service) -> None:
    status, _ = _post(service.url + "/v2/score", b"{}")
    assert status == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(service.url + "/v1/score", timeout=30)
    assert err.value.code == 405


def test_get_reward_scores_each_full_text(service: Service) -> None:
    texts = ["Q:(3+4)*2\n3+4=7\n7*2=14\nA:14\n", "<|im_start|>Q:9-2\n9-2=7\nA:7<|im_end|>"]
    rewards = get_rewards(service.url, texts)
    # One reward per text; no valid critique from the untrained judge means no reward.
    assert rewards == [None, None]
    # OpenRLHF sends its prompts and labels too: accepted and ignored.
    status, answer = _post(service.url + "/get_reward",
                           json.dumps({"query": texts[:1], "prompts": ["Q:(3+4)*2\n"], "labels": [""]}).encode())
    assert status == 200 and answer == {"rewards": [None]}


def test_sigterm_stops_cleanly_leaving_no_ray_process(service: Service) -> None:
    proc = psutil.Process(service.proc.pid)
    family = proc.children(recursive=True)
    names = {p.name() for p in family}
    assert any("raylet" in n for n in names) and any("gcs_server" in n for n in names), names
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=180) == 0, service.log_tail()
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [(p.pid, p.name()) for p in alive]
    console = service.log.read_text()
    assert "SIGTERM: stopping" in console
    # Dozens of requests were served: none of Serve's per-request access lines reached the console.
    assert not [line for line in console.splitlines() if "/v1/score" in line and "judge ready" not in line]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", service.port)) != 0, "the HTTP port is still open"
