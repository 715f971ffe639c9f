"""The Task interface: everything a driver stage needs from "the world" it trains and evaluates on.

Two implementations, chosen by `task.kind` through `rprm_ray.tasks.make_task(recipe)`:
- `ArithTask` (tasks/arith_task.py): the embedded arithmetic world (tasks/arith.py), compact
  prompt style, exact step labels and a programmatic teacher (tasks/arith_teacher.py), its
  tables drawn in tasks/arith_tables.py;
- `DatasetTask` (tasks/dataset.py): real problem sets (GSM8K / MATH / NuminaMath style) and
  ProcessBench-format labeled solutions, graded with math-verify.

Every table a Task returns is a validated `rprm_ray.batches` kind, so a stage never needs to know
which world it runs in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import pyarrow as pa

from rprm_ray.prompts import PromptStyle

Split = Literal["train", "eval"]
SPLITS: tuple[str, ...] = ("train", "eval")


class TaskError(ValueError):
    """A request the configured task cannot serve; the message names the task kind and the fix."""


def check_split(split: str) -> Split:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; expected 'train' or 'eval'")
    return split  # type: ignore[return-value]


class Task(ABC):
    """One world: problems, labeled steps, supervised seed data, grading and (arith only) a teacher."""

    kind: str
    style: PromptStyle

    @abstractmethod
    def problems(self, split: Split) -> pa.Table:
        """`problems` table of the split (train / eval), at most task.{split}_problems rows."""

    @abstractmethod
    def labeled_steps(self, split: Split) -> pa.Table:
        """`labeled_steps` table, ProcessBench expansion: an erroneous solution contributes its
        steps up to and including the first error (label False there), a correct one all steps."""

    @abstractmethod
    def policy_sft(self, problems: pa.Table) -> pa.Table:
        """`sft_examples` (kind "policy"): prompt = style.policy_prompt(question), completion = the
        reference solution as style.format_solution(steps) (the trainer appends EOS)."""

    @abstractmethod
    def pairwise_sft(self, problems: pa.Table, num_examples: int, seed: int) -> pa.Table:
        """`sft_examples` (kind "pairwise"): PSRLM EFT-style pairwise judge examples."""

    def worked_step_sft(self, problems: pa.Table, num_examples: int, seed: int,
                        style: PromptStyle | None = None) -> pa.Table:
        """`sft_examples` (kind "worked_step"): the judge's own worked step alone, from the
        context (`bootstrap.worked_step_examples`), prompts in `style` (None: the task's); only a
        world that works steps out (arith)."""
        raise NotImplementedError(f"task {type(self).__name__} writes no worked-step examples")

    @abstractmethod
    def grade(self, question: str, reference: str | None, answer: str | None) -> bool:
        """Is `answer` (as style.extract_answer returns it) the right final answer?"""

    @property
    @abstractmethod
    def has_programmatic_teacher(self) -> bool:
        """Whether `teacher_critique` works (models.teacher.kind 'programmatic')."""

    @property
    def has_step_labels(self) -> bool:
        """Whether `step_is_right` works: a programmatic label for any step (arith only)."""
        return False

    def step_is_right(self, question: str, previous_steps: list[str], step: str) -> bool:
        """Whether `step` is a right next step after `previous_steps`, for evaluation only (the
        self-judge's accuracy on the policy's own candidates)."""
        raise TaskError(f"task.kind {self.kind!r} has no programmatic step labels")

    def judges_own_step(self, judgment: str) -> str | None:
        """The step a judgment works out for itself before it compares (the compact judge's `R:`
        line, unworked), for evaluation only; None where the format has no such line."""
        return None

    def critique_is_sound(self, critique: str) -> bool:
        """Whether a judge's critique reaches its verdict by its own stated comparison (checked
        where the format allows: the compact judge's lines); True where it cannot be checked."""
        return True

    @abstractmethod
    def teacher_critique(self, question: str, previous_steps: list[str], now_step: str) -> str:
        """A teacher critique ending in the verdict line; raises TaskError where there is none."""
