"""Paired bootstrap intervals for differences of accuracies on the same problems."""

from __future__ import annotations

import math

import pytest

from rprm_ray.evaluation.stats import paired_difference


def test_identical_results_differ_by_exactly_nothing() -> None:
    d = paired_difference([1, 0, 1, 1], [1, 0, 1, 1])
    assert (d.points, d.low, d.high, d.problems) == (0.0, 0.0, 0.0, 4)


def test_every_problem_gained_is_a_sure_hundred_points() -> None:
    d = paired_difference([1.0] * 50, [0.0] * 50)
    assert (d.points, d.low, d.high) == (100.0, 100.0, 100.0)


def test_interval_matches_the_normal_approximation_for_half_the_problems_gained() -> None:
    # diff is 1 on half of 400 problems, 0 elsewhere: mean 0.5, standard error sqrt(.25 / 400).
    d = paired_difference([1, 0] * 200, [0] * 400)
    half_width = 100 * 1.96 * math.sqrt(0.25 / 400)
    assert d.points == 50.0
    assert d.low == pytest.approx(50 - half_width, abs=0.6)
    assert d.high == pytest.approx(50 + half_width, abs=0.6)


def test_pairing_removes_the_shared_per_problem_variation() -> None:
    # Both sides solve the same hard/easy problems except 4 of 400, which only `a` gets: paired,
    # the interval stays within [0, +2]; unpaired it would span about +-7 points.
    b = [1, 0] * 200
    a = list(b)
    for i in (1, 3, 5, 7):
        a[i] = 1
    d = paired_difference(a, b)
    assert d.points == pytest.approx(1.0)
    assert 0.0 <= d.low and d.high <= 2.0


def test_fractions_of_samples_are_scores_too() -> None:
    d = paired_difference([1, 1], [0.5, 0.25])
    assert d.points == pytest.approx(62.5)
    assert "+62.5 points, 95% CI" in d.text()


def test_unpaired_or_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="pair them by problem"):
        paired_difference([1, 0], [1])
    with pytest.raises(ValueError, match="no problems"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1], [0], level=1.5)
