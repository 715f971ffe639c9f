import pytest

from rprm_ray.evaluation.bon import (
    BonProblem,
    best_pick_correct,
    canonical_answer,
    default_ns,
    evaluate_best_of_n,
    select_best,
    select_majority,
    select_weighted,
    smallest_n_within_budget,
)

# P1: solution scores by aggregation: c0 min .2 last .2 mean .55 prod .18; c1 min .6 last .7 mean .65
# prod .42; c2 min .5 last .5 mean .725 prod .475. Only c1 is correct.
P1 = BonProblem("p1", [[0.9, 0.2], [0.6, 0.7], [0.95, 0.5]], [False, True, False], ["5", "7", " 5 "])
# P2: c0 has no score at all; c1 is correct.
P2 = BonProblem("p2", [[None, None], [0.1]], [False, True], ["3", "4"])


def test_default_ns():
    assert default_ns(8) == [1, 2, 4, 8]
    assert default_ns(6) == [1, 2, 4, 6]
    assert default_ns(1) == [1]


def test_selectors_tie_break_earliest_and_rank_missing_last():
    assert select_best([0.5, 0.7, 0.7]) == 1
    assert select_best([None, 0.1, None]) == 1
    assert select_best([None, None]) == 0
    assert select_majority(["2", "3", "3", "2"]) == 0  # 2-2 tie: "2" appeared first
    assert select_majority(["$2$", None, "3", "2 "]) == 0
    assert select_majority([None, None]) is None
    assert select_weighted([0.2, 0.6, 0.5], ["5", "7", "5"]) == 0  # 0.7 > 0.6
    assert select_weighted([0.3, 0.3], ["a", "b"]) == 0
    assert select_weighted([None, 0.1], ["3", "4"]) == 1
    assert canonical_answer(" \\frac{1}{2} ") == canonical_answer("$\\frac {1}{2}$")


def test_hand_computed_accuracy_at_each_n_with_min():
    result = evaluate_best_of_n([P1, P2], "min")
    assert result.ns == [1, 2, 3]
    assert result.best_of_n == {1: 0.0, 2: 100.0, 3: 100.0}
    assert result.weighted == {1: 0.0, 2: 100.0, 3: 50.0}
    assert result.majority == {1: 0.0, 2: 0.0, 3: 0.0}
    assert result.oracle == {1: 0.0, 2: 100.0, 3: 100.0}
    assert result.accuracy == 100.0
    figures = result.as_dict()
    assert figures["accuracy"] == 100.0 and figures["weighted_accuracy"] == 50.0
    assert figures["accuracy_at_n"] == {"1": 0.0, "2": 100.0, "3": 100.0}


@pytest.mark.parametrize("how, expected", [("min", 100.0), ("last", 100.0), ("mean", 50.0), ("prod", 50.0)])
def test_aggregation_changes_the_pick(how, expected):
    assert evaluate_best_of_n([P1, P2], how).accuracy == expected


def test_without_answers_only_best_of_n_and_oracle():
    result = evaluate_best_of_n([BonProblem("x", [[0.1], [0.9]], [False, True])], "last", ns=[2, 1])
    assert result.ns == [1, 2]
    assert result.best_of_n == {1: 0.0, 2: 100.0}
    assert result.weighted is None and "weighted_accuracy" not in result.as_dict()


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError, match="problem 'x': 1 scored candidates, 2 labels"):
        evaluate_best_of_n([BonProblem("x", [[0.1]], [False, True])], "min")


def test_best_pick_per_problem_by_aggregation_and_n():
    # P1: min picks c1 (correct), last picks c1, mean picks c2 (wrong); at n=1 only c0 (wrong).
    assert best_pick_correct(P1, "min", 3) and best_pick_correct(P1, "last", 3)
    assert not best_pick_correct(P1, "mean", 3)
    assert not best_pick_correct(P1, "min", 1)
    assert best_pick_correct(P2, "min", 2)  # the unscored c0 ranks last


def test_smallest_n_within_budget_allows_two_percent_less():
    steps = {1: 400, 4: 1600, 8: 3200}
    assert smallest_n_within_budget(steps, 900) == 4
    assert smallest_n_within_budget(steps, 3260) == 8  # 3200 >= 0.98 * 3260
    assert smallest_n_within_budget(steps, 3300) is None


def test_each_half_uses_the_aggregation_that_won_on_the_other_half() -> None:
    from rprm_ray.evaluation.bon import cross_fitted_aggregations

    # Two candidates per problem: the first right. "last" picks it when its last step scores
    # higher, "min" when its lowest step does.
    def problem(i: int, last_wins: bool) -> BonProblem:
        right, wrong = ([0.2, 0.9], [0.5, 0.6]) if last_wins else ([0.6, 0.7], [0.5, 0.8])
        return BonProblem(id=f"p{i}", step_scores=[right, wrong], correct=[True, False])

    # Even problems: "last" picks the right answer; odd ones: "min" does.
    problems = [problem(i, last_wins=i % 2 == 0) for i in range(6)]
    picks, used = cross_fitted_aggregations(problems, ("min", "last"), 2)
    # Even problems take the odd half's winner (min) and fail; odd ones take last and fail too: the
    # honest figure is 0%, where choosing on all problems would report 50% for either one.
    assert used == ("min", "last") and picks == ["min", "last"] * 3
    assert not any(best_pick_correct(p, how, 2) for p, how in zip(problems, picks, strict=True))
    # Ties go to the earlier aggregation.
    same = [problem(i, last_wins=True) for i in range(4)]
    assert cross_fitted_aggregations(same, ("min", "last", "mean"), 2)[1] == ("last", "last")
