"""rprm_ray.waits: bounded gathering, retries on replica death, one-line stuck messages."""

from __future__ import annotations

import pytest
import ray.exceptions as rex

from rprm_ray import waits


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Died(Exception):
    pass


def describe(i: int) -> tuple[str, str]:
    return f"gen-{i}", f"expand of rows {i}"


def test_gather_returns_results_in_part_order() -> None:
    got = waits.gather(3, lambda i: i * 10, lambda h, s: h + 1, timeout_s=5, retries=0,
                       describe=describe, role="Gen")
    assert got == [1, 11, 21]


def test_a_dead_part_is_sent_again_and_every_part_comes_back_once() -> None:
    sent: list[int] = []
    deaths: list[int] = []
    failures = {1: 2}  # part 1 dies twice, then answers

    def send(i: int) -> int:
        sent.append(i)
        return i

    def wait(h: int, _s: float) -> str:
        if failures.get(h, 0):
            failures[h] -= 1
            raise Died(f"replica of part {h} died")
        return f"part{h}"

    pauses: list[float] = []
    got = waits.gather(3, send, wait, timeout_s=5, retries=2, describe=describe, role="Gen",
                       is_death=lambda e: isinstance(e, Died), on_death=lambda i, e: deaths.append(i),
                       backoff_s=2.0, sleep=pauses.append)
    assert got == ["part0", "part1", "part2"]
    assert sent == [0, 1, 2, 1, 1] and deaths == [1, 1]
    assert pauses == [2.0, 4.0]  # backs off longer each time


def test_retries_are_bounded_and_the_message_names_the_replica_and_stage() -> None:
    def wait(h: int, _s: float) -> None:
        raise Died("node lost\nmore detail")

    with waits.in_stage("iter_1/search"), pytest.raises(RuntimeError) as info:
        waits.gather(2, lambda i: i, wait, timeout_s=5, retries=1, describe=describe, role="Gen",
                     is_death=lambda e: isinstance(e, Died), sleep=lambda s: None)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == ("Gen gen-0: died 2 times while expand of rows 0 (stage iter_1/search); giving up "
                   "after 1 retries: node lost")


def test_an_error_the_replica_raised_is_not_retried() -> None:
    sent: list[int] = []

    def wait(h: int, _s: float) -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        waits.gather(1, lambda i: sent.append(i) or i, wait, timeout_s=5, retries=3, describe=describe,
                     role="Gen", is_death=lambda e: isinstance(e, Died))
    assert sent == [0]


def test_expiry_is_one_line_naming_role_replica_stage_and_activity() -> None:
    def wait(h: int, _s: float) -> None:
        raise waits.WaitExpired

    with waits.in_stage("iter_0/judge_samples"), pytest.raises(waits.StuckError) as info:
        waits.gather(2, lambda i: i, wait, timeout_s=30, retries=2, describe=describe, role="ProcessJudge")
    assert str(info.value) == ("ProcessJudge gen-0: no answer within 30 s while expand of rows 0 "
                               "(stage iter_0/judge_samples)")
    assert isinstance(info.value, TimeoutError)
    assert waits.current_stage() == "(no stage)"  # the stage mark ends with its block


def test_the_time_out_bounds_the_gap_between_results_not_the_whole_batch() -> None:
    clock = FakeClock()
    budgets: list[float] = []

    def wait(h: int, seconds: float) -> int:
        budgets.append(seconds)
        clock.t += 8  # each part answers 8 s after the previous one: 24 s in all, 10 s time-out
        return h

    assert waits.gather(3, lambda i: i, wait, timeout_s=10, retries=0, describe=describe, role="J",
                        clock=clock) == [0, 1, 2]
    assert budgets == [10, 10, 10]


def test_wait_each_names_only_the_replicas_that_did_not_answer() -> None:
    def wait(h: str, _s: float) -> str:
        if h == "slow":
            raise waits.WaitExpired
        return h

    with pytest.raises(waits.StuckError) as info:
        waits.wait_each(["ok", "slow", "ok", "slow"], wait, timeout_s=60, role="Trainer",
                        names=["r0", "r1", "r2", "r3"], doing="setting up DeepSpeed",
                        done=lambda h: h == "ok")
    assert str(info.value) == ("Trainer r1, r3: no answer within 60 s while setting up DeepSpeed "
                               "(stage (no stage))")


def test_wait_each_shares_one_deadline() -> None:
    clock = FakeClock()
    budgets: list[float] = []

    def wait(h: int, seconds: float) -> int:
        budgets.append(seconds)
        clock.t += 4
        return h

    waits.wait_each([1, 2, 3], wait, timeout_s=10, role="T", names=["a", "b", "c"], doing="x", clock=clock)
    assert budgets == [10, 6, 2]


def test_replica_death_is_told_apart_from_the_replica_own_errors() -> None:
    assert waits.is_replica_death(rex.ActorDiedError())
    assert waits.is_replica_death(rex.ActorUnavailableError("unreachable", None))
    assert waits.is_replica_death(rex.NodeDiedError("node gone"))
    task_error = rex.RayTaskError("expand", "Traceback ...", ValueError("bad"))
    assert not waits.is_replica_death(task_error)
    assert not waits.is_replica_death(rex.ActorDiedError(task_error))  # its constructor raised
    assert not waits.is_replica_death(ValueError("bad"))
    assert not waits.is_replica_death(TimeoutError())


def test_first_line_of_a_remote_error_is_its_cause() -> None:
    remote = "ray::Gen.expand() (pid=1, ip=1.2.3.4)\n  File x, line 3\nValueError: bad row 3"
    assert waits.first_line(Exception(remote)) == "ValueError: bad row 3"
    assert waits.first_line(Exception("one\ntwo")) == "one"
    assert waits.first_line(Exception()) == "Exception"
