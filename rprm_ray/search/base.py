"""What every search strategy shares: the role protocols, the results table, and the per-level
bookkeeping (ids, duplicate filtering, scoring new steps in one judge call).

A strategy advances a whole batch of prompts together: one generator call and one judge call per
depth level, never one per prompt (search-and-learn's beam search ran one prompt at a time and
took hours; see docs). Roles exchange Arrow tables with schemas from `rprm_ray.batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SamplingConfig
from rprm_ray.engines.base import prompt_seed
from rprm_ray.evaluation.bon import canonical_answer, select_best
from rprm_ray.prompts import PromptStyle
from rprm_ray.scoring import aggregate


class StepGenerator(Protocol):
    """The policy role (actors.generator.PolicyGenerator, or an in-process engine wrapper)."""

    def expand(self, prefixes: pa.Table, w: int, sampling: SamplingConfig) -> pa.Table:
        """`prefixes` -> `candidates`: w candidate next steps per prefix (candidate_id 0..w-1);
        `finished` marks a final step."""
        ...

    def generate(self, problems: pa.Table, n: int, sampling: SamplingConfig) -> pa.Table:
        """`problems` -> `solutions`: n full solutions per problem (sample_idx 0..n-1)."""
        ...


class StepScorer(Protocol):
    """The pointwise judge role (R-PRM): one score per step."""

    def score_steps(self, labeled_steps: pa.Table) -> pa.Table | tuple[pa.Table, pa.Table]:
        """`labeled_steps` (label null) -> `step_scores`, one row per input row. The ProcessJudge
        client (actors/judge.py) returns (critiques, step_scores); search reads the step_scores."""
        ...


class PairwiseJudge(Protocol):
    """The pairwise judge role (PSRLM): candidates sharing a prefix_id judged against each other."""

    def compare(self, candidates: pa.Table) -> pa.Table:
        """`candidates` -> `pairwise_judgments`: every unordered pair of candidates with the same
        prefix_id judged in both orders ("AB" and "BA")."""
        ...


# (question, reference answer, predicted answer) -> correct? — the signature of Task.grade
# (rprm_ray.tasks), so a driver passes `run.task.grade`. Only called when there is a reference.
Grader = Callable[[str, str, str | None], bool]


# One row per problem. `candidate_steps` counts every step the generator produced for the
# problem (before duplicate filtering), so strategies compare at equal generation budget;
# `judge_calls` counts judged rows (steps scored, or pairwise judgments).
RESULTS_SCHEMA = batches.SCHEMAS["search_results"]


def exact_match(question: str, reference: str, predicted: str | None) -> bool:
    """Default grader: equality after evaluation.bon.canonical_answer (exact for the arithmetic
    world's integers; math datasets pass Task.grade, which uses math-verify)."""
    return predicted is not None and canonical_answer(predicted) == canonical_answer(reference)


@dataclass
class ProblemState:
    """Per-problem counters shared by every strategy."""

    problem_id: str
    question: str
    reference: str | None
    candidate_steps: int = 0
    judge_calls: int = 0
    depth: int = 0
    rollbacks: int = 0


def problem_states(problems: pa.Table) -> list[ProblemState]:
    problems = batches.validate(problems, "problems", where="search input")
    return [ProblemState(r["problem_id"], r["question"], r["answer"]) for r in problems.to_pylist()]


# (problems, chunk size, chunk -> {output: table}, {output: batch kind}, chunks at once) ->
# {output: table in chunk order}. A run passes `Run.chunk_map(...)`, which persists each finished
# chunk so a resumed stage reads it back; `in_memory_chunks` persists nothing.
ChunkMap = Callable[[pa.Table, int, Callable[[pa.Table], Mapping[str, pa.Table]], Mapping[str, str], int],
                    dict[str, pa.Table]]


def in_memory_chunks(problems: pa.Table, size: int, run_chunk: Callable[[pa.Table], Mapping[str, pa.Table]],
                     kinds: Mapping[str, str], concurrent: int = 1) -> dict[str, pa.Table]:
    """Consecutive chunks of `size` prompts (each advanced together, level by level), results in
    chunk order. With `concurrent` > 1, that many chunks run at once in threads: a chunk waits on
    the generator while another waits on the judge, so the two engines work at the same time (two
    chunks of 256: a search 1.5x faster than one of 512, the same results)."""
    from rprm_ray.shards import map_chunk_tables

    return map_chunk_tables(problems, size, run_chunk, kinds, concurrent=concurrent)


def run_in_chunks(problems: pa.Table, size: int, run_chunk: Callable[[pa.Table], pa.Table],
                  concurrent: int = 1, chunk_map: ChunkMap | None = None) -> pa.Table:
    """A search whose chunks give only a results table."""
    return (chunk_map or in_memory_chunks)(problems, size, lambda chunk: {"results": run_chunk(chunk)},
                                           {"results": "search_results"}, concurrent)["results"]


def result_row(
    state: ProblemState,
    strategy: str,
    steps: Sequence[str],
    *,
    answer: str | None,
    finished: bool,
    score: float | None,
    grade: Grader,
    num_completions: int,
    votes: tuple[str | None, str | None] | None = None,
) -> dict:
    """One results row. `votes` = (weighted answer, majority answer) over all completions, for
    strategies that produce several (None otherwise)."""
    weighted_answer, majority_answer = votes if votes is not None else (None, None)
    return {
        "problem_id": state.problem_id,
        "question": state.question,
        "reference": state.reference,
        "strategy": strategy,
        "steps": list(steps),
        "answer": answer,
        "finished": finished,
        "correct": _grade(grade, state, answer),
        "score": score,
        "weighted_answer": weighted_answer,
        "weighted_correct": _grade(grade, state, weighted_answer) if votes else None,
        "majority_answer": majority_answer,
        "majority_correct": _grade(grade, state, majority_answer) if votes else None,
        "num_completions": num_completions,
        "candidate_steps": state.candidate_steps,
        "judge_calls": state.judge_calls,
        "depth": state.depth,
        "rollbacks": state.rollbacks,
    }


def _grade(grade: Grader, state: ProblemState, answer: str | None) -> bool | None:
    return None if state.reference is None else bool(grade(state.question, state.reference, answer))


def results_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)


