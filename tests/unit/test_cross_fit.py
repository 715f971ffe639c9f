"""Settings chosen without the figure they are reported with (evaluation/cross_fit.py): the generic
two-fold choice, and the judge's critique temperature chosen per half of the solutions on the
other half (stages/judge._k_curve)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rprm_ray import batches
from rprm_ray.config import Recipe
from rprm_ray.evaluation.cross_fit import cross_fitted_choice
from rprm_ray.stages.judge import _k_curve


def test_each_half_uses_the_option_best_on_the_other_half() -> None:
    # Option "a" is right on the even items, "b" on the odd ones: each half gets the other's best.
    right = {"a": {0, 2, 4}, "b": {1, 3}}
    per_item, used = cross_fitted_choice(list(range(5)), ["a", "b"], lambda o, half: sum(i in right[o] for i in half))
    assert used == ("b", "a") and per_item == ["b", "a", "b", "a", "b"]
    # Ties go to the earlier option.
    assert cross_fitted_choice([0, 1], ["x", "y"], lambda o, half: 0.0)[1] == ("x", "x")
    with pytest.raises(ValueError, match="no options"):
        cross_fitted_choice([0], [], lambda o, half: 0.0)


def _steps(n: int):
    """n labeled solutions of two steps each; the second step is wrong in s0, s1, s4, s5, ...
    (both halves, even and odd, hold solutions with and without an error)."""
    rows = [{"problem_id": f"p{i}", "solution_id": f"s{i}", "step_idx": j, "question": "q", "previous_steps": [],
             "now_step": "x", "label": not (j == 1 and i % 4 < 2)} for i in range(n) for j in range(2)]
    return batches.from_rows(rows, "labeled_steps")


def _critiques(steps, right_for: set[str], k: int):
    """k critiques per step: right about the step (Yes on right steps, No on wrong ones) for the
    solutions in `right_for`, the opposite for the others."""
    rows = []
    for s in steps.to_pylist():
        yes = s["label"] if s["solution_id"] in right_for else not s["label"]
        rows += [{"problem_id": s["problem_id"], "solution_id": s["solution_id"], "step_idx": s["step_idx"],
                  "sample_idx": i, "prompt": "", "critique": "", "verdict": "Yes" if yes else "No", "valid": True,
                  "p_yes": 1.0 if yes else 0.0, "label": s["label"]} for i in range(k)]
    return batches.from_rows(rows, "critiques")


def test_the_critique_temperature_is_chosen_per_half_on_the_other_half() -> None:
    steps = _steps(8)
    run = SimpleNamespace(recipe=Recipe())
    everywhere = {f"s{i}" for i in range(8)}
    # T 0.5 is right on every solution; T 1.0 only on half of them (s0..s3).
    sampled = {0.5: _critiques(steps, everywhere, 2), 1.0: _critiques(steps, {"s0", "s1", "s2", "s3"}, 2)}
    m = _k_curve(run, steps, sampled, [1, 2], "dpo")
    assert m["dpo_temperature_by_half"] == [0.5, 0.5] and m["dpo_f1_at_k2"] == 100.0
    assert m["dpo_f1_by_temperature"]["0.5"] == 100.0 and m["dpo_f1_by_temperature"]["1"] < 100.0
    # Where each temperature is right on one half only, each half takes the other half's winner,
    # which is wrong on it: the honest figure is 0, though either temperature scores 50 on all.
    evens, odds = {f"s{i}" for i in range(0, 8, 2)}, {f"s{i}" for i in range(1, 8, 2)}
    crossed = _k_curve(run, steps, {0.5: _critiques(steps, evens, 2), 1.0: _critiques(steps, odds, 2)}, [2], "x")
    assert crossed["x_temperature_by_half"] == [1.0, 0.5] and crossed["x_f1_at_k2"] == 0.0
    # One temperature: the plain curve, no choice recorded.
    plain = _k_curve(run, steps, {1.0: sampled[1.0]}, [1, 2], "sft")
    assert set(plain) == {"sft_f1_at_k1", "sft_f1_at_k2"}
