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
    skipped = _guard_lengths(run, tables) if run.recipe.models.too_long == "skip" else {}
    metrics = {name: t.num_rows for name, (t, _) in tables.items()}
    metrics.update(skipped)
    return StageResult(metrics=metrics, tables=tables)


def _guard_lengths(run: Run, tables: dict) -> dict[str, int]:
    """Leave out problems and labeled solutions whose prompts cannot fit their model (rprm_ray.lengths)."""
    from rprm_ray import lengths
    from rprm_ray.chat import role_style

    r = run.recipe
    counts: dict[str, int] = {}
    policy_tok = lengths.role_tokenizer(r, "policy")
    for name in ("problems_train", "problems_eval"):
        kept, n = lengths.guard_problems(tables[name][0], role_style(r, "policy"), policy_tok,
                                         lengths.policy_budget(r))
        tables[name] = (kept, "problems")
        counts[f"skipped_too_long_{name}"] = n
    judge_tok = lengths.role_tokenizer(r, "judge")
    for name in ("steps_train", "steps_eval"):
        kept, n = lengths.guard_labeled_steps(tables[name][0], role_style(r, "judge"), judge_tok,
                                              lengths.judge_budget(r))
        tables[name] = (kept, "labeled_steps")
        counts[f"skipped_too_long_{name}_solutions"] = n
    counts["skipped_too_long"] = sum(counts.values())
    return counts


def problems(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"problems_{split}", "problems")


def labeled_steps(run: Run, split: str) -> pa.Table:
    return run.table(DATA, f"steps_{split}", "labeled_steps")
