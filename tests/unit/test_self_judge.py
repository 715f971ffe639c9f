"""The self-judge's pairwise accuracy on its own candidates: discordant pairs, both orders,
position consistency, slot-A rate."""

from __future__ import annotations

import pytest

from rprm_ray import batches, judging
from rprm_ray.config import SamplingConfig
from rprm_ray.engines.base import Completion
from rprm_ray.evaluation.self_judge import (
    discordant_pairs,
    greedy_next_steps,
    greedy_overrules,
    judge_own_pairs,
    own_prefixes,
    self_judge_accuracy,
)
from rprm_ray.prompts import get_style
from rprm_ray.tasks import arith, arith_teacher


def is_right(question: str, prefix: list[str], step: str) -> bool:
    return step.strip() == arith.expected_step(question, prefix)


def _candidates(spec: dict[str, list[str]]):
    rows = []
    for prefix_id, steps in spec.items():
        for cid, step in enumerate(steps):
            rows.append({"problem_id": f"p-{prefix_id}", "prefix_id": prefix_id, "candidate_id": cid,
                         "question": "(3+4)*2", "prefix_steps": ["3+4=7"], "step": step, "finished": False,
                         "num_tokens": len(step), "cumulative_logprob": None})
    return batches.from_rows(rows, "candidates")


def test_only_pairs_with_exactly_one_right_step_are_kept() -> None:
    table = _candidates({"x": ["7*2=14", "7*2=15", "7*2=14", "7*3=21", " "], "y": ["7*2=13", "7*2=12"],
                         "z": ["7*2=14", "6*2=12", "7*2=16"]})
    pairs, right_of = discordant_pairs(table, is_right)
    # x: 14 (twice: once), 15, 21 -> (0,1), (0,3); y: no right step; z: (0,1), (0,2).
    assert right_of == {"x|0-1": 0, "x|0-3": 0, "z|0-1": 0, "z|0-2": 0}
    assert pairs.num_rows == 8 and set(pairs.column("prefix_id").to_pylist()) == set(right_of)
    capped, right_capped = discordant_pairs(table, is_right, max_pairs_per_prefix=1)
    assert list(right_capped) == ["x|0-1", "z|0-1"] and capped.num_rows == 4
    empty, none = discordant_pairs(_candidates({"y": ["7*2=13", "7*2=12"]}), is_right)
    assert empty.num_rows == 0 and none == {}


def _judgments(rows):
    return batches.from_rows(rows, "pairwise_judgments")


def _row(pair, a, b, order, winner, valid=True):
    return {"problem_id": "p", "prefix_id": pair, "candidate_a": a, "candidate_b": b, "order": order,
            "judgment": "", "winner": winner if valid else None, "valid": valid}


def test_accuracy_counts_both_orders_consistency_and_slot_a() -> None:
    right_of = {"p1": 0, "p2": 1, "p3": 0}
    acc = self_judge_accuracy(_judgments([
        _row("p1", 0, 1, "AB", 0), _row("p1", 0, 1, "BA", 0),  # right twice, consistent
        _row("p2", 0, 1, "AB", 0), _row("p2", 0, 1, "BA", 1),  # always slot A: flips, one right
        _row("p3", 0, 1, "AB", 0), _row("p3", 0, 1, "BA", None, valid=False),  # invalid counts wrong
    ]), right_of)
    assert (acc.pairs, acc.judgments, acc.right, acc.invalid) == (3, 6, 4, 1)
    assert acc.accuracy == pytest.approx(4 / 6) and acc.pair_accuracy == pytest.approx(1 / 3)
    assert (acc.consistent, acc.consistent_checked) == (1, 2) and acc.position_consistency == 0.5
    # Slot A named: p1 AB (0 in A), p2 AB (0), p2 BA (1 in A), p3 AB (0): 4 of 5 valid.
    assert acc.slot_a == 4 and acc.slot_a_rate == pytest.approx(0.8)
    assert "accuracy 66.7% (4/6 judgments, 1 invalid)" in acc.text()
    assert acc.as_dict()["position_consistency"] == 0.5
    with pytest.raises(batches.BatchError, match="prefix_id 'other'"):
        self_judge_accuracy(_judgments([_row("other", 0, 1, "AB", 0)]), right_of)
    none = self_judge_accuracy(batches.empty("pairwise_judgments"), {})
    assert none.accuracy is None and "n/a" in none.text()


class TeacherJudge:
    """An engine that judges like the programmatic teacher (R line from the context, the rest
    after the shown steps), or always names slot A when `biased`."""

    def __init__(self, biased: bool = False):
        self.biased = biased

    def generate(self, prompts, n, sampling, stop=None, **_):
        out = []
        for prompt in prompts:
            lines = prompt.split("\n")
            question, prev = lines[0][2:], [x[2:] for x in lines if x.startswith("P:")]
            shown = [x[2:] for x in lines if x[:2] in ("a:", "b:")]
            if not shown:
                text = "R:" + arith_teacher.worked_step(arith.expected_step(question, prev))
            elif self.biased:
                text = "Ca:\nVa:Y\nCb:\nVb:N\n[[A]]"
            else:
                full = arith_teacher.teacher_pairwise(question, prev, *shown)
                text = full[full.index("\nCa:") + 1:]
            out.append([Completion(text=text, token_ids=[], cumulative_logprob=None, finish_reason="eos")] * n)
        return out


