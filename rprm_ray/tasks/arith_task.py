"""`ArithTask`: the embedded arithmetic world (rprm_ray/tasks/arith.py, its teacher in
arith_teacher.py, its tables in arith_tables.py) behind the Task interface.

The tables are exactly those of the arith_tables functions with the recipe's TaskConfig: labeled
steps use seed task.seed for train and task.seed + 1 for eval (as the data stage always has), so a
run switched from direct arith calls to the Task keeps its data.
"""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.config import TaskConfig
from rprm_ray.prompts import PromptStyle
from rprm_ray.tasks import arith, arith_tables, arith_teacher
from rprm_ray.tasks.base import Split, Task, TaskError, check_split


class ArithTask(Task):
    kind = "arith"

    def __init__(self, task_cfg: TaskConfig, style: PromptStyle) -> None:
        if style.name != arith.STYLE.name:
            raise TaskError(
                f"task.kind 'arith' is written in the {arith.STYLE.name!r} style, got models.prompt_style "
                f"{style.name!r}"
            )
        self.cfg = task_cfg
        self.style = style
        self._splits: tuple[list[arith.ArithProblem], list[arith.ArithProblem]] | None = None

    def split_problems(self, split: Split) -> list[arith.ArithProblem]:
        # make_splits draws every problem of both splits (~1.7 s for 20k): once per task.
        if self._splits is None:
            self._splits = arith.make_splits(self.cfg)
        train, held_out = self._splits
        return train if check_split(split) == "train" else held_out

    def problems(self, split: Split) -> pa.Table:
        return arith.problems_table(self.split_problems(split))

    def labeled_steps(self, split: Split) -> pa.Table:
        seed = self.cfg.seed if check_split(split) == "train" else self.cfg.seed + 1
        return arith_tables.labeled_steps_table(self.split_problems(split), seed, self.cfg.error_rate)

    @staticmethod
    def arith_problems(problems: pa.Table) -> list[arith.ArithProblem]:
        """Problems of a `problems` table, re-solved from their questions (a table carries no steps)."""
        return [arith.make_problem(r["problem_id"], r["question"]) for r in problems.to_pylist()]

    def policy_sft(self, problems: pa.Table) -> pa.Table:
        return arith_tables.policy_sft_table(self.arith_problems(problems))

    def pairwise_sft(self, problems: pa.Table, num_examples: int, seed: int) -> pa.Table:
        return arith_tables.pairwise_sft_table(self.arith_problems(problems), seed, num_examples, self.style)

    def worked_step_sft(self, problems: pa.Table, num_examples: int, seed: int,
                        style: PromptStyle | None = None) -> pa.Table:
        return arith_tables.worked_step_table(self.arith_problems(problems), seed, num_examples, style or self.style)

    def grade(self, question: str, reference: str | None, answer: str | None) -> bool:
        # Without a reference the expression itself gives one.
        expected = reference if reference is not None else arith.make_problem("grade", question).answer
        return arith.is_correct_answer(arith.ArithProblem("grade", question, (), expected), answer)

    @property
    def has_step_labels(self) -> bool:
        return True

    def step_is_right(self, question: str, previous_steps: list[str], step: str) -> bool:
        # The world's one right next step, written as the reference solutions write it.
        return step.strip() == arith.expected_step(question, list(previous_steps))

    def judges_own_step(self, judgment: str) -> str | None:
        first = judgment.split("\n", 1)[0].strip()
        return arith_teacher.unworked_step(first[2:]) if first.startswith("R:") else None

    def critique_is_sound(self, critique: str) -> bool:
        return arith_teacher.critique_is_sound(critique)

    @property
    def has_programmatic_teacher(self) -> bool:
        return True

    def teacher_critique(self, question: str, previous_steps: list[str], now_step: str) -> str:
        return arith_teacher.teacher_critique(question, list(previous_steps), now_step)
