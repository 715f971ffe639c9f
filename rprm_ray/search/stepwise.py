"""The step-by-step search loop that greedy (R-PRM scores) and self-judged (PSRLM pairwise wins)
search share: at each level, sample w candidate next steps for every open problem, let the
strategy pick one per problem, append it (or roll back on a tie), stop at a final step or after
max_depth levels. Rollbacks use a level too, so max_depth bounds the loop; each level samples with
its own seed (base.level_sampling), so a prefix expanded again after a rollback draws new steps.
A level where every candidate was dropped (blank) still uses one unit of depth, as in the paper's
script.

What differs between strategies is only how a level is judged: a `ChooseSteps` function makes
the level's single judge call and returns a `StepChoice` per problem. The pairs of kept steps
become the `preference_pairs` (kind "step") of the data generators; a rolled-back step's pair is
discarded with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SearchConfig
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    ChunkMap,
    Grader,
    ProblemState,
    StepGenerator,
    expand_prefixes,
    in_memory_chunks,
    keep_candidates,
    level_sampling,
    problem_states,
    result_row,
    results_table,
    solution_score,
)


@dataclass(frozen=True)
class StepChoice:
    """A strategy's pick among one problem's candidates at one level."""

    best: dict  # the `candidates` row to append
    score: float | None  # its step score; None when the strategy does not score steps
    pair: dict | None  # the step `preference_pairs` row recorded with it, if any
    tied: bool  # the judge did not discriminate: the search rolls back when asked to
    # Per candidate, in the order given to the strategy: its score (None where unscored), for the
    # search trace; and the candidate_id on the rejected side of `pair`.
    candidate_scores: tuple[float | None, ...] = ()
    rejected_id: int | None = None


# (judge, style, kept candidates per open problem in candidate order, open problems' states by
# problem_id, problem_id of every prefix_id sent this level) -> {problem_id: StepChoice} for every
# problem of the candidates, from ONE judge call for the whole level. It counts its judge calls
# on the states.
ChooseSteps = Callable[
    [Any, PromptStyle, dict[str, list[dict]], dict[str, ProblemState], dict[str, str]],
    dict[str, StepChoice],
]


@dataclass(frozen=True)
class StepwiseStrategy:
    """What a strategy brings to the shared loop."""

    name: str  # the results' `strategy` column
    level_tag: str  # prefix ids are `<problem_id>/<level_tag><level>`
    choose: ChooseSteps


def stepwise_search(
    strategy: StepwiseStrategy,
    problems: pa.Table,
    generator: StepGenerator,
    judge: Any,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    rollback_on_tie: bool,
    grade: Grader,
    trace: list[dict] | None = None,
    chunk_map: ChunkMap | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Results table (score: the kept steps' scores aggregated with cfg.aggregation, null when
    the strategy scores no step) plus the kept steps' pairs. `judge` is whatever
    `strategy.choose` takes. With `trace`, every judged candidate of every level is appended to it
    as a `search_trace` row (chunk by chunk). `chunk_map` runs the chunks of cfg.batch_prompts
    problems (default: in memory; a run's persists each finished chunk)."""
    search = _Search(strategy, generator, judge, cfg, style, rollback_on_tie, grade)
    out = (chunk_map or in_memory_chunks)(problems, cfg.batch_prompts, search.chunk, CHUNK_OUTPUTS,
                                          cfg.concurrent_chunks)
    if trace is not None:
        trace.extend(out["trace"].to_pylist())
    return out["results"], out["pairs"]


# What one chunk of a step-wise search gives, by batch kind.
CHUNK_OUTPUTS = {"results": "search_results", "pairs": "preference_pairs", "trace": "search_trace"}