def accuracy(results: pa.Table, column: str = "correct") -> float | None:
    """Share of graded rows that are correct (None when no row has a reference)."""
    values = [v for v in results.column(column).to_pylist() if v is not None]
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------------------------
# Scores


def solution_score(step_scores: Sequence[float | None], how: str) -> float | None:
    """scoring.aggregate, the project-wide convention: a step the judge could not score (None)
    is no evidence of an error and is skipped; None when no step has a score."""
    return aggregate(step_scores, how)


def argmax_first(values: Sequence[float | None]) -> int:
    """Index of the largest value; ties go to the earliest; None ranks below every number."""
    return select_best(values)


# --------------------------------------------------------------------------------------------
# One depth level


def expand_prefixes(
    generator: StepGenerator, prefix_rows: list[dict], w: int, sampling: SamplingConfig
) -> list[dict]:
    """One generator call for every prefix of the batch; rows checked against the request."""
    prefixes = batches.from_rows(prefix_rows, "prefixes")
    candidates = batches.validate(
        generator.expand(prefixes, w, sampling), "candidates", where="generator.expand"
    )
    known = {r["prefix_id"] for r in prefix_rows}
    rows = candidates.to_pylist()
    for i, row in enumerate(rows):
        if row["prefix_id"] not in known:
            raise batches.BatchError(
                f"generator.expand: candidates row {i} has prefix_id {row['prefix_id']!r}, "
                "which was not requested"
            )
    rows.sort(key=lambda r: (r["prefix_id"], r["candidate_id"]))
    return rows


