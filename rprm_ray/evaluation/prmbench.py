"""PRMBench PRMScore (method_spec A8; PRMBench's evaluator as copied into R-PRM's
`new_get_result.py`).

Every step of a modified solution is labeled by the PRM: correct when its score >= threshold (a
missing score counts as correct: no valid critique is no evidence of an error). Positive class =
a correct step. Over the steps of one category: TP = correct step predicted correct, FN = correct
step predicted wrong, FP = error step predicted correct, TN = error step predicted wrong.
PRMScore = 0.5 * F1(positive) + 0.5 * F1(negative), except Multi-Solution (MS): F1(positive)
only (its solutions have no error steps). Groups average their categories' PRMScores; Overall
pools the counts of every category. Error-step indices in the data are 1-based.

F1 = 2TP / (2TP + FP + FN), and 0 when that denominator is 0 (the reference script's -1 for an
undefined precision would poison the averages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rprm_ray.data import DataError, PRMBenchItem

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_THRESHOLD = 0.5

# PRMBench's classification names (spelling as in the data) -> the paper's abbreviations.
CATEGORIES: dict[str, str] = {
    "redundency": "NR",
    "circular": "NCL",
    "counterfactual": "ES",
    "step_contradiction": "SC",
    "domain_inconsistency": "DC",
    "confidence": "CI",
    "missing_condition": "PS",
    "deception": "DR",
    "multi_solutions": "MS",
}
GROUPS: dict[str, tuple[str, ...]] = {
    "Simplicity": ("NR", "NCL"),
    "Soundness": ("ES", "SC", "DC", "CI"),
    "Sensitivity": ("PS", "DR", "MS"),
}
POSITIVE_F1_ONLY = ("MS",)


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, other: Confusion) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn

    def positive_f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 0.0

    def negative_f1(self) -> float:
        denominator = 2 * self.tn + self.fn + self.fp
        return 2 * self.tn / denominator if denominator else 0.0

    def prm_score(self, positive_only: bool = False) -> float:
        """In percent."""
        if positive_only:
            return 100.0 * self.positive_f1()
        return 100.0 * (0.5 * self.positive_f1() + 0.5 * self.negative_f1())


def step_confusion(error_steps_1based: Sequence[int], predicted_correct: Sequence[bool]) -> Confusion:
    errors = {i - 1 for i in error_steps_1based}
    conf = Confusion()
    for i, positive in enumerate(predicted_correct):
        if i in errors:
            if positive:
                conf.fp += 1
            else:
                conf.tn += 1
        elif positive:
            conf.tp += 1
        else:
            conf.fn += 1
    return conf


@dataclass(frozen=True)
class PRMBenchResult:
    categories: dict[str, float]  # abbreviation (or raw name if unknown) -> PRMScore, percent
    groups: dict[str, float]  # Simplicity / Soundness / Sensitivity -> mean PRMScore of its categories
    overall: float  # PRMScore of the pooled counts
    confusion: dict[str, Confusion] = field(default_factory=dict)
    num_missing_scores: int = 0

    def as_dict(self) -> dict:
        return {
            "overall": self.overall,
            "groups": dict(self.groups),
            "categories": dict(self.categories),
            "num_missing_scores": self.num_missing_scores,
        }


def evaluate_prmbench(
    items: Sequence[PRMBenchItem],
    scores: Mapping[str, Sequence[float | None]],
    threshold: float = DEFAULT_THRESHOLD,
    where: str = "scores",
) -> PRMBenchResult:
    if not items:
        raise DataError(f"{where}: no PRMBench items to evaluate")
    per_category: dict[str, Confusion] = {}
    total = Confusion()
    missing = 0
    for item in items:
        if item.id not in scores:
            raise DataError(f"{where}: no step_scores for id {item.id!r}")
        step_scores = list(scores[item.id])
        if len(step_scores) != len(item.steps):
            raise DataError(
                f"{where}: id {item.id!r}: {len(step_scores)} step scores for {len(item.steps)} steps"
            )
        missing += sum(s is None for s in step_scores)
        predicted = [s is None or s >= threshold for s in step_scores]
        conf = step_confusion(item.error_steps, predicted)
        name = CATEGORIES.get(item.classification, item.classification)
        per_category.setdefault(name, Confusion()).add(conf)
        total.add(conf)
    categories = {
        name: conf.prm_score(positive_only=name in POSITIVE_F1_ONLY) for name, conf in per_category.items()
    }
    groups = {}
    for group, members in GROUPS.items():
        present = [categories[m] for m in members if m in categories]
        if present:
            groups[group] = sum(present) / len(present)
    return PRMBenchResult(
        categories=categories,
        groups=groups,
        overall=total.prm_score(),
        confusion=per_category,
        num_missing_scores=missing,
    )


def labeled_steps_table(items: Sequence[PRMBenchItem]) -> pa.Table:
    """Every step of every item as a `labeled_steps` row (PRMBench scores all steps)."""
    from rprm_ray.batches import from_rows

    rows = []
    for item in items:
        errors = {i - 1 for i in item.error_steps}
        for i, step in enumerate(item.steps):
            rows.append(
                {
                    "problem_id": item.id,
                    "solution_id": item.id,
                    "step_idx": i,
                    "question": item.question,
                    "previous_steps": item.steps[:i],
                    "now_step": step,
                    "label": i not in errors,
                }
            )
    return from_rows(rows, "labeled_steps")
