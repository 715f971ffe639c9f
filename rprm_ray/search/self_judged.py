"""PSRLM self-judged step search (B6 generation, B10 test-time scaling).

At each step the policy samples w candidate next steps; the judge (the same model in PSRLM)
compares every pair of candidates sharing a prefix in both orders; `rprm_ray.pairs.step_pairs`
counts wins (Eq. 2 read literally: ordered comparisons) and builds the (best, worst) step pair.
The best is appended. When every candidate has the same number of wins, the judge did not
discriminate: with rollback on, the previous step and its pair are discarded and the search
returns to that step (at the first step it simply samples again); with rollback off, the first
candidate is kept and no pair is recorded. A prefix with a single distinct candidate keeps it
without judging. max_depth bounds loop iterations, rollbacks included, so a search always ends.

The whole batch advances together: one generator call and one judge call per iteration."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SearchConfig
from rprm_ray.pairs import step_pairs
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    Grader,
    PairwiseJudge,
    StepGenerator,
    exact_match,
    expand_prefixes,
    keep_candidates,
    problem_states,
    result_row,
    results_table,
    run_in_chunks,
)


def self_judged_search(
    problems: pa.Table,
    generator: StepGenerator,
    judge: PairwiseJudge,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    rollback_on_tie: bool = True,
    grade: Grader = exact_match,
) -> tuple[pa.Table, pa.Table]:
    """Results table plus the step-level `preference_pairs` (kind "step") of the kept
    trajectories: pairs of rolled-back steps are discarded with them."""
    pairs: list[pa.Table] = []

    def run_chunk(chunk: pa.Table) -> pa.Table:
        results, chunk_pairs = _chunk(chunk, generator, judge, cfg, style, rollback_on_tie, grade)
        pairs.append(chunk_pairs)
        return results

    results = run_in_chunks(problems, cfg.batch_prompts, run_chunk)
    return results, batches.concat(pairs, "preference_pairs")


def run_self_judged(
    problems: pa.Table,
    generator: StepGenerator,
    judge: PairwiseJudge,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    rollback_on_tie: bool = True,
    grade: Grader = exact_match,
) -> pa.Table:
    """Results table (rprm_ray.search.base.RESULTS_SCHEMA), one row per problem."""
    results, _ = self_judged_search(
        problems, generator, judge, cfg, style, rollback_on_tie=rollback_on_tie, grade=grade
    )
    return results


def _chunk(
    chunk: pa.Table,
    generator: StepGenerator,
    judge: PairwiseJudge,
    cfg: SearchConfig,
    style: PromptStyle,
    rollback_on_tie: bool,
    grade: Grader,
) -> tuple[pa.Table, pa.Table]:
    states = problem_states(chunk)
    steps: dict[str, list[str]] = {s.problem_id: [] for s in states}
    # pair_id recorded at each kept step (None: a lone candidate or an undiscriminated keep)
    step_pair_ids: dict[str, list[str | None]] = {s.problem_id: [] for s in states}
    all_pairs: dict[str, dict] = {}
    done: set[str] = set()
    for it in range(cfg.max_depth):
        open_states = [s for s in states if s.problem_id not in done]
        if not open_states:
            break
        prefix_rows, problem_of = [], {}
        for state in open_states:
            state.depth = it + 1
            prefix_id = f"{state.problem_id}/i{it}"
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
        per_problem: dict[str, list[dict]] = {}
        for row in keep_candidates(candidates, problem_of, cfg.filter_duplicates):
            per_problem.setdefault(problem_of[row["prefix_id"]], []).append(row)
        contested = [r for rows in per_problem.values() if len(rows) > 1 for r in rows]
        outcomes, pairs = _judge(judge, contested, style, by_id, problem_of)
        all_pairs.update({p["pair_id"]: p for p in pairs.to_pylist()})
        for pid, rows in per_problem.items():
            state = by_id[pid]
            if len(rows) == 1:
                best, pair_id = rows[0], None
            else:
                outcome = outcomes[rows[0]["prefix_id"]]
                if outcome["all_tied"] and rollback_on_tie:
                    if steps[pid]:
                        steps[pid].pop()
                        step_pair_ids[pid].pop()
                        state.rollbacks += 1
                    continue
                best = next(r for r in rows if r["candidate_id"] == outcome["best_candidate"])
                pair_id = outcome["pair_id"]
            steps[pid].append(best["step"])
            step_pair_ids[pid].append(pair_id)
            if best["finished"]:
                done.add(pid)
    out = []
    for state in states:
        pid = state.problem_id
        finished = pid in done
        out.append(
            result_row(
                state,
                "self_judged",
                steps[pid],
                answer=style.extract_answer(steps[pid]) if finished else None,
                finished=finished,
                score=None,
                grade=grade,
                num_completions=1,
            )
        )
    kept = [all_pairs[i] for s in states for i in step_pair_ids[s.problem_id] if i is not None]
    return results_table(out), batches.from_rows(kept, "preference_pairs")


def _judge(
    judge: PairwiseJudge,
    rows: list[dict],
    style: PromptStyle,
    by_id: dict,
    problem_of: dict[str, str],
) -> tuple[dict[str, dict], pa.Table]:
    """One judge call for every prefix with at least two candidates ->
    ({prefix_id: step_pairs outcome}, step pairs)."""
    if not rows:
        return {}, batches.empty("preference_pairs")
    candidates = batches.from_rows(rows, "candidates")
    judgments = batches.validate(judge.compare(candidates), "pairwise_judgments", where="judge.compare")
    for i, prefix_id in enumerate(judgments.column("prefix_id").to_pylist()):
        if prefix_id not in problem_of:
            raise batches.BatchError(
                f"judge.compare: pairwise_judgments row {i} has prefix_id {prefix_id!r}, which was not sent"
            )
        by_id[problem_of[prefix_id]].judge_calls += 1
    pairs, outcomes = step_pairs(candidates, judgments, style)
    return {o["prefix_id"]: o for o in outcomes.to_pylist()}, pairs
