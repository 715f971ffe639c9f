"""R-PRM greedy guided search (A10): at each step sample w candidate next steps, judge each,
keep the best (ties -> the first candidate), stop at a final step or after max_depth steps. No
backtracking at test time. A level where every candidate was dropped (blank) still uses one unit
of depth, as in the paper's script.

`greedy_search` is the same loop as a data generator for the "guided" self-rewarding mode (an
R-PRM judge scores the policy's steps, ARCHITECTURE §4): it also returns (best, worst) step pairs
by score and may roll back on ties (every candidate scored the same), as PSRLM does (B6).

The whole batch advances together: one generator call and one judge call per level."""

from __future__ import annotations

from functools import partial

import pyarrow as pa

from rprm_ray.config import SearchConfig
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    ChunkMap,
    Grader,
    ProblemState,
    StepGenerator,
    StepScorer,
    argmax_first,
    candidate_key,
    exact_match,
    score_candidates,
    step_pair_row,
)
from rprm_ray.search.stepwise import StepChoice, StepwiseStrategy, stepwise_search


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
    min_pair_margin: float = 0.0,
    grade: Grader = exact_match,
    trace: list[dict] | None = None,
    chunk_map: ChunkMap | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Results table plus step-level `preference_pairs` (kind "step"): at each kept step, the
    best-scored candidate against the worst, when their scores differ (by at least
    `min_pair_margin`). With `rollback_on_tie`, a level whose candidates all scored the same
    discards the previous step and its pair (max_depth bounds the iterations, rollbacks included).
    With `trace`, every judged candidate is appended to it (stepwise.trace_rows);
    `chunk_map`: see stepwise_search."""
    strategy = StepwiseStrategy(
        name="greedy",
        level_tag="d",
        choose=partial(_choose_by_score, min_pair_margin=min_pair_margin),
    )
    return stepwise_search(
        strategy, problems, generator, judge, cfg, style, rollback_on_tie=rollback_on_tie, grade=grade,
        trace=trace, chunk_map=chunk_map,
    )


def _choose_by_score(
    judge: StepScorer,
    style: PromptStyle,
    per_problem: dict[str, list[dict]],
    states: dict[str, ProblemState],
    problem_of: dict[str, str],
    min_pair_margin: float = 0.0,
) -> dict[str, StepChoice]:
    """Score every kept candidate in one judge call; per problem keep the best (ties -> the
    first) and pair it with the worst when their scores differ by at least `min_pair_margin`."""
    scores = score_candidates(judge, [r for rows in per_problem.values() for r in rows])
    choices = {}
    for pid, rows in per_problem.items():
        states[pid].judge_calls += len(rows)
        values = [scores[candidate_key(r)] for r in rows]
        best = argmax_first(values)
        worst = _worst_scored(values)
        gap = values[best] - values[worst] if worst is not None else 0.0
        differ = gap > 0 and gap >= min_pair_margin
        choices[pid] = StepChoice(
            best=rows[best],
            score=values[best],
            pair=step_pair_row(style, rows[0]["prefix_id"], rows[best], rows[worst]) if differ else None,
            tied=len(rows) > 1 and len(set(values)) == 1,
            candidate_scores=tuple(values),
            rejected_id=rows[worst]["candidate_id"] if differ else None,
        )
    return choices


def _worst_scored(values: list[float | None]) -> int | None:
    """Index of the lowest score, ties to the earliest; unscored candidates are never the worst
    (no evidence of an error, as in scoring.aggregate)."""
    scored = [i for i, v in enumerate(values) if v is not None]
    return min(scored, key=lambda i: (values[i], i)) if scored else None

