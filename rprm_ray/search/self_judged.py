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
from rprm_ray.search.base import ChunkMap, Grader, PairwiseJudge, ProblemState, StepGenerator, exact_match
from rprm_ray.search.stepwise import StepChoice, StepwiseStrategy, stepwise_search


def self_judged_search(
    problems: pa.Table,
    generator: StepGenerator,
    judge: PairwiseJudge,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    rollback_on_tie: bool = True,
    grade: Grader = exact_match,
    trace: list[dict] | None = None,
    chunk_map: ChunkMap | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Results table plus the step-level `preference_pairs` (kind "step") of the kept
    trajectories: pairs of rolled-back steps are discarded with them. Steps carry no score, so
    the results' score is null."""
    return stepwise_search(
        _SELF_JUDGED, problems, generator, judge, cfg, style, rollback_on_tie=rollback_on_tie, grade=grade,
        trace=trace, chunk_map=chunk_map,
    )


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


def _choose_by_wins(
    judge: PairwiseJudge,
    style: PromptStyle,
    per_problem: dict[str, list[dict]],
    states: dict[str, ProblemState],
    problem_of: dict[str, str],
) -> dict[str, StepChoice]:
    """Judge every prefix with several candidates in one call; per problem keep the candidate
    with the most wins and its (best, worst) pair. A lone candidate is kept without judging."""
    contested = [r for rows in per_problem.values() if len(rows) > 1 for r in rows]
    outcomes, pairs = _judge(judge, contested, style, states, problem_of)
    pair_by_id = {p["pair_id"]: p for p in pairs.to_pylist()}
    choices = {}
    for pid, rows in per_problem.items():
        if len(rows) == 1:
            choices[pid] = StepChoice(best=rows[0], score=None, pair=None, tied=False)
            continue
        outcome = outcomes[rows[0]["prefix_id"]]
        pair_id = outcome["pair_id"]
        choices[pid] = StepChoice(
            best=next(r for r in rows if r["candidate_id"] == outcome["best_candidate"]),
            score=None,
            pair=pair_by_id[pair_id] if pair_id is not None else None,
            tied=outcome["all_tied"],
            # The trace shows each candidate's pairwise wins as its score.
            candidate_scores=tuple(float(dict(zip(outcome["candidate_ids"], outcome["wins"], strict=True))
                                         .get(r["candidate_id"], 0)) for r in rows),
            rejected_id=outcome["worst_candidate"] if pair_id is not None else None,
        )
    return choices


def _judge(
    judge: PairwiseJudge,
    rows: list[dict],
    style: PromptStyle,
    states: dict[str, ProblemState],
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
        states[problem_of[prefix_id]].judge_calls += 1
    pairs, outcomes = step_pairs(candidates, judgments, style)
    return {o["prefix_id"]: o for o in outcomes.to_pylist()}, pairs


_SELF_JUDGED = StepwiseStrategy(name="self_judged", level_tag="i", choose=_choose_by_wins)
