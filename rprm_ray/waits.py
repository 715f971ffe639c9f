"""Bounded waits: every remote call has a deadline, and one that expires says who is stuck.

A cluster run holds its GPUs for hours; a wait without a bound turns one dead or hung replica into
a run that sits silently. Every driver-side wait on a role (a generator actor, a judge replica, a
trainer rank, the pair builder, a Serve start-up) goes through `gather` or `wait_each`, with the
role's recipe time-out; on expiry a `StuckError` names, in one line, the role, the replica, the
stage the driver was running and what the replica was asked to do.

Requests whose replica died (a killed actor, a lost node) are sent again, a bounded number of
times: every part's result is stored in its own slot once, so each row comes back exactly once
(the replicas' work is deterministic per prompt, so a recomputed part equals the lost one).

No Ray at module level: the callers pass the send / wait functions; `is_replica_death` imports
Ray's exception classes lazily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("rprm_ray.waits")

H = TypeVar("H")
R = TypeVar("R")

# The stage the driver is running, for messages. Process-wide rather than per thread: a stage may
# fan its calls out to threads (search chunks), and a driver runs one stage at a time.
_stage: str | None = None


@contextmanager
def in_stage(name: str) -> Iterator[None]:
    """Mark the driver as running stage `name` while the block runs."""
    global _stage
    before, _stage = _stage, name
    try:
        yield
    finally:
        _stage = before


def current_stage() -> str:
    return _stage or "(no stage)"


class StuckError(TimeoutError):
    """A role did not answer in time. The message is one line: role, replica, stage, activity."""


def stuck_message(role: str, replica: str, doing: str, timeout_s: float, detail: str = "") -> str:
    line = (f"{role} {replica}: no answer within {timeout_s:g} s while {doing} "
            f"(stage {current_stage()})")
    return f"{line}; {detail}" if detail else line


class WaitExpired(Exception):
    """Raised by a caller's `wait` function when its own time-out ran out (as opposed to an error
    the replica raised, which may itself be a TimeoutError and is passed through)."""


# Ray's exceptions for "the process that held this request is gone" (by class name, checked
# against Ray's classes in is_replica_death). A task's own error is never one of these.
_DEATH = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError",
          "ObjectLostError", "OwnerDiedError", "WorkerCrashedError")


def is_replica_death(exc: BaseException) -> bool:
    """True when `exc` says the replica (actor / Serve replica / its node) died, so the same
    request may be sent again; False for errors the replica raised itself (bad input, ...)."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):  # the replica ran and raised: not a death
        return False
    if getattr(exc, "actor_init_failed", False):  # its constructor raised: a replacement would too
        return False
    classes = tuple(getattr(rex, name) for name in _DEATH if hasattr(rex, name))
    return isinstance(exc, classes)


def gather(
    num_parts: int,
    send: Callable[[int], H],
    wait: Callable[[H, float], R],
    *,
    timeout_s: float,
    retries: int,
    describe: Callable[[int], tuple[str, str]],
    role: str,
    is_death: Callable[[BaseException], bool] = is_replica_death,
    on_death: Callable[[int, BaseException], None] | None = None,
    backoff_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[R]:
    """Send every part at once, then collect the results in part order.

    `send(i)` starts part i and returns a handle; `wait(handle, seconds)` returns its result or
    raises `WaitExpired`. The time-out bounds the gap between two collected results (queued parts
    start as earlier ones finish), so a large table on few replicas does not expire while each
    part is answered in time. A part whose replica died (`is_death`) is passed to `on_death`
    (e.g. to replace the actor) and sent again, at most `retries` times, after `backoff_s` x the
    attempt (time for the cluster to notice the death and route around it); `describe(i)` gives
    (replica, what the part asked) for messages.
    """
    handles = [send(i) for i in range(num_parts)]
    results: list[Any] = [None] * num_parts
    last_progress = clock()
    for i in range(num_parts):
        attempt = 0
        while True:
            remaining = max(timeout_s - (clock() - last_progress), 0.0)
            try:
                results[i] = wait(handles[i], remaining)
                last_progress = clock()
                break
            except WaitExpired:
                replica, doing = describe(i)
                raise StuckError(stuck_message(role, replica, doing, timeout_s)) from None
            except Exception as exc:
                if not is_death(exc):
                    raise
                replica, doing = describe(i)
                if attempt >= retries:
                    raise RuntimeError(
                        f"{role} {replica}: died {attempt + 1} times while {doing} (stage "
                        f"{current_stage()}); giving up after {retries} retries: {first_line(exc)}"
                    ) from None
                attempt += 1
                log.warning("%s %s died while %s (stage %s); sending it again (retry %d of %d): %s",
                            role, replica, doing, current_stage(), attempt, retries, first_line(exc))
                sleep(backoff_s * attempt)
                if on_death is not None:
                    on_death(i, exc)
                handles[i] = send(i)
                last_progress = clock()  # the resent part gets a whole time-out
    return results


def wait_each(
    handles: Sequence[H],
    wait: Callable[[H, float], R],
    *,
    timeout_s: float,
    role: str,
    names: Sequence[str],
    doing: str,
    done: Callable[[H], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[R]:
    """Results of `handles` (already sent), all within one deadline; on expiry one message names
    every replica that had not answered (`done(handle)`, when given, tells which later ones did).
    Errors (deaths included) pass through unchanged."""
    deadline = clock() + timeout_s
    results: list[Any] = []
    for i, handle in enumerate(handles):
        try:
            results.append(wait(handle, max(deadline - clock(), 0.0)))
        except WaitExpired:
            late = [names[i]] + [n for n, h in zip(names[i + 1:], handles[i + 1:], strict=True)
                                 if done is None or not done(h)]
            late = list(dict.fromkeys(late))  # several calls to one replica name it once
            raise StuckError(stuck_message(role, ", ".join(late), doing, timeout_s)) from None
    return results


def ray_wait(ref: Any, seconds: float) -> Any:
    """`wait` for a Ray ObjectRef: its value, or WaitExpired after `seconds`."""
    import ray

    try:
        return ray.get(ref, timeout=seconds)
    except ray.exceptions.GetTimeoutError:
        raise WaitExpired from None


def ray_done(ref: Any) -> bool:
    import ray

    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


def first_line(exc: BaseException) -> str:
    """An exception as one line: Ray's remote errors carry the remote traceback below the cause."""
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # A RayTaskError reads "ray::Actor.method() (pid=...)\n  traceback...\nErrorType: message":
    # the last line is the cause.
    return lines[-1].strip() if len(lines) > 1 and lines[0].startswith("ray::") else lines[0]
