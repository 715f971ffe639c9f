"""PRM-guided Best-of-N (R-PRM A9): N full solutions per prompt, every step judged, the solution
with the highest aggregated score (min / last / prod / mean) wins; ties go to the earliest
sample. Weighted Best-of-N (sum of scores per answer) and majority vote come from the same
samples. One generator call and one judge call per batch of prompts."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SamplingConfig, SearchConfig
from rprm_ray.evaluation.bon import select_majority, select_weighted
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    Grader,
    StepGenerator,
    StepScorer,
    argmax_first,
    exact_match,
    problem_states,
    read_step_scores,
    result_row,
    results_table,
    run_in_chunks,
    solution_score,
)


def vote_answers(
    answers: Sequence[str | None], scores: Sequence[float | None]
) -> tuple[str | None, str | None]:
    """(weighted Best-of-N answer, majority answer), via rprm_ray.evaluation.bon's selectors."""
    weighted, majority = select_weighted(scores, answers), select_majority(answers)
    return (
        answers[weighted] if weighted is not None else None,
        answers[majority] if majority is not None else None,
    )


def solution_id(problem_id: str, sample_idx: int) -> str:
    return f"{problem_id}/s{sample_idx}"


def score_solutions(solutions: pa.Table, scorer: StepScorer) -> dict[str, list[float | None]]:
    """All steps of all solutions in one judge call -> {solution_id: [score per step]}."""
    return scores_by_solution(solutions, judge_solution_steps(solutions, scorer))


def judge_solution_steps(solutions: pa.Table, scorer: StepScorer) -> pa.Table:
    """The judge's `step_scores` table for every step of every solution (one judge call)."""
    rows = [
        {
            "problem_id": sol["problem_id"],
            "solution_id": solution_id(sol["problem_id"], sol["sample_idx"]),
            "step_idx": idx,
            "question": sol["question"],
            "previous_steps": sol["steps"][:idx],
            "now_step": step,
            "label": None,
        }
        for sol in solutions.to_pylist()
        for idx, step in enumerate(sol["steps"])
    ]
    if not rows:
        return batches.empty("step_scores")
    labeled = batches.from_rows(rows, "labeled_steps")
    answer = scorer.score_steps(labeled)
    step_scores = batches.validate(answer[1] if isinstance(answer, tuple) else answer, "step_scores",
                                   where="judge.score_steps")
    read_step_scores(step_scores, labeled)  # every asked step answered, or the judge's error is named
    return step_scores


def scores_by_solution(solutions: pa.Table, step_scores: pa.Table) -> dict[str, list[float | None]]:
    """{solution_id: [score per step]} for every solution, from a `step_scores` table."""
    by_key = {
        (sid, idx): score
        for sid, idx, score in zip(
            step_scores.column("solution_id").to_pylist(),
            step_scores.column("step_idx").to_pylist(),
            step_scores.column("score").to_pylist(),
            strict=True,
        )
    }
    out: dict[str, list[float | None]] = {}
    for pid, sample_idx, steps in zip(
        solutions.column("problem_id").to_pylist(),
        solutions.column("sample_idx").to_pylist(),
        solutions.column("steps").to_pylist(),
        strict=True,
    ):
        sid = solution_id(pid, sample_idx)
        out[sid] = [by_key[(sid, idx)] for idx in range(len(steps))]
    return out


def solution_sampling(cfg: SearchConfig) -> SamplingConfig:
    """`search.sampling.max_new_tokens` is a per-step budget (the step-wise strategies stop each
    call at a step); a whole solution gets room for `max_depth` steps, as the step-wise searches do."""
    return cfg.sampling.model_copy(update={"max_new_tokens": cfg.sampling.max_new_tokens * cfg.max_depth})


def run_best_of_n(
    problems: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    grade: Grader = exact_match,
) -> pa.Table:
    """Results table (rprm_ray.search.base.RESULTS_SCHEMA), one row per problem."""

    sampling = solution_sampling(cfg)

    def run_chunk(chunk: pa.Table) -> pa.Table:
        states = problem_states(chunk)
        solutions = batches.validate(
            generator.generate(chunk, cfg.samples_per_prompt, sampling),
            "solutions",
            where="generator.generate",
        )
        step_scores = score_solutions(solutions, judge)
        by_problem: dict[str, list[dict]] = {s.problem_id: [] for s in states}
        for sol in sorted(solutions.to_pylist(), key=lambda r: r["sample_idx"]):
            if sol["problem_id"] not in by_problem:
                raise batches.BatchError(
                    f"generator.generate: solutions row for problem_id {sol['problem_id']!r}, "
                    "which was not requested"
                )
            by_problem[sol["problem_id"]].append(sol)
        rows = []
        for state in states:
            sols = by_problem[state.problem_id]
            if not sols:
                raise batches.BatchError(
                    f"generator.generate: no solution for problem_id {state.problem_id!r}"
                )
            per_step = [step_scores[solution_id(s["problem_id"], s["sample_idx"])] for s in sols]
            scores = [solution_score(ss, cfg.aggregation) for ss in per_step]
            answers = [
                s["answer"] if s["answer"] is not None else style.extract_answer(s["steps"]) for s in sols
            ]
            state.candidate_steps = sum(len(s["steps"]) for s in sols)
            state.judge_calls = sum(len(ss) for ss in per_step)
            state.depth = max(len(s["steps"]) for s in sols)
            best = argmax_first(scores)
            rows.append(
                result_row(
                    state,
                    "bon",
                    sols[best]["steps"],
                    answer=answers[best],
                    finished=sols[best]["finished"],
                    score=scores[best],
                    grade=grade,
                    num_completions=len(sols),
                    votes=vote_answers(answers, scores),
                )
            )
        return results_table(rows)

    return run_in_chunks(problems, cfg.batch_prompts, run_chunk, cfg.concurrent_chunks)
