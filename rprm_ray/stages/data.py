"""Stage `data`: the task's problem splits and labeled steps, written once per run so every later
stage (and a resumed run) reads exactly the same rows."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.loop import Run, StageResult

DATA = "iter_0/data"


def data_stage(run: Run) -> StageResult:
    task = run.task
    tables = {
        "problems_train": (task.problems("train"), "problems"),
        "problems_eval": (task.problems("eval"), "problems"),
        # Labeled solutions (reference or with one error), ProcessBench-style expansion.
        "steps_train": (task.labeled_steps("train"), "labeled_steps"),
        "steps_eval": (task.labeled_steps("eval"), "labeled_steps"),
    }
    metrics = {name: t.num_rows for name, (t, _) in tables.items()}
    return StageResult(metrics=metrics, tables=tables)


def problems(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"problems_{split}", "problems")


def labeled_steps(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"steps_{split}", "labeled_steps")
