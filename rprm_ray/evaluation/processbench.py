"""ProcessBench first-error evaluation, exactly as R-PRM's `get-GenPRM-Score.py` (method_spec A7).

predicted first error = first step whose score < threshold, else -1 (a missing step score is never
below the threshold: no valid critique is no evidence of an error); error_acc / correct_acc =
100 * share of matches over solutions with / without an error; F1 = their harmonic mean (0 if
both are 0); per subset, and the mean over subsets (the papers' "Avg. F1").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from rprm_ray.data import DataError, ProcessBenchItem

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_THRESHOLD = 0.5


def predicted_first_error(step_scores: Sequence[float | None], threshold: float = DEFAULT_THRESHOLD) -> int:
    for i, score in enumerate(step_scores):
        if score is not None and score < threshold:
            return i
    return -1


def harmonic_f1(error_acc: float, correct_acc: float) -> float:
    if error_acc + correct_acc == 0:
        return 0.0
    return 2 * error_acc * correct_acc / (error_acc + correct_acc)


@dataclass(frozen=True)
class SubsetResult:
    subset: str
    error_acc: float  # percent
    correct_acc: float  # percent
    f1: float  # percent
    num_error: int  # solutions with an erroneous step
    num_correct: int  # solutions with label -1
    num_missing_scores: int  # judged steps without a score (no valid critique)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProcessBenchResult:
    subsets: dict[str, SubsetResult]
    error_acc: float  # mean over subsets
    correct_acc: float  # mean over subsets
    f1: float  # mean of the subset F1s

    def as_dict(self) -> dict:
        return {
            "error_acc": self.error_acc,
            "correct_acc": self.correct_acc,
            "f1": self.f1,
            "subsets": {name: r.as_dict() for name, r in self.subsets.items()},
        }


def judged_steps(item: ProcessBenchItem) -> int:
    """How many steps need a score: up to the first error (later steps cannot change the
    prediction's match), or all of a correct solution's steps."""
    return item.label + 1 if item.label >= 0 else len(item.steps)


def check_scores(
    items: Sequence[ProcessBenchItem], scores: Mapping[str, Sequence[float | None]], where: str = "scores"
) -> None:
    """Every item has a score list covering its judged steps and no more steps than it has."""
    for item in items:
        if item.id not in scores:
            raise DataError(f"{where}: no step_scores for id {item.id!r}")
        got, need = len(scores[item.id]), judged_steps(item)
        if not need <= got <= len(item.steps):
            raise DataError(
                f"{where}: id {item.id!r}: {got} step scores; expected {need}"
                + (f" to {len(item.steps)}" if need < len(item.steps) else "")
                + f" (solution has {len(item.steps)} steps, label {item.label})"
            )


def evaluate_subset(
    items: Sequence[ProcessBenchItem],
    scores: Mapping[str, Sequence[float | None]],
    threshold: float = DEFAULT_THRESHOLD,
    subset: str | None = None,
) -> SubsetResult:
    error_matches: list[bool] = []
    correct_matches: list[bool] = []
    missing = 0
    for item in items:
        step_scores = list(scores[item.id])[: len(item.steps)]
        missing += sum(s is None for s in step_scores[: judged_steps(item)])
        match = predicted_first_error(step_scores, threshold) == item.label
        (error_matches if item.label >= 0 else correct_matches).append(match)
    # An empty group scores 0, as in the reference script.
    error_acc = 100.0 * sum(error_matches) / len(error_matches) if error_matches else 0.0
    correct_acc = 100.0 * sum(correct_matches) / len(correct_matches) if correct_matches else 0.0
    return SubsetResult(
        subset=subset if subset is not None else (items[0].subset if items else ""),
        error_acc=error_acc,
        correct_acc=correct_acc,
        f1=harmonic_f1(error_acc, correct_acc),
        num_error=len(error_matches),
        num_correct=len(correct_matches),
        num_missing_scores=missing,
    )


def evaluate_processbench(
    items: Sequence[ProcessBenchItem],
    scores: Mapping[str, Sequence[float | None]],
    threshold: float = DEFAULT_THRESHOLD,
    where: str = "scores",
) -> ProcessBenchResult:
    """Per-subset results (items grouped by `subset`, in order of appearance) and their means."""
    if not items:
        raise DataError(f"{where}: no ProcessBench items to evaluate")
    check_scores(items, scores, where)
    by_subset: dict[str, list[ProcessBenchItem]] = {}
    for item in items:
        by_subset.setdefault(item.subset, []).append(item)
    subsets = {name: evaluate_subset(group, scores, threshold, name) for name, group in by_subset.items()}
    n = len(subsets)
    return ProcessBenchResult(
        subsets=subsets,
        error_acc=sum(r.error_acc for r in subsets.values()) / n,
        correct_acc=sum(r.correct_acc for r in subsets.values()) / n,
        f1=sum(r.f1 for r in subsets.values()) / n,
    )


def labeled_steps_table(items: Sequence[ProcessBenchItem], truncate: bool = True) -> pa.Table:
    """One `labeled_steps` row per step to judge: problem_id = solution_id = the item id (one
    solution per ProcessBench problem); label True = the step is correct, null = unknown (after
    the first error). With `truncate` (the
    R-PRM expansion) an erroneous solution is expanded only up to its first wrong step, which
    saves the critiques of later steps and leaves the metric unchanged."""
    from rprm_ray.batches import from_rows

    rows = []
    for item in items:
        rows += step_rows(item.id, item.id, item.problem, item.steps, item.label, truncate)
    return from_rows(rows, "labeled_steps")


def step_rows(problem_id: str, solution_id: str, question: str, steps: Sequence[str], first_error: int,
              truncate: bool = True) -> list[dict]:
    """One labeled solution (`first_error` -1: no wrong step) as `labeled_steps` rows; with
    `truncate` only up to and including its first wrong step (the R-PRM expansion)."""
    last = first_error + 1 if truncate and first_error >= 0 else len(steps)
    return [{"problem_id": problem_id, "solution_id": solution_id, "step_idx": i, "question": question,
             "previous_steps": list(steps[:i]), "now_step": steps[i], "label": _step_label(first_error, i)}
            for i in range(last)]


def _step_label(first_error: int, i: int) -> bool | None:
    # ProcessBench labels only the first wrong step: later steps are unknown (null).
    if first_error == -1 or i < first_error:
        return True
    return False if i == first_error else None
