"""A local HTTP proxy in front of an OpenAI-compatible server that answers chosen requests with
errors (429 / 500 / hangs / malformed bodies), for testing the teacher client's retries.

`FlakyProxy(upstream=url)` forwards the rest to a real server (vLLM's, in the integration test);
`FlakyProxy(upstream=None)` answers them itself with `answer(prompt, n)` texts (fast unit tests
of the client's bookkeeping). It records each request's prompt, Authorization header and the
most requests it saw in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# fault(i, body) -> None (pass) or one of "429", "500", "hang", "few", "401-echo-key", "400"
Fault = Callable[[int, dict], "str | None"]


def every(k: int, kind: str, offset: int = 0) -> Fault:
    return lambda i, body: kind if i % k == offset else None


def default_answer(prompt: str, n: int) -> list[str]:
    return [f"Step checked ({i}). Is the step correct (Yes/No)? Yes" for i in range(n)]


class FlakyProxy:
    def __init__(self, upstream: str | None = None, faults: list[Fault] | None = None,
                 answer: Callable[[str, int], list[str]] = default_answer, delay_s: float = 0.0):
        self.upstream = upstream.rstrip("/") if upstream else None
        self.faults = faults or []
        self.answer = answer
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []
        self.bodies: list[dict] = []  # every request's JSON, as sent
        self.auth: set[str] = set()
        self.injected: dict[str, int] = {}
        self.stop_after: int | None = None  # answer 500 to everything after this many requests
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                proxy._forward_get(self)

            def do_POST(self):
                proxy._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- handling ---------------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: dict | str, headers: dict | None = None):
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its time-out)
            pass

    def _forward_get(self, h: BaseHTTPRequestHandler) -> None:
        if self.upstream is None:
            self._send(h, 404, {"error": "not found"})
            return
        with urllib.request.urlopen(self.upstream.rsplit("/v1", 1)[0] + h.path, timeout=30) as r:
            self._send(h, r.status, r.read().decode())

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        body = json.loads(raw or b"{}")
        with self.lock:
            i = self.count
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.auth.add(h.headers.get("Authorization", ""))
            prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
            self.prompts.append(prompt)
            self.bodies.append(body)
        try:
            kind = next((k for f in self.faults if (k := f(i, body))), None)
            if self.stop_after is not None and i >= self.stop_after:
                kind = "500"
            if kind:
                with self.lock:
                    self.injected[kind] = self.injected.get(kind, 0) + 1
            if kind == "429":
                self._send(h, 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0"})
            elif kind == "500":
                self._send(h, 500, {"error": {"message": "upstream broke", "type": "server_error"}})
            elif kind == "400":
                self._send(h, 400, {"error": {"message": "prompt longer than the context", "type": "invalid_request"}})
            elif kind == "hang":
                time.sleep(3.0)
                self._send(h, 504, {"error": {"message": "late"}})
            elif kind == "401-echo-key":
                self._send(h, 401, {"error": {"message": f"bad request from {h.headers.get('Authorization')}"}})
            else:
                if self.delay_s:
                    time.sleep(self.delay_s)
                status, out = self._answer(h, raw, body)
                if kind == "few" and isinstance(out, dict):
                    out["choices"] = out["choices"][:1]
                self._send(h, status, out)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, h: BaseHTTPRequestHandler, raw: bytes, body: dict) -> tuple[int, dict | str]:
        if self.upstream is not None:
            req = urllib.request.Request(self.upstream.rsplit("/v1", 1)[0] + h.path, data=raw, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()
        n = int(body.get("n", 1))
        chat = "messages" in body
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        texts = self.answer(prompt, n)
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(texts)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
            obj = "text_completion"
        return 200, {"id": "x", "object": obj, "created": 0, "model": body.get("model", "m"), "choices": choices,
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
