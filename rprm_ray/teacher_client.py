"""A client for an OpenAI-compatible teacher endpoint that survives a long, paid run.

`TeacherClient.generate(prompts, n, store)` sends one request per distinct prompt (chat
completions, or plain completions for base models), `teacher.max_concurrent_requests` at a
time. A 429, a 5xx, a 408/409, a time-out, a dropped connection or a malformed answer (fewer
than `n` choices) is retried up to `teacher.max_retries` times with exponential backoff and
jitter, honouring the server's `Retry-After`. Answers are persisted in a `ShardStore` every
`teacher.requests_per_shard` answered requests and when the pass ends or fails, so an error, a
crash or a kill loses at most one unflushed shard; the next attempt reads the store and asks
only for the missing prompts.

The API key is read from the environment variable named by `teacher.api_key_env` at start and
is kept only inside the HTTP client: error messages have it removed, and it is never written
to a shard, a manifest or a log.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import TeacherConfig
from rprm_ray.engines.base import prompt_seed
from rprm_ray.shards import ShardStore, fingerprint

log = logging.getLogger("rprm_ray.teacher")

RETRY_STATUSES = {408, 409, 429}


class TeacherError(RuntimeError):
    """The teacher endpoint could not answer; the message names the endpoint, never the key."""


class RequestRejected(TeacherError):
    """The endpoint refused this one request (400/413/422: a prompt over the teacher's context,
    say): the pass skips it and counts it instead of failing every other request."""


REJECT_STATUSES = {400, 413, 422}


class _Retryable(Exception):
    """A transient failure worth another try (kept separate from library exceptions)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def api_key(cfg: TeacherConfig) -> str:
    """The key from `cfg.api_key_env`; local servers without one get a placeholder."""
    if not cfg.api_key_env:
        return "EMPTY"
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise TeacherError(f"models.teacher.api_key_env: environment variable {cfg.api_key_env} is not set")
    return key


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Delay before retry `attempt` (0-based): the server's Retry-After when given (at most `cap`),
    else base * 2**attempt, capped, with full jitter over its upper half so many threads that
    failed together do not retry together."""
    if retry_after is not None:
        return min(cap, max(0.0, retry_after))
    delay = min(cap, base * (2 ** attempt))
    return delay * (0.5 + 0.5 * (rng or random).random())


class TeacherClient:
    def __init__(self, cfg: TeacherConfig, max_tokens: int, *, sleep: Callable[[float], None] = time.sleep,
                 extra_body: dict | None = None):
        if cfg.kind != "openai" or not cfg.url or not cfg.model:
            raise TeacherError("TeacherClient needs models.teacher.kind 'openai' with url and model")
        try:
            import openai
        except ImportError:
            raise TeacherError("models.teacher.kind 'openai' needs the `openai` package (pip install openai)") from None
        self.cfg = cfg
        self.max_tokens = max_tokens
        self.extra_body = extra_body if extra_body is not None else cfg.extra_body  # sent with every request
        self._openai = openai
        self._key = api_key(cfg)
        # The library's own retries are off: this client counts, backs off and reports them.
        self._client = openai.OpenAI(base_url=cfg.url, api_key=self._key, max_retries=0,
                                     timeout=cfg.request_timeout_s)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when a pass ends abnormally: in-flight requests stop retrying
        self.stats = {"requests": 0, "retries": 0, "reused": 0, "rejected": 0, "shards_written": 0}

    # ---- one request ------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 4 else text

    def request_id(self, prompt: str, n: int) -> str:
        c = self.cfg
        return fingerprint([c.model, c.api, prompt, n, c.temperature, self.max_tokens]
                           + ([self.extra_body] if self.extra_body else []) + ([c.seed] if c.seed is not None else []))

    def _call(self, prompt: str, n: int) -> list[tuple[str, str | None]]:
        c = self.cfg
        # One seed per prompt (from the recipe's and the prompt): one seed for every request drew
        # the same random numbers for all of them, and a random teacher gave one answer to all.
        seeded = {} if c.seed is None else {"seed": prompt_seed(c.seed, prompt)}
        if c.api == "chat":
            resp = self._client.chat.completions.create(
                model=c.model, messages=[{"role": "user", "content": prompt}], n=n,
                max_tokens=self.max_tokens, temperature=c.temperature, extra_body=self.extra_body, **seeded)
            texts = [(ch.message.content if ch.message else None, ch.finish_reason) for ch in resp.choices or []]
        else:
            resp = self._client.completions.create(model=c.model, prompt=prompt, n=n, max_tokens=self.max_tokens,
                                                   temperature=c.temperature, extra_body=self.extra_body, **seeded)
            texts = [(ch.text, ch.finish_reason) for ch in resp.choices or []]
        texts = [(t, r) for t, r in texts if t is not None]
        if len(texts) < n:
            raise _Retryable(f"answer had {len(texts)} usable choices of the {n} asked for")
        return texts[:n]

    def _classify(self, exc: Exception) -> _Retryable | None:
        """A retryable copy of a transient library error, or None for a permanent one."""
        o = self._openai
        if isinstance(exc, _Retryable):
            return exc
        if isinstance(exc, o.APITimeoutError):
            return _Retryable(f"no answer within {self.cfg.request_timeout_s:g}s (teacher.request_timeout_s)")
        if isinstance(exc, o.APIConnectionError):
            return _Retryable(f"connection failed ({type(exc).__name__})")
        if isinstance(exc, o.APIStatusError) and (exc.status_code in RETRY_STATUSES or exc.status_code >= 500):
            retry_after = None
            try:
                retry_after = float(exc.response.headers.get("retry-after"))
            except (TypeError, ValueError, AttributeError):
                pass
            return _Retryable(f"HTTP {exc.status_code}", retry_after)
        return None

    def complete(self, prompt: str, n: int) -> list[tuple[str, str | None]]:
        """`n` samples for one prompt, retried as the recipe says; TeacherError when it gives up."""
        attempt = 0
        while True:
            with self._lock:
                self.stats["requests"] += 1
            try:
                return self._call(prompt, n)
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as TeacherError
                retry = self._classify(exc)
                if retry is None:
                    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    status = getattr(exc, "status_code", None)
                    error = RequestRejected if status in REJECT_STATUSES else TeacherError
                    raise error(f"teacher endpoint {self.cfg.url}: {self._redact(detail)}") from None
                if attempt >= self.cfg.max_retries or self._stop.is_set():
                    raise TeacherError(
                        f"teacher endpoint {self.cfg.url}: {self._redact(str(retry))}, still failing after "
                        f"{attempt} retries (teacher.max_retries)") from None
                delay = backoff_seconds(attempt, self.cfg.retry_backoff_s, self.cfg.retry_backoff_max_s,
                                        retry.retry_after)
                log.info("teacher: %s; retry %d of %d in %.1fs", self._redact(str(retry)), attempt + 1,
                         self.cfg.max_retries, delay)
                with self._lock:
                    self.stats["retries"] += 1
                attempt += 1
                self._sleep(delay)

    # ---- a whole pass -----------------------------------------------------------------------
    def generate(self, prompts: list[str], n: int, store: ShardStore,
                 progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
        """`n` texts for every prompt (equal prompts are asked once), in prompt order. Answers
        already in `store` are reused; new ones are appended to it as they arrive. A prompt the
        endpoint rejects (RequestRejected) gets no texts and is counted in `stats["rejected"]`."""
        if store.kind != "teacher_responses":
            raise TeacherError(f"{store.where}: a teacher store holds 'teacher_responses', not {store.kind!r}")
        ids = [self.request_id(p, n) for p in prompts]
        answers = _by_request(store.table())
        todo = {rid: p for rid, p in zip(ids, prompts, strict=True) if len(answers.get(rid, ())) < n}
        with self._lock:
            self.stats["reused"] += len(set(ids)) - len(todo)
        total, finished = len(set(ids)), len(set(ids)) - len(todo)
        buffer: list[dict[str, Any]] = []
        failure: TeacherError | None = None

        def flush() -> None:
            if buffer:
                store.append(batches.from_rows(buffer, "teacher_responses"))
                buffer.clear()
                self.stats["shards_written"] += 1

        from rprm_ray.progress import progress_bar

        bar = progress_bar(total, f"teacher {self.cfg.model}", enabled=bool(todo), unit="req")
        bar.update(finished)
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.cfg.max_concurrent_requests, thread_name_prefix="teacher")
        pending: dict[Future, str] = {}
        queue = iter(todo.items())
        try:
            while True:
                # Keep at most max_concurrent_requests in flight; stop submitting after a failure.
                while failure is None and len(pending) < self.cfg.max_concurrent_requests:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    pending[pool.submit(self.complete, nxt[1], n)] = nxt[0]
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    rid = pending.pop(fut)
                    try:
                        texts = fut.result()
                    except RequestRejected as exc:
                        self.stats["rejected"] += 1
                        if self.stats["rejected"] <= 3:
                            log.warning("teacher: request skipped (counted in teacher_rejected): %s", exc)
                        answers[rid] = []
                        continue
                    except TeacherError as exc:
                        failure = failure or exc
                        continue  # requests in flight finish (their answers are kept); no new ones start
                    answers[rid] = [t for t, _ in texts]
                    buffer.extend({"request_id": rid, "sample_idx": i, "text": t, "finish_reason": r}
                                  for i, (t, r) in enumerate(texts))
                    finished += 1
                    bar.update(1)
                    if progress is not None:
                        progress(finished, total)
                    if len({row["request_id"] for row in buffer}) >= self.cfg.requests_per_shard:
                        flush()
        except BaseException:
            self._stop.set()  # interrupted: nothing new is sent, nothing retried
            raise
        finally:
            flush()  # whatever was answered is kept, whatever stopped the pass
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        if failure is not None:
            raise TeacherError(f"{failure}; {finished} of {total} requests are saved in {store.dir} and a "
                               f"resumed run (--resume) asks only for the other {total - finished}")
        return [answers[rid] for rid in ids]


def _by_request(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, dict[int, str]] = {}
    for r in table.to_pylist():
        out.setdefault(r["request_id"], {})[r["sample_idx"]] = r["text"]
    return {rid: [s[i] for i in sorted(s)] for rid, s in out.items()}
