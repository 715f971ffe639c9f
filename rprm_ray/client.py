"""Calling a judge served by `rprm-ray serve` from another program (standard library only).

    from rprm_ray.client import score_steps, get_rewards
    result = score_steps("http://127.0.0.1:8000", "(3+4)*2", ["3+4=7", "7*2=14", "A:14"], k=2)
    result["step_scores"]   # [p, p, p]: P(Yes) per step, None when no critique was valid
    get_rewards("http://127.0.0.1:8000", ["Q:(3+4)*2\\n3+4=7\\n7*2=14\\nA:14\\n"])  # [reward]
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_TIMEOUT_S = 600.0


class JudgeServiceError(RuntimeError):
    """The service answered with an error (`status` is the HTTP code, 0 when unreachable)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def _call(url: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error", text)
        except (json.JSONDecodeError, AttributeError):
            message = text.strip() or exc.reason
        raise JudgeServiceError(exc.code, message) from None
    except urllib.error.URLError as exc:
        raise JudgeServiceError(0, f"{url}: unreachable ({exc.reason})") from None
    except OSError as exc:  # a timeout or reset while reading the answer
        raise JudgeServiceError(0, f"{url}{path}: no answer ({type(exc).__name__}: {exc})") from None


def score_steps(url: str, question: str, steps: list[str], k: int | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """POST /v1/score: {"step_scores": [float | None], "critiques": [[str]], "verdicts": [[str | None]]}.
    `k` critiques per step (default: the served recipe's judge.critiques_per_step)."""
    body: dict[str, Any] = {"question": question, "steps": steps}
    if k is not None:
        body["k"] = k
    return _call(url, "/v1/score", body, timeout_s)


def get_rewards(url: str, texts: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[float | None]:
    """POST /get_reward (OpenRLHF's remote reward model): one reward per full text (policy prompt +
    solution), the step scores aggregated by the served recipe's search.aggregation."""
    return _call(url, "/get_reward", {"query": texts}, timeout_s)["rewards"]


def health(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET /healthz: {"status": "ok", "model_dir", "origin", "prompt_style", "aggregation", "uptime_s"}."""
    return _call(url, "/healthz", None, timeout_s)
