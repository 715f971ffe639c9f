"""Best-of-N evaluation over scored candidate solutions (method_spec A9).

Three selectors over the first n candidates of each problem:
- best-of-n: the candidate with the highest aggregated step score (ties -> earliest candidate; a
  candidate with no score ranks below every scored one);
- weighted best-of-n: the answer with the largest sum of solution scores (missing score = 0);
- majority vote: the most frequent answer (ties -> the answer that appeared first).
Accuracy (percent) is computed at n = 1, 2, 4, ... and the full N; "oracle" is pass@n (any of the
first n candidates correct), the ceiling every selector shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rprm_ray.scoring import Aggregation, aggregate


@dataclass(frozen=True)
class BonProblem:
    id: str
    step_scores: list[list[float | None]]  # per candidate, per step
    correct: list[bool]  # per candidate
    answers: list[str | None] | None = None  # per candidate final answer, where known


def default_ns(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max, and n_max itself."""
    ns, n = [], 1
    while n < n_max:
        ns.append(n)
        n *= 2
    return [*ns, n_max] if n_max >= 1 else []


def canonical_answer(answer: str | None) -> str | None:
    """Answers that differ only in spacing or math delimiters vote together."""
    if answer is None:
        return None
    text = "".join(answer.split()).strip("$")
    return text or None


def select_best(solution_scores: Sequence[float | None]) -> int:
    best = 0
    for i, score in enumerate(solution_scores):
        current = solution_scores[best]
        if score is not None and (current is None or score > current):
            best = i
    return best


def _first_index_per_answer(answers: Sequence[str | None]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        key = canonical_answer(answer)
        if key is not None and key not in first:
            first[key] = i
    return first


def select_weighted(solution_scores: Sequence[float | None], answers: Sequence[str | None]) -> int | None:
    """Index of the first candidate of the answer with the largest score sum; None if no
    candidate has an answer."""
    first = _first_index_per_answer(answers)
    totals = dict.fromkeys(first, 0.0)
    for score, answer in zip(solution_scores, answers, strict=True):
        key = canonical_answer(answer)
        if key is not None and score is not None:
            totals[key] += score
    if not totals:
        return None
    # max() keeps the first maximum; iterating in order of first appearance breaks ties earliest.
    winner = max(sorted(first, key=first.__getitem__), key=lambda k: totals[k])
    return first[winner]


def select_majority(answers: Sequence[str | None]) -> int | None:
    first = _first_index_per_answer(answers)
    counts = dict.fromkeys(first, 0)
    for answer in answers:
        key = canonical_answer(answer)
        if key is not None:
            counts[key] += 1
    if not counts:
        return None
    winner = max(sorted(first, key=first.__getitem__), key=lambda k: counts[k])
    return first[winner]


def best_pick_correct(p: BonProblem, how: Aggregation, n: int) -> bool:
    """Whether Best-of-n's pick among the first n candidates is correct."""
    return p.correct[:n][select_best([aggregate(s, how) for s in p.step_scores[:n]])]


def cross_fitted_aggregations(problems: Sequence[BonProblem], aggregations: Sequence[Aggregation],
                              n: int) -> tuple[list[Aggregation], tuple[Aggregation, Aggregation]]:
    """Which aggregation Best-of-N uses on each problem, never chosen on that problem's own result:
    the problems fall in two halves by position (even, odd), and each half uses the aggregation
    that scores best at `n` on the other half (ties: the earlier in `aggregations`). Returns the
    per-problem aggregation and the one each half uses. The accuracy over all problems with these
    picks is an honest figure for "Best-of-N with its aggregation chosen on held-out data"
    (`evaluation.cross_fit`)."""
    from rprm_ray.evaluation.cross_fit import cross_fitted_choice

    return cross_fitted_choice(problems, list(aggregations),
                               lambda how, half: sum(best_pick_correct(p, how, n) for p in half))


def smallest_n_within_budget(steps_at_n: dict[int, int], budget: int, slack: float = 0.02) -> int | None:
    """The smallest n whose first-n candidates spend at least `budget` generated steps (less
    `slack`: beam search and Best-of-N at equal settings differ by a step or two); None if even the
    largest n spends less."""
    fair = [n for n in sorted(steps_at_n) if steps_at_n[n] >= (1 - slack) * budget]
    return fair[0] if fair else None


@dataclass(frozen=True)
class BonResult:
    aggregation: str
    ns: list[int]
    best_of_n: dict[int, float]
    oracle: dict[int, float]
    weighted: dict[int, float] | None  # None when the problems carry no answers
    majority: dict[int, float] | None

    @property
    def accuracy(self) -> float:
        """Best-of-N accuracy at the full N."""
        return self.best_of_n[self.ns[-1]]

    def as_dict(self) -> dict:
        out = {
            "accuracy": self.accuracy,
            "aggregation": self.aggregation,
            "n": self.ns[-1],
            "accuracy_at_n": {str(n): v for n, v in self.best_of_n.items()},
            "oracle_at_n": {str(n): v for n, v in self.oracle.items()},
        }
        if self.weighted is not None and self.majority is not None:
            out["weighted_accuracy"] = self.weighted[self.ns[-1]]
            out["majority_accuracy"] = self.majority[self.ns[-1]]
            out["weighted_at_n"] = {str(n): v for n, v in self.weighted.items()}
            out["majority_at_n"] = {str(n): v for n, v in self.majority.items()}
        return out


def evaluate_best_of_n(
    problems: Sequence[BonProblem], how: Aggregation, ns: Sequence[int] | None = None
) -> BonResult:
    if not problems:
        raise ValueError("best-of-n: no problems to evaluate")
    for p in problems:
        if len(p.step_scores) != len(p.correct) or (p.answers is not None and len(p.answers) != len(p.correct)):
            raise ValueError(
                f"best-of-n: problem {p.id!r}: {len(p.step_scores)} scored candidates, {len(p.correct)} labels"
                + (f", {len(p.answers)} answers" if p.answers is not None else "")
            )
    n_max = max(len(p.correct) for p in problems)
    ns = sorted(set(ns)) if ns else default_ns(n_max)
    with_answers = all(p.answers is not None for p in problems)
    best, oracle, weighted, majority = {}, {}, {}, {}
    for n in ns:
        hits = {"best": 0, "oracle": 0, "weighted": 0, "majority": 0}
        for p in problems:
            correct = p.correct[:n]
            solution_scores = [aggregate(s, how) for s in p.step_scores[:n]]
            hits["best"] += correct[select_best(solution_scores)]
            hits["oracle"] += any(correct)
            if with_answers:
                answers = p.answers[:n]
                w = select_weighted(solution_scores, answers)
                m = select_majority(answers)
                hits["weighted"] += w is not None and correct[w]
                hits["majority"] += m is not None and correct[m]
        best[n] = 100.0 * hits["best"] / len(problems)
        oracle[n] = 100.0 * hits["oracle"] / len(problems)
        weighted[n] = 100.0 * hits["weighted"] / len(problems)
        majority[n] = 100.0 * hits["majority"] / len(problems)
    return BonResult(
        aggregation=how,
        ns=list(ns),
        best_of_n=best,
        oracle=oracle,
        weighted=weighted if with_answers else None,
        majority=majority if with_answers else None,
    )
