"""`DatasetTask`: real math datasets behind the Task interface (`task.kind: dataset`).

Sources come from `task.dataset` (local JSON / JSONL files, or hub names where a network exists)
and are read with the benchmark loaders of `rprm_ray.data`, whose `DataError` names the file:
- problems: `train_problems` (hub split `dataset.split`) / `eval_problems` (hub split "test"), the
  first task.train_problems / task.eval_problems rows. Train rows whose question also occurs in
  the eval source are dropped (counted in `stats["train_dropped_overlap"]`). A row without an
  `answer` field (NuminaMath-CoT) takes the last \\boxed{} of its `solution` as its answer.
- labeled steps: ProcessBench-format files (`train_labeled_solutions` / `eval_labeled_solutions`:
  id, generator, problem, steps, final_answer_correct, label), expanded by
  `evaluation.processbench.labeled_steps_table` (steps up to and including the first error). All
  solutions of the file are used. Not configured -> an empty table and one warning.
- policy SFT: the reference solution cut into steps by `tasks.solution_steps` (MATH / NuminaMath
  `solution`, or GSM8K's worked `answer`); problems without one are skipped and counted in
  `stats["policy_sft_skipped"]`.
- pairwise SFT: PSRLM's EFT examples are pairwise judgments written by a stronger model, which a
  plain dataset does not contain: an empty table here; the policy SFT stage has the recipe's
  teacher judge pairs of labeled steps instead (`rprm_ray.eft`).
- grading: math-verify (`evaluation.math_accuracy.AnswerGrader`); where it cannot parse either
  side, whitespace-insensitive string equality decides (counted in
  `stats["grade_string_fallbacks"]`).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from rprm_ray.batches import empty, from_rows, validate
from rprm_ray.config import DatasetSources, TaskConfig
from rprm_ray.data import load_math_problems, load_processbench, read_rows
from rprm_ray.evaluation.math_accuracy import AnswerGrader, extract_boxed
from rprm_ray.evaluation.processbench import labeled_steps_table
from rprm_ray.prompts import PromptStyle
from rprm_ray.tasks.base import Split, Task, TaskError, check_split
from rprm_ray.tasks.solution_steps import gsm8k_steps, solution_steps

logger = logging.getLogger(__name__)

EVAL_HUB_SPLIT = "test"
# Parsed answers kept for reuse: a reference is graded against every sample of its problem, and
# one math-verify parse costs milliseconds to tens of milliseconds.
MAX_CACHED_PARSES = 50_000


def _normalized(text: str) -> str:
    return " ".join(text.split())


def reference_steps(row: dict[str, Any]) -> list[str] | None:
    """The worked reference solution of a raw dataset row as steps, or None where it has none."""
    solution = row.get("solution")
    if isinstance(solution, str) and solution.strip():
        return solution_steps(solution)
    answer = row.get("answer")
    if isinstance(answer, str) and "####" in answer:
        return gsm8k_steps(answer)
    return None


class DatasetTask(Task):
    kind = "dataset"

    def __init__(self, task_cfg: TaskConfig, style: PromptStyle) -> None:
        if task_cfg.dataset is None:
            raise TaskError("task.kind 'dataset' needs task.dataset (train_problems, eval_problems, ...)")
        self.cfg = task_cfg
        self.sources: DatasetSources = task_cfg.dataset
        self.style = style
        # What the task left out, for the stage's metrics.
        self.stats: dict[str, int] = {}
        self._all_problems: dict[str, pa.Table] = {}
        self._problems: dict[str, pa.Table] = {}
        self._raw: dict[str, dict[str, dict[str, Any]]] = {}
        self._labeled: dict[str, pa.Table] = {}
        self._warned: set[str] = set()
        self._grader: AnswerGrader | None = None
        self._parsed: dict[str, list[Any] | None] = {}

    # ---- sources ------------------------------------------------------------------------

    def _source(self, split: Split) -> tuple[str, str]:
        if check_split(split) == "train":
            return self.sources.train_problems, self.sources.split
        return self.sources.eval_problems, EVAL_HUB_SPLIT

    def _raw_rows(self, split: Split) -> dict[str, dict[str, Any]]:
        """problem_id -> the source row (solution and raw answer are not in a `problems` table).
        `load_math_problems` emits one problem per row in file order, so rows align by index."""
        if split not in self._raw:
            source, hub_split = self._source(split)
            rows = read_rows(source, split=hub_split)
            ids = self._source_problems(split).column("problem_id").to_pylist()
            if len(rows) != len(ids):
                raise TaskError(f"{source}: {len(rows)} rows but {len(ids)} problems were loaded from it")
            self._raw[split] = dict(zip(ids, rows, strict=True))
        return self._raw[split]

    def _source_problems(self, split: Split) -> pa.Table:
        """Every problem of the split's source, answers completed from the solutions."""
        if split not in self._all_problems:
            source, hub_split = self._source(split)
            table = load_math_problems(source, split=hub_split)
            self._all_problems[split] = table  # _raw_rows aligns with this table: set it first
            if table.column("answer").null_count:
                table = self._answers_from_solutions(split, table)
            self._all_problems[split] = table
        return self._all_problems[split]

    def _answers_from_solutions(self, split: Split, table: pa.Table) -> pa.Table:
        raw = self._raw_rows(split)
        rows = table.to_pylist()
        for r in rows:
            solution = raw[r["problem_id"]].get("solution")
            if r["answer"] is None and isinstance(solution, str):
                r["answer"] = extract_boxed(solution)
        self.stats[f"{split}_without_answer"] = sum(r["answer"] is None for r in rows)
        return from_rows(rows, "problems")

    # ---- Task ---------------------------------------------------------------------------

    def problems(self, split: Split) -> pa.Table:
        split = check_split(split)
        if split not in self._problems:
            table = self._source_problems(split)
            if split == "train":
                table = self._without_eval_questions(table)
            limit = self.cfg.train_problems if split == "train" else self.cfg.eval_problems
            self._problems[split] = table.slice(0, limit)
        return self._problems[split]

    def _without_eval_questions(self, train: pa.Table) -> pa.Table:
        held_out = {_normalized(q) for q in self._source_problems("eval").column("question").to_pylist()}
        keep = [_normalized(q) not in held_out for q in train.column("question").to_pylist()]
        self.stats["train_dropped_overlap"] = keep.count(False)
        if not all(keep):
            logger.warning(
                "task: dropped %d training problems whose question is also in %s",
                keep.count(False),
                self.sources.eval_problems,
            )
        return validate(train.filter(pa.array(keep)), "problems")

    def labeled_steps(self, split: Split) -> pa.Table:
        split = check_split(split)
        path = (
            self.sources.train_labeled_solutions if split == "train" else self.sources.eval_labeled_solutions
        )
        if path is None:
            self._warn_once(
                f"labeled-{split}",
                f"task.dataset.{split}_labeled_solutions is not set: no labeled {split} steps (the "
                "R-PRM judge stages and first-error F1 need a ProcessBench-format file)",
            )
            return empty("labeled_steps")
        if split not in self._labeled:
            solutions = load_processbench(path)
            if self.cfg.max_labeled_solutions is not None:
                solutions = solutions[: self.cfg.max_labeled_solutions]
            self._labeled[split] = labeled_steps_table(solutions, truncate=True)
        return self._labeled[split]

    def policy_sft(self, problems: pa.Table) -> pa.Table:
        rows, skipped = [], 0
        for r in problems.to_pylist():
            raw = self._find_raw_row(r["problem_id"])
            steps = reference_steps(raw) if raw is not None else None
            if not steps:
                skipped += 1
                continue
            rows.append(
                {
                    "example_id": f"policy/{r['problem_id']}",
                    "kind": "policy",
                    "prompt": self.style.policy_prompt(r["question"]),
                    "completion": self.style.format_solution(steps),
                }
            )
        self.stats["policy_sft_skipped"] = skipped
        if skipped:
            logger.warning(
                "task: %d of %d problems have no usable reference solution (no `solution` with a "
                "\\boxed answer, nor a GSM8K worked answer): left out of policy SFT",
                skipped,
                problems.num_rows,
            )
        return from_rows(rows, "sft_examples") if rows else empty("sft_examples")

    def _find_raw_row(self, problem_id: str) -> dict[str, Any] | None:
        # Training problems are the usual case; the eval source is read only for ids not in train.
        for split in ("train", "eval"):
            row = self._raw_rows(split).get(problem_id)
            if row is not None:
                return row
        return None

    def pairwise_sft(self, problems: pa.Table, num_examples: int, seed: int) -> pa.Table:
        # Written by the recipe's teacher in the policy SFT stage (rprm_ray.eft), not by the task.
        return empty("sft_examples")

    def grade(self, question: str, reference: str | None, answer: str | None) -> bool:
        if reference is None or answer is None:
            return False
        if self._grader is None:
            self._grader = AnswerGrader()
        gold, predicted = self._parse(reference), self._parse(answer)
        if gold is None or predicted is None:
            self.stats["grade_string_fallbacks"] = self.stats.get("grade_string_fallbacks", 0) + 1
            return _normalized(reference) == _normalized(answer)
        return self._grader.equal(gold, predicted)

    def _parse(self, text: str) -> list[Any] | None:
        assert self._grader is not None
        if text not in self._parsed:
            if len(self._parsed) >= MAX_CACHED_PARSES:
                self._parsed.clear()
            self._parsed[text] = self._grader.parse(text)
        return self._parsed[text]

    @property
    def has_programmatic_teacher(self) -> bool:
        return False

    def teacher_critique(self, question: str, previous_steps: list[str], now_step: str) -> str:
        raise TaskError(
            "task.kind 'dataset' has no programmatic teacher (it only knows the arith world): set "
            "models.teacher.kind to 'vllm' or 'openai'"
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("task: %s", message)
