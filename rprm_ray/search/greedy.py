"""R-PRM greedy guided search (A10): at each step sample w candidate next steps, judge each,
keep the best (ties -> the first candidate), stop at a final step or after max_depth steps. No
backtracking. A level where every candidate was dropped (blank or duplicate-free set empty)
still uses one unit of depth, as in the paper's script.

The whole batch advances together: one generator call and one judge call per level."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.config import SearchConfig
from rprm_ray.search.base import (
    AnswerStyle,
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
)


def run_greedy(
    problems: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: AnswerStyle,
    *,
    grade: Grader = exact_match,
) -> pa.Table:
    """Results table (rprm_ray.search.base.RESULTS_SCHEMA), one row per problem."""

    def run_chunk(chunk: pa.Table) -> pa.Table:
        states = problem_states(chunk)
        steps: dict[str, list[str]] = {s.problem_id: [] for s in states}
        step_scores: dict[str, list[float | None]] = {s.problem_id: [] for s in states}
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
                        "prefix_steps": steps[state.problem_id],
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
                by_id[pid].judge_calls += len(rows)
                values = [scores[candidate_key(r)] for r in rows]
                best = argmax_first(values)
                steps[pid].append(rows[best]["step"])
                step_scores[pid].append(values[best])
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
        return results_table(out)

    return run_in_chunks(problems, cfg.batch_prompts, run_chunk)
