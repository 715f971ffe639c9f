"""Step-level beam search guided by a PRM (search-and-learn semantics, batched across prompts).

Per prompt: N = samples_per_prompt, M = beam_width. Level 0 samples N first steps; every level
scores the new steps, moves finished ones to the completed pool, drops duplicates, keeps the top
N/M unfinished beams by aggregated prefix score and expands each into M candidates (N per level).
When fewer than N/M beams survive, survivors are repeated to fill the slots (search-and-learn's
refill). With `beam_prune_below`, a beam scored below it is not kept while one of its prompt's
beams scores at least that. A prompt stops when it has N completions, no open beam, or max_depth
levels; beams still open at the cap count as unfinished completions. The final pick is the
completion with the highest aggregated score (finished completions before unfinished ones; ties ->
earliest).

The whole batch advances together: one generator call and one judge call per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from rprm_ray.config import SearchConfig
from rprm_ray.prompts import PromptStyle
from rprm_ray.search.base import (
    ChunkMap,
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
from rprm_ray.search.best_of_n import vote_answers


@dataclass(frozen=True)
class Beam:
    steps: tuple[str, ...]
    step_scores: tuple[float | None, ...]
    score: float | None  # aggregated over step_scores
    finished: bool


def _check(cfg: SearchConfig) -> None:
    n, m = cfg.samples_per_prompt, cfg.beam_width
    if m > n or n % m:
        raise ValueError(
            f"search: beam search needs samples_per_prompt ({n}) to be a positive multiple of "
            f"beam_width ({m})"
        )


def _ranked(beams: list[Beam]) -> list[Beam]:
    # Stable sort: equal scores keep generation order. None (no steps scored) ranks last.
    return sorted(beams, key=lambda b: -b.score if b.score is not None else float("inf"))


def _survivors(beams: list[Beam], keep: int, prune_below: float | None) -> list[Beam]:
    """The top `keep` open beams; with `prune_below`, only those scoring at least that when any
    does (a rejected prefix would spend M samples that an accepted one can use)."""
    ranked = _ranked(beams)
    if prune_below is not None:
        accepted = [b for b in ranked if b.score is not None and b.score >= prune_below]
        ranked = accepted or ranked
    return ranked[:keep]


def run_beam(
    problems: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    *,
    grade: Grader = exact_match,
    chunk_map: ChunkMap | None = None,
) -> pa.Table:
    """Results table (rprm_ray.search.base.RESULTS_SCHEMA), one row per problem. `chunk_map`
    runs the chunks of cfg.batch_prompts problems (default: in memory; a run's persists them)."""
    _check(cfg)
    return run_in_chunks(problems, cfg.batch_prompts,
                         lambda chunk: _beam_chunk(chunk, generator, judge, cfg, style, grade), cfg.concurrent_chunks,
                         chunk_map)


def _beam_chunk(
    chunk: pa.Table,
    generator: StepGenerator,
    judge: StepScorer,
    cfg: SearchConfig,
    style: PromptStyle,
    grade: Grader,
) -> pa.Table:
    n, m = cfg.samples_per_prompt, cfg.beam_width
    keep = n // m
    states = problem_states(chunk)
    active: dict[str, list[Beam]] = {s.problem_id: [Beam((), (), None, False)] for s in states}
    completed: dict[str, list[Beam]] = {s.problem_id: [] for s in states}
    by_id = {s.problem_id: s for s in states}
    # Last open beams of each prompt: its completions if none finishes before the depth cap.
    unfinished: dict[str, list[Beam]] = {}

    for depth in range(cfg.max_depth):
        if not active:
            break
        prefix_rows, problem_of, beam_of = [], {}, {}
        for pid, beams in active.items():
            by_id[pid].depth = depth + 1
            for j, beam in enumerate(beams):
                prefix_id = f"{pid}/d{depth}/b{j}"
                prefix_rows.append(
                    {
                        "problem_id": pid,
                        "prefix_id": prefix_id,
                        "question": by_id[pid].question,
                        "prefix_steps": list(beam.steps),
                    }
                )
                problem_of[prefix_id], beam_of[prefix_id] = pid, beam
        w = n if depth == 0 else m  # the root alone is expanded into all N first steps
        candidates = expand_prefixes(generator, prefix_rows, w, cfg.sampling)
        for row in candidates:
            by_id[problem_of[row["prefix_id"]]].candidate_steps += 1
        kept = keep_candidates(candidates, problem_of, cfg.filter_duplicates)
        scores = score_candidates(judge, kept)
        children: dict[str, list[Beam]] = {pid: [] for pid in active}
        for row in kept:
            pid, parent = problem_of[row["prefix_id"]], beam_of[row["prefix_id"]]
            by_id[pid].judge_calls += 1
            step_scores = (*parent.step_scores, scores[candidate_key(row)])
            child = Beam(
                (*parent.steps, row["step"]),
                step_scores,
                solution_score(step_scores, cfg.aggregation),
                row["finished"],
            )
            (completed[pid] if child.finished else children[pid]).append(child)
        # Prompts with N completions stop; the others keep their top N/M open beams. As in
        # search-and-learn, fewer survivors are repeated to fill the N/M slots, so every level
        # samples N steps per prompt (engines draw n x count samples for a prompt sent count times).
        survivors = {
            pid: _survivors(beams, keep, cfg.beam_prune_below)
            for pid, beams in children.items()
            if beams and len(completed[pid]) < n
        }
        unfinished.update(survivors)
        active = {pid: (beams * keep)[:keep] for pid, beams in survivors.items()}

    rows = []
    for state in states:
        pool = completed[state.problem_id] or unfinished.get(state.problem_id, [])
        answers = [style.extract_answer(list(b.steps)) if b.finished else None for b in pool]
        scores = [b.score for b in pool]
        best = pool[argmax_first(scores)] if pool else Beam((), (), None, False)
        answer = answers[argmax_first(scores)] if pool else None
        rows.append(
            result_row(
                state,
                "beam",
                best.steps,
                answer=answer,
                finished=best.finished,
                score=best.score,
                grade=grade,
                num_completions=len(pool),
                votes=vote_answers(answers, scores),
            )
        )
    return results_table(rows)
