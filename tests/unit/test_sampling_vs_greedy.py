"""Sampled critiques against the greedy one, step by step: which steps K samples repair, which they
break (evaluation/sampling_vs_greedy.py)."""

from __future__ import annotations

from rprm_ray import batches
from rprm_ray.evaluation.sampling_vs_greedy import sampling_vs_greedy


def _critique(step: int, sample: int, p_yes: float | None, label: bool) -> dict:
    valid = p_yes is not None
    return {"problem_id": "p", "solution_id": "s", "step_idx": step, "sample_idx": sample, "prompt": "Q:1+1\n",
            "critique": "...", "verdict": ("Yes" if p_yes >= 0.5 else "No") if valid else None, "valid": valid,
            "p_yes": p_yes, "label": label}


def test_fixed_and_broken_steps_are_counted_against_the_label() -> None:
    greedy = batches.from_rows([
        _critique(0, 0, 0.1, True),    # greedy wrong (a right step rejected) ...
        _critique(1, 0, 0.9, True),    # greedy right ...
        _critique(2, 0, 0.9, False),   # greedy wrong, and the samples agree with it
        _critique(3, 0, None, False),  # no valid greedy critique: wrong
    ], "critiques")
    sampled = batches.from_rows([
        _critique(0, 0, 0.8, True), _critique(0, 1, 0.7, True), _critique(0, 2, 0.0, True),  # ... mean 0.75: fixed
        _critique(1, 0, 0.2, True), _critique(1, 1, 0.3, True), _critique(1, 2, 0.9, True),  # ... mean 0.25: broken
        _critique(2, 0, 0.9, False), _critique(2, 1, 0.8, False), _critique(2, 2, 0.1, False),
        _critique(3, 0, 0.1, False), _critique(3, 1, None, False), _critique(3, 2, 0.9, False),
    ], "critiques")
    got = sampling_vs_greedy(greedy, sampled, k=2)
    assert (got.steps, got.greedy_wrong, got.fixed, got.broken) == (4, 3, 2, 1)  # step 3: mean of 0.1 alone
    assert got.sampled_critiques == 8 and got.sampled_critiques_wrong == 5
    assert got.greedy_error_rate == 75.0 and got.sample_error_rate == 62.5
    all_three = sampling_vs_greedy(greedy, sampled, k=3)
    assert (all_three.fixed, all_three.broken) == (1, 1)  # step 3's mean is 0.5 (no longer "No"); step 0 fixed


def test_yes_fraction_scores_a_step_by_its_verdicts() -> None:
    greedy = batches.from_rows([_critique(0, 0, 0.4, True)], "critiques")
    sampled = batches.from_rows([_critique(0, 0, 0.6, True), _critique(0, 1, 0.45, True)], "critiques")
    assert sampling_vs_greedy(greedy, sampled, k=2, mode="p_yes").fixed == 1  # mean 0.525
    assert sampling_vs_greedy(greedy, sampled, k=2, mode="yes_fraction").fixed == 1  # one Yes of two: 0.5
    assert sampling_vs_greedy(greedy, sampled, k=2, mode="yes_fraction", threshold=0.6).fixed == 0