@dataclass(frozen=True)
class _Search:
    """One search's arguments, shared by its chunks."""

    strategy: StepwiseStrategy
    generator: StepGenerator
    judge: Any
    cfg: SearchConfig
    style: PromptStyle
    rollback_on_tie: bool
    grade: Grader

    def chunk(self, chunk: pa.Table) -> dict[str, pa.Table]:
        """Search one chunk of problems, level by level -> {results, pairs of the kept steps, trace
        of every judged candidate}."""
        trace: list[dict] = []
        states = problem_states(chunk)
        kept: dict[str, list[StepChoice]] = {s.problem_id: [] for s in states}
        done: set[str] = set()
        for level in range(self.cfg.max_depth):
            open_states = [s for s in states if s.problem_id not in done]
            if not open_states:
                break
            for state in open_states:
                state.depth = level + 1
            per_problem, problem_of = self._expand_level(open_states, kept, level)
            by_id = {s.problem_id: s for s in open_states}
            choices = self.strategy.choose(self.judge, self.style, per_problem, by_id, problem_of)
            for pid in per_problem:
                choice = choices[pid]
                trace.extend(trace_rows(per_problem[pid], choice, level))
                if choice.tied and self.rollback_on_tie:
                    if kept[pid]:
                        kept[pid].pop()
                        by_id[pid].rollbacks += 1
                    continue
                kept[pid].append(choice)
                if choice.best["finished"]:
                    done.add(pid)
        results = [
            self._result_row(state, kept[state.problem_id], state.problem_id in done) for state in states
        ]
        pairs = [c.pair for s in states for c in kept[s.problem_id] if c.pair is not None]
        return {"results": results_table(results), "pairs": batches.from_rows(pairs, "preference_pairs"),
                "trace": batches.from_rows(trace, "search_trace")}

    def _expand_level(
        self, open_states: list[ProblemState], kept: dict[str, list[StepChoice]], level: int
    ) -> tuple[dict[str, list[dict]], dict[str, str]]:
        """One generator call for every open problem -> ({problem_id: kept candidates}, {prefix_id:
        problem_id}). Every generated step counts in the problem's candidate_steps, dropped or not."""
        prefix_rows, problem_of = [], {}
        for state in open_states:
            prefix_id = f"{state.problem_id}/{self.strategy.level_tag}{level}"
            problem_of[prefix_id] = state.problem_id
            prefix_rows.append(
                {
                    "problem_id": state.problem_id,
                    "prefix_id": prefix_id,
                    "question": state.question,
                    "prefix_steps": [c.best["step"] for c in kept[state.problem_id]],
                }
            )
        cfg = self.cfg
        sampling = level_sampling(cfg.sampling, level)
        candidates = expand_prefixes(self.generator, prefix_rows, cfg.candidates_per_step, sampling)
        by_id = {s.problem_id: s for s in open_states}
        for row in candidates:
            by_id[problem_of[row["prefix_id"]]].candidate_steps += 1
        per_problem: dict[str, list[dict]] = {}
        for row in keep_candidates(candidates, problem_of, cfg.filter_duplicates):
            per_problem.setdefault(problem_of[row["prefix_id"]], []).append(row)
        return per_problem, problem_of

    def _result_row(self, state: ProblemState, kept: list[StepChoice], finished: bool) -> dict:
        steps = [c.best["step"] for c in kept]
        return result_row(
            state,
            self.strategy.name,
            steps,
            answer=self.style.extract_answer(steps) if finished else None,
            finished=finished,
            score=solution_score([c.score for c in kept], self.cfg.aggregation),
            grade=self.grade,
            num_completions=1,
        )


def trace_rows(candidates: list[dict], choice: StepChoice, level: int) -> list[dict]:
    """`search_trace` rows of one problem's judged candidates at one level."""
    scores = choice.candidate_scores or (None,) * len(candidates)
    rows = []
    for row, score in zip(candidates, scores, strict=True):
        if choice.tied and len(candidates) > 1:
            outcome = "tied"
        elif row is choice.best:
            outcome = "kept"
        elif choice.rejected_id is not None and row["candidate_id"] == choice.rejected_id:
            outcome = "rejected"
        else:
            outcome = "candidate"
        rows.append({"problem_id": row["problem_id"], "prefix_id": row["prefix_id"], "level": level,
                     "candidate_id": row["candidate_id"], "step": row["step"], "finished": row["finished"],
                     "score": score, "outcome": outcome})
    return rows
