"""A deterministic in-process arithmetic world for the search tests, built on the embedded task
(rprm_ray.tasks.arith): a fake policy (StepGenerator), a perfect PRM (StepScorer) and a pairwise
judge (PairwiseJudge), all answering from arith's oracle (expected_step, corrupt_step,
label_steps).

The fakes record every call so tests can pin batching (one call per depth level for the whole
batch). Candidate k of a prefix is drawn like the real engines draw it (rprm_ray.engines.base.
prompt_seed): from a RNG seeded by (sampling seed, problem, prefix steps) alone, a prefix sent r
times in one call drawing r * w samples from that one stream. So a search gives the same result
whether prompts run together or one at a time, and expanding the same prefix again with the same
seed draws the same candidates."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SamplingConfig, SearchConfig, TaskConfig
from rprm_ray.tasks import arith
from rprm_ray.tasks.arith import ArithProblem

STYLE = arith.STYLE


def make_problems(count: int, seed: int = 0) -> list[ArithProblem]:
    """`count` eval problems of 3 operations each."""
    cfg = TaskConfig(seed=seed, train_problems=1, eval_problems=count, min_steps=3, max_steps=3)
    return arith.make_splits(cfg)[1]


def first_error(problem: ArithProblem, steps: list[str]) -> int:
    return arith.label_steps(problem, steps)


def _wrong(step: str, offset: int) -> str:
    """`step` with its result (or answer) off by `offset`. (arith.corrupt_step would be more
    realistic but fails on prefixes whose values went negative.)"""
    head, value = step.rsplit(":" if STYLE.is_final_step(step) else "=", 1)
    return f"{head}{':' if STYLE.is_final_step(step) else '='}{int(value) + offset}"


@dataclass
class FakeGenerator:
    """Proposes the correct next step with probability `p_correct`, a wrong result otherwise.

    `guarantee_correct`: one of the w candidates of each prefix is always correct.
    `never_finish`: after the last operation it keeps writing `x+0=x` steps instead of `A:x`."""

    problems: dict[str, ArithProblem]
    p_correct: float = 0.5
    guarantee_correct: bool = False
    never_finish: bool = False
    seed: int = 0
    expand_calls: list[dict] = field(default_factory=list)
    generate_calls: list[dict] = field(default_factory=list)

    def _step(self, problem: ArithProblem, prefix: list[str], sample: str, force_correct: bool) -> str:
        rng = random.Random(zlib.crc32(f"{self.seed}|{problem.problem_id}|{sample}".encode()))
        step = arith.expected_step(problem.question, prefix)
        if self.never_finish and (step is None or STYLE.is_final_step(step)):
            return f"{len(prefix)}+0={len(prefix)}"
        if force_correct or rng.random() < self.p_correct:
            return step
        return _wrong(step, rng.randint(1, 3))

    def expand(self, prefixes: pa.Table, w: int, sampling: SamplingConfig) -> pa.Table:
        prefixes = batches.validate(prefixes, "prefixes", where="FakeGenerator.expand")
        call = {"w": w, "problem_ids": prefixes.column("problem_id").to_pylist(), "rows": prefixes.num_rows}
        self.expand_calls.append(call)
        rows = []
        repeats: dict[tuple, int] = {}
        for prefix in prefixes.to_pylist():
            problem = self.problems[prefix["problem_id"]]
            steps = prefix["prefix_steps"]
            stream = f"{sampling.seed}|{'|'.join(steps)}"
            sent = repeats.get((problem.problem_id, stream), 0)
            repeats[(problem.problem_id, stream)] = sent + 1
            first = sent * w
            forced = random.Random(zlib.crc32(f"{stream}@{first}".encode())).randrange(w)
            for k in range(w):
                sample = f"{stream}#{first + k}"
                step = self._step(problem, steps, sample, self.guarantee_correct and k == forced)
                rows.append(
                    {
                        "problem_id": prefix["problem_id"],
                        "prefix_id": prefix["prefix_id"],
                        "candidate_id": k,
                        "question": prefix["question"],
                        "prefix_steps": steps,
                        "step": step,
                        "finished": STYLE.is_final_step(step),
                        "num_tokens": len(step),
                        "cumulative_logprob": None,
                    }
                )
        call["candidates"] = rows
        return batches.from_rows(rows, "candidates")

    def generate(self, problems: pa.Table, n: int, sampling: SamplingConfig) -> pa.Table:
        self.generate_calls.append({"n": n, "problem_ids": problems.column("problem_id").to_pylist()})
        rows = []
        for row in problems.to_pylist():
            problem = self.problems[row["problem_id"]]
            for s in range(n):
                steps: list[str] = []
                while not steps or not STYLE.is_final_step(steps[-1]):
                    steps.append(self._step(problem, steps, f"s{s}/{len(steps)}", False))
                rows.append(
                    {
                        "problem_id": problem.problem_id,
                        "sample_idx": s,
                        "question": row["question"],
                        "text": STYLE.format_solution(steps),
                        "steps": steps,
                        "answer": STYLE.extract_answer(steps),
                        "finished": True,
                        "correct": None,
                    }
                )
        return batches.from_rows(rows, "solutions")


@dataclass
class OracleScorer:
    """A perfect PRM: 1.0 for a step whose solution so far has no error, 0.0 otherwise.
    `invert` flips it (a control that should make search fail)."""

    problems: dict[str, ArithProblem]
    invert: bool = False
    calls: list[dict] = field(default_factory=list)

    def score_steps(self, labeled_steps: pa.Table) -> pa.Table:
        labeled_steps = batches.validate(labeled_steps, "labeled_steps", where="OracleScorer")
        self.calls.append(
            {"problem_ids": labeled_steps.column("problem_id").to_pylist(), "rows": labeled_steps.num_rows}
        )
        rows = []
        for r in labeled_steps.to_pylist():
            assert r["label"] is None, "search must not leak labels to the judge"
            ok = first_error(self.problems[r["problem_id"]], [*r["previous_steps"], r["now_step"]]) == -1
            rows.append(
                {
                    "problem_id": r["problem_id"],
                    "solution_id": r["solution_id"],
                    "step_idx": r["step_idx"],
                    "score": float(ok != self.invert),
                    "num_valid": 1,
                    "num_invalid": 0,
                }
            )
        return batches.from_rows(rows, "step_scores")


@dataclass
class ConstantScorer:
    """Every step gets the same score: every comparison is a tie."""

    value: float | None = 0.5
    calls: int = 0

    def score_steps(self, labeled_steps: pa.Table) -> pa.Table:
        self.calls += 1
        return batches.from_rows(
            [
                {
                    "problem_id": r["problem_id"],
                    "solution_id": r["solution_id"],
                    "step_idx": r["step_idx"],
                    "score": self.value,
                    "num_valid": int(self.value is not None),
                    "num_invalid": int(self.value is None),
                }
                for r in labeled_steps.to_pylist()
            ],
            "step_scores",
        )


@dataclass
class OracleJudge:
    """Pairwise judge: prefers the candidate whose solution so far is correct. When both are
    equally good it picks slot A (position bias), so in both orders each wins once: a tie.
    `tie_after_steps`: at prefixes of at least this many steps it always picks slot A (no
    discrimination at all), to provoke rollbacks."""

    problems: dict[str, ArithProblem]
    tie_after_steps: int | None = None
    calls: list[dict] = field(default_factory=list)

    def compare(self, candidates: pa.Table) -> pa.Table:
        candidates = batches.validate(candidates, "candidates", where="OracleJudge")
        self.calls.append(
            {"problem_ids": candidates.column("problem_id").to_pylist(), "rows": candidates.num_rows}
        )
        groups: dict[str, list[dict]] = {}
        for row in candidates.to_pylist():
            groups.setdefault(row["prefix_id"], []).append(row)
        rows = []
        for prefix_id, group in groups.items():
            for i, a in enumerate(group):
                for b in group[i + 1 :]:
                    for order, (x, y) in (("AB", (a, b)), ("BA", (b, a))):
                        winner = self._pick(x, y)
                        rows.append(
                            {
                                "problem_id": a["problem_id"],
                                "prefix_id": prefix_id,
                                # As the real judge writes them: the pair (a, b) in both
                                # rows, `order` says which of them sat in slot A.
                                "candidate_a": a["candidate_id"],
                                "candidate_b": b["candidate_id"],
                                "order": order,
                                "judgment": "[[A]]" if winner is x else "[[B]]",
                                "winner": winner["candidate_id"],
                                "valid": True,
                            }
                        )
        return batches.from_rows(rows, "pairwise_judgments")

    def _pick(self, x: dict, y: dict) -> dict:
        if self.tie_after_steps is not None and len(x["prefix_steps"]) >= self.tie_after_steps:
            return x
        problem = self.problems[x["problem_id"]]
        x_ok = first_error(problem, [*x["prefix_steps"], x["step"]]) == -1
        y_ok = first_error(problem, [*y["prefix_steps"], y["step"]]) == -1
        return y if y_ok and not x_ok else x


def search_cfg(**kwargs) -> SearchConfig:
    base = {"samples_per_prompt": 4, "beam_width": 2, "candidates_per_step": 4, "max_depth": 10}
    return SearchConfig(**{**base, **kwargs})


def world(count: int = 8, **generator_kwargs) -> tuple[list[ArithProblem], pa.Table, FakeGenerator]:
    problems = make_problems(count)
    by_id = {p.problem_id: p for p in problems}
    return problems, arith.problems_table(problems), FakeGenerator(by_id, **generator_kwargs)


# --------------------------------------------------------------------------------------------
# The fakes themselves behave as documented (the other tests lean on them).


def test_oracle_flags_the_first_wrong_step():
    p = make_problems(1)[0]
    steps = list(p.steps)
    assert first_error(p, steps) == -1 and STYLE.extract_answer(steps) == p.answer
    bad = [steps[0], _wrong(steps[1], 2), *steps[2:]]
    assert first_error(p, bad) == 1


def test_generator_is_deterministic_and_guarantees_a_correct_candidate():
    problems, table, gen = world(4, p_correct=0.0, guarantee_correct=True)
    prefixes = batches.from_rows(
        [
            {
                "problem_id": p.problem_id,
                "prefix_id": p.problem_id,
                "question": p.question,
                "prefix_steps": [],
            }
            for p in problems
        ],
        "prefixes",
    )
    first = gen.expand(prefixes, 4, SamplingConfig()).to_pylist()
    assert first == gen.expand(prefixes, 4, SamplingConfig()).to_pylist()
    for p in problems:
        steps = [r["step"] for r in first if r["problem_id"] == p.problem_id]
        assert sum(s == p.steps[0] for s in steps) == 1
