"""R-PRM greedy guided search (A10): at each step sample w candidate next steps, judge each,
keep the best (ties -> the first candidate), stop at a final step or after max_depth steps. No
backtracking at test time. A level where every candidate was dropped (blank) still uses one unit
of depth, as in the paper's script.

`greedy_search` is the same loop as a data generator for the "guided" self-rewarding mode (an
R-PRM judge scores the policy's steps, ARCHITECTURE §4): it also returns (best, worst) step pairs
by score and may roll back on ties (every candidate scored the same), as PSRLM does (B6).

The whole batch advances together: one generator call and one judge call per level."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SearchConfig
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    Grader,
    StepGenerator,
    StepScorer,
    argmax_first,
    candidate_key,
    exact_match,
    expand_prefixes,
    keep_candidates,
    problem_states,
    result_row,
    results_table,
    run_in_chunks,
    score_candidates,
    solution_score,
    step_pair_row,
)


def run_greedy(
    problems: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    grade: Grader = exact_match,
) -> pa.Table:
    """Results table (rprm_ray.search.base.RESULTS_SCHEMA), one row per problem."""
    results, _ = greedy_search(problems, generator, judge, cfg, style, rollback_on_tie=False, grade=grade)
    return results


def greedy_search(
    problems: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    rollback_on_tie: bool = False,
    grade: Grader = exact_match,
) -> tuple[pa.Table, pa.Table]:
    """Results table plus step-level `preference_pairs` (kind "step"): at each kept step, the
    best-scored candidate against the worst, when their scores differ. With `rollback_on_tie`, a
    level whose candidates all scored the same discards the previous step and its pair (max_depth
    bounds the iterations, rollbacks included)."""
    pairs: list[pa.Table] = []

    def run_chunk(chunk: pa.Table) -> pa.Table:
        results, chunk_pairs = _chunk(chunk, generator, judge, cfg, style, rollback_on_tie, grade)
        pairs.append(chunk_pairs)
        return results

    results = run_in_chunks(problems, cfg.batch_prompts, run_chunk)
    return results, batches.concat(pairs, "preference_pairs")


def _chunk(
    chunk: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    rollback_on_tie: bool,
    grade: Grader,
) -> tuple[pa.Table, pa.Table]:
    states = problem_states(chunk)
    steps: dict[str, list[str]] = {s.problem_id: [] for s in states}
    step_scores: dict[str, list[float | None]] = {s.problem_id: [] for s in states}
    step_pairs: dict[str, list[dict | None]] = {s.problem_id: [] for s in states}
    done: set[str] = set()
    for depth in range(cfg.max_depth):
        open_states = [s for s in states if s.problem_id not in done]
        if not open_states:
            break
        prefix_rows, problem_of = [], {}
        for state in open_states:
            state.depth = depth + 1
            prefix_id = f"{state.problem_id}/d{depth}"
            problem_of[prefix_id] = state.problem_id
            prefix_rows.append(
                {
                    "problem_id": state.problem_id,
                    "prefix_id": prefix_id,
                    "question": state.question,
                    "prefix_steps": list(steps[state.problem_id]),
                }
            )
        candidates = expand_prefixes(generator, prefix_rows, cfg.candidates_per_step, cfg.sampling)
        by_id = {s.problem_id: s for s in open_states}
        for row in candidates:
            by_id[problem_of[row["prefix_id"]]].candidate_steps += 1
        kept = keep_candidates(candidates, problem_of, cfg.filter_duplicates)
        scores = score_candidates(judge, kept)
        per_problem: dict[str, list[dict]] = {}
        for row in kept:
            per_problem.setdefault(problem_of[row["prefix_id"]], []).append(row)
        for pid, rows in per_problem.items():
            state = by_id[pid]
            state.judge_calls += len(rows)
            values = [scores[candidate_key(r)] for r in rows]
            best = argmax_first(values)
            tied = len(rows) > 1 and len(set(values)) == 1
            if tied and rollback_on_tie:
                if steps[pid]:
                    steps[pid].pop()
                    step_scores[pid].pop()
                    step_pairs[pid].pop()
                    state.rollbacks += 1
                continue
            worst = _worst_scored(values)
            differ = worst is not None and values[best] != values[worst]
            pair = step_pair_row(style, rows[0]["prefix_id"], rows[best], rows[worst]) if differ else None
            steps[pid].append(rows[best]["step"])
            step_scores[pid].append(values[best])
            step_pairs[pid].append(pair)
            if rows[best]["finished"]:
                done.add(pid)
    out = []
    for state in states:
        pid = state.problem_id
        finished = pid in done
        out.append(
            result_row(
                state,
                "greedy",
                steps[pid],
                answer=style.extract_answer(steps[pid]) if finished else None,
                finished=finished,
                score=solution_score(step_scores[pid], cfg.aggregation),
                grade=grade,
                num_completions=1,
            )
        )
    kept_pairs = [p for s in states for p in step_pairs[s.problem_id] if p is not None]
    return results_table(out), batches.from_rows(kept_pairs, "preference_pairs")


def _worst_scored(values: list[float | None]) -> int | None:
    """Index of the lowest score, ties to the earliest; unscored candidates are never the worst
    (no evidence of an error, as in scoring.aggregate)."""
    scored = [i for i, v in enumerate(values) if v is not None]
    return min(scored, key=lambda i: (values[i], i)) if scored else None