def level_sampling(sampling: SamplingConfig, level: int) -> SamplingConfig:
    """`sampling` for one depth level of a step-by-step search (level 0: unchanged).

    Engines seed a prompt's samples from (seed, prompt text) alone, so a prefix expanded again
    at a later level (after a rollback, or the bare question after a tie at the first step)
    would draw the very same candidates and the search could only repeat itself. A seed per
    level draws new ones and still leaves results independent of batching."""
    if level == 0 or sampling.seed is None:
        return sampling
    return sampling.model_copy(update={"seed": prompt_seed(sampling.seed, f"level {level}")})


def keep_candidates(rows: list[dict], problem_of: dict[str, str], filter_duplicates: bool) -> list[dict]:
    """Drop blank unfinished steps (they would leave the prefix unchanged) and, if asked, any
    candidate whose full step sequence repeats an earlier one of the same problem."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    kept = []
    for row in rows:
        step = row["step"].strip()
        if not step and not row["finished"]:
            continue
        if filter_duplicates:
            key = (problem_of[row["prefix_id"]], (*(s.strip() for s in row["prefix_steps"]), step))
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept


def candidate_key(row: dict) -> str:
    return f"{row['prefix_id']}#{row['candidate_id']}"


def score_candidates(scorer: StepScorer, rows: list[dict]) -> dict[str, float | None]:
    """Score each candidate's new step (previous steps = its prefix) in one judge call.

    Returns {candidate_key: score or None}."""
    if not rows:
        return {}
    labeled = batches.from_rows(
        [
            {
                "problem_id": r["problem_id"],
                "solution_id": candidate_key(r),
                "step_idx": len(r["prefix_steps"]),
                "question": r["question"],
                "previous_steps": r["prefix_steps"],
                "now_step": r["step"],
                "label": None,
            }
            for r in rows
        ],
        "labeled_steps",
    )
    scores = read_step_scores(scorer.score_steps(labeled), labeled)
    return {sid: score for (sid, _), score in scores.items()}


def read_step_scores(
    answer: pa.Table | tuple[pa.Table, pa.Table], asked: pa.Table
) -> dict[tuple[str, int], float | None]:
    """{(solution_id, step_idx): score} for every asked row; a missing row is the judge's error.
    `answer` is the scorer's return: step_scores, or (critiques, step_scores)."""
    step_scores = answer[1] if isinstance(answer, tuple) else answer
    scored = batches.validate(step_scores, "step_scores", where="judge.score_steps")
    got = {(r["solution_id"], r["step_idx"]): r["score"] for r in scored.to_pylist()}
    out = {}
    for sid, idx in zip(
        asked.column("solution_id").to_pylist(), asked.column("step_idx").to_pylist(), strict=True
    ):
        if (sid, idx) not in got:
            raise batches.BatchError(
                f"judge.score_steps: no score for solution_id {sid!r} step_idx {idx} "
                f"({scored.num_rows} rows returned for {asked.num_rows} asked)"
            )
        out[(sid, idx)] = got[(sid, idx)]
    return out


def step_pair_row(style: PromptStyle, prefix_id: str, best: dict, worst: dict) -> dict:
    """A step-level `preference_pairs` row (kind "step") from two `candidates` rows of one
    prefix, in rprm_ray.pairs.step_pairs' format: prompt = the rendered prefix, chosen/rejected =
    the single step + the step separator."""
    k = len(best["prefix_steps"])
    return {
        "pair_id": f"step/{prefix_id}/{best['candidate_id']}-{worst['candidate_id']}",
        "kind": "step",
        "problem_id": best["problem_id"],
        "prompt": style.render_prefix(best["question"], list(best["prefix_steps"])),
        "chosen": style.format_step(best["step"], k) + style.step_separator,
        "rejected": style.format_step(worst["step"], k) + style.step_separator,
        "ref_chosen_logp": None,
        "ref_rejected_logp": None,
    }
