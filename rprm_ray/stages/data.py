"""Stage `data`: the embedded world's splits and labeled steps, written once per run."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.loop import Run, StageResult
from rprm_ray.tasks import arith

DATA = "iter_0/data"


def data_stage(run: Run) -> StageResult:
    task = run.recipe.task
    train, held_out = arith.make_splits(task)
    return StageResult(
        metrics={"train_problems": len(train), "eval_problems": len(held_out)},
        tables={
            "problems_train": (arith.problems_table(train), "problems"),
            "problems_eval": (arith.problems_table(held_out), "problems"),
            # Labeled solutions (reference or with one injected error), ProcessBench-style expansion.
            "steps_train": (arith.labeled_steps_table(train, task.seed, task.error_rate), "labeled_steps"),
            "steps_eval": (arith.labeled_steps_table(held_out, task.seed + 1, task.error_rate), "labeled_steps"),
        },
    )


def problems(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"problems_{split}", "problems")


def labeled_steps(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"steps_{split}", "labeled_steps")


def arith_problems(table: pa.Table) -> dict[str, arith.ArithProblem]:
    return {r["problem_id"]: arith.make_problem(r["problem_id"], r["question"]) for r in table.to_pylist()}
