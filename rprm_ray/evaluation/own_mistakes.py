"""A judge evaluation set made of the policy's own mistakes, without Ray.

The injected-error set (the world's labeled solutions) shows the judge errors written by a rule;
the policy makes other ones. Here the policy's own sampled solutions of held-out problems are
labelled step by step by the world's labeler (evaluation only) and expanded as ProcessBench
expands a labeled solution: a correct solution gives all its steps, an erroneous one its steps up
to and including the first error. First-error F1 on this set (`stages.judge.first_error_f1`) says
how the judge does on the mistakes it will meet in a search.
"""

from __future__ import annotations

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.evaluation.processbench import step_rows
from rprm_ray.evaluation.self_judge import StepLabeler


def first_error(question: str, steps: list[str], is_right: StepLabeler) -> int:
    """0-based index of the first step that is not the right next step after the ones before it,
    -1 when every step is right (ProcessBench's label)."""
    for k, step in enumerate(steps):
        if not is_right(question, steps[:k], step):
            return k
    return -1


def own_labeled_steps(solutions: pa.Table, is_right: StepLabeler) -> tuple[pa.Table, dict[str, int]]:
    """`solutions` (the policy's, one or more per problem) -> `labeled_steps` (solution_id
    `own/<problem_id>/<sample_idx>`), and counts of solutions with and without an error. A
    solution with no step is left out: there is nothing to judge."""
    table = batches.validate(solutions, "solutions", where="own_labeled_steps")
    rows: list[dict] = []
    counts = {"own_solutions": 0, "own_solutions_with_error": 0}
    for sol in table.to_pylist():
        steps = [s for s in sol["steps"] if s.strip()]
        if not steps:
            continue
        err = first_error(sol["question"], steps, is_right)
        counts["own_solutions"] += 1
        counts["own_solutions_with_error"] += err >= 0
        rows += step_rows(sol["problem_id"], f"own/{sol['problem_id']}/{sol['sample_idx']}", sol["question"],
                          steps, err)
    return (batches.from_rows(rows, "labeled_steps") if rows else batches.empty("labeled_steps")), counts
