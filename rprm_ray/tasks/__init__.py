"""Worlds the driver trains and evaluates on, behind one interface (`tasks.base.Task`).

`make_task(recipe)` picks the implementation from `task.kind`: the embedded arithmetic world
(`arith`, compact prompts) or real datasets (`dataset`, usually paper prompts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rprm_ray.tasks.base import Task, TaskError

if TYPE_CHECKING:
    from rprm_ray.config import Recipe

__all__ = ["Task", "TaskError", "make_task"]


def make_task(recipe: Recipe) -> Task:
    from rprm_ray.chat import role_style

    # The policy's style: SFT rows and the generator's prompts render the same way.
    style = role_style(recipe, "policy")
    if recipe.task.kind == "arith":
        from rprm_ray.tasks.arith_task import ArithTask

        return ArithTask(recipe.task, style)
    if recipe.task.kind == "dataset":
        from rprm_ray.tasks.dataset import DatasetTask

        return DatasetTask(recipe.task, style)
    raise TaskError(f"task.kind {recipe.task.kind!r}: no such task (known: arith, dataset)")