def test_judge_own_pairs_runs_the_searchs_judging_on_an_engine() -> None:
    table = _candidates({"x": ["7*2=14", "7*2=15", "7*3=21"], "z": ["7*2=16", "7*2=14"]})
    style = get_style("compact", distinct_judge_prompts=True)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=96)
    acc, judgments = judge_own_pairs(TeacherJudge(), style, table, is_right, sampling)
    assert (acc.pairs, acc.judgments, acc.right, acc.invalid) == (3, 6, 6, 0)
    assert acc.position_consistency == 1.0 and acc.slot_a_rate == 0.5
    assert judging.pairwise_counts(judgments).position_inconsistent == 0
    biased, _ = judge_own_pairs(TeacherJudge(biased=True), style, table, is_right, sampling)
    assert biased.accuracy == 0.5 and biased.position_consistency == 0.0 and biased.slot_a_rate == 1.0


def test_overrules_of_the_greedy_step_are_counted_where_a_pair_holds_it() -> None:
    """x: greedy 7*2=15 is wrong, so naming 14 overrules it rightly; z: greedy 7*2=14 is right,
    so naming 16 overrules it wrongly; y's pair does not hold its greedy step (not counted)."""
    table = _candidates({"x": ["7*2=15", "7*2=14"], "z": ["7*2=14", "7*2=16"], "y": ["7*2=14", "6*2=12"]})
    pairs, right_of = discordant_pairs(table, is_right)
    greedy = {"x": "7*2=15", "z": "7*2=14", "y": "7*2=13"}
    judged = _judgments([
        _row("x|0-1", 0, 1, "AB", 1), _row("x|0-1", 0, 1, "BA", 0),  # overrules once (right), keeps once
        _row("z|0-1", 0, 1, "AB", 1), _row("z|0-1", 0, 1, "BA", 0, valid=False),  # overrules (wrong); invalid
        _row("y|0-1", 0, 1, "AB", 1), _row("y|0-1", 0, 1, "BA", 1),
    ])
    o = greedy_overrules(judged, pairs, right_of, greedy)
    assert (o.judgments, o.overrules, o.greedy_wrong, o.caught) == (3, 2, 2, 1)
    assert o.precision == 0.5 and o.catch_rate == 0.5


def test_the_greedy_next_step_of_each_prefix_comes_from_its_solution() -> None:
    solutions = batches.from_rows([{"problem_id": "p", "sample_idx": 0, "question": "(3+4)*2", "text": "",
                                    "steps": ["3+4=7", "7*2=14", "A:14"], "answer": None, "finished": True,
                                    "correct": None}], "solutions")
    prefixes = own_prefixes(solutions, get_style("compact"))
    assert greedy_next_steps(solutions, prefixes) == {"p/0": "3+4=7", "p/1": "7*2=14", "p/2": "A:14"}


def test_the_judges_own_step_is_set_beside_the_greedy_step_at_each_judged_prefix() -> None:
    from rprm_ray.evaluation.self_judge import own_step_accuracy
    from rprm_ray.tasks.arith_task import ArithTask

    read = ArithTask.judges_own_step
    table = _candidates({"x": ["7*2=15", "7*2=14"], "z": ["7*2=14", "7*2=16"]})
    pairs, _ = discordant_pairs(table, is_right)
    r_right, r_wrong = "R:" + arith_teacher.worked_step("7*2=14"), "R:" + arith_teacher.worked_step("7*2=16")
    judged = _judgments([
        {**_row("x|0-1", 0, 1, "AB", 1), "judgment": f"{r_right}\na:7*2=15\nb:7*2=14\n[[B]]"},
        {**_row("x|0-1", 0, 1, "BA", 1), "judgment": f"{r_right}\na:7*2=14\nb:7*2=15\n[[A]]"},
        {**_row("z|0-1", 0, 1, "AB", 1), "judgment": f"{r_wrong}\na:7*2=14\nb:7*2=16\n[[B]]"},
    ])
    own = own_step_accuracy(judged, pairs, {"x": "7*2=15", "z": "7*2=14"}, is_right, lambda j: read(None, j))
    # x: its own step right, greedy wrong; z: its own step wrong, greedy right.
    assert (own.prefixes, own.own_right, own.greedy_right) == (2, 1, 1) and own.own_accuracy == 0.5
    assert own_step_accuracy(judged, pairs, {"x": "7*2=15"}, is_right, lambda j: None) is None
    assert read(None, "[[A]]") is None and read(None, "R:A:14\na:A:14") == "A:14"
