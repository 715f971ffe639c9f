"""Training and evaluation tables drawn from the arithmetic world and its teacher: the policy's
SFT rows, labeled steps, the judge's worked-step rows and pairwise judgments.

Separate from `arith.py` and `arith_teacher.py` because these decide which problems, prefixes and
errors are sampled (seeded per problem, so a problem's rows never depend on the others), not what
a step or a judgment is; `ArithTask` serves them behind the Task interface.
"""

from __future__ import annotations

import random

import pyarrow as pa

from rprm_ray.batches import from_rows
from rprm_ray.prompts import CompactStyle
from rprm_ray.tasks.arith import (
    STYLE,
    ArithProblem,
    corrupt_step,
    expected_next,
    expected_step,
    inject_error,
)
from rprm_ray.tasks.arith_teacher import teacher_pairwise, worked_step


def policy_sft_table(problems: list[ArithProblem]) -> pa.Table:
    """PSRLM IFT-style examples: prompt = policy prompt, completion = every reference step + "\\n"
    (the trainer appends EOS, which ends a solution)."""
    rows = [
        {
            "example_id": f"policy/{p.problem_id}",
            "kind": "policy",
            "prompt": STYLE.policy_prompt(p.question),
            "completion": STYLE.format_solution(list(p.steps)),
        }
        for p in problems
    ]
    return from_rows(rows, "sft_examples")


def _problem_rng(seed: int, purpose: str, problem_id: str) -> random.Random:
    """One stream per problem: a problem's rows do not change when other problems are added."""
    return random.Random(f"{purpose}-{seed}-{problem_id}")


def labeled_solutions(problems: list[ArithProblem], seed: int, error_rate: float) -> list[dict]:
    """One solution per problem: with probability `error_rate` an injected error, else the
    reference. Each: problem, solution_id, steps, first_error (-1 when correct), kind."""
    out = []
    for p in problems:
        rng = _problem_rng(seed, "labeled", p.problem_id)
        if rng.random() < error_rate:
            inj = inject_error(p, rng)
            out.append(
                {
                    "problem": p,
                    "solution_id": f"{p.problem_id}/err",
                    "steps": inj.steps,
                    "first_error": inj.error_idx,
                    "kind": inj.kind,
                }
            )
        else:
            out.append(
                {
                    "problem": p,
                    "solution_id": f"{p.problem_id}/ref",
                    "steps": list(p.steps),
                    "first_error": -1,
                    "kind": "correct",
                }
            )
    return out


def labeled_steps_table(problems: list[ArithProblem], seed: int, error_rate: float) -> pa.Table:
    """R-PRM step instances, ProcessBench expansion: a correct solution contributes every step
    (all labeled True); an erroneous one its steps up to and including the first error."""
    from rprm_ray.evaluation.processbench import step_rows

    rows = []
    for sol in labeled_solutions(problems, seed, error_rate):
        p = sol["problem"]
        rows += step_rows(p.problem_id, sol["solution_id"], p.question, sol["steps"], sol["first_error"])
    return from_rows(rows, "labeled_steps")


def _judged_prefix(problem: ArithProblem, rng: random.Random) -> list[str]:
    """A prefix of the reference solution, or half the time of an injected-error one, so a
    judgment stays local to the prefix as written."""
    steps = inject_error(problem, rng).steps if rng.random() < 0.5 else list(problem.steps)
    return steps[:rng.randrange(len(steps))]


def worked_step_table(problems: list[ArithProblem], seed: int, num_examples: int,
                      style: CompactStyle = STYLE) -> pa.Table:
    """The judge's first line alone: its own worked step (`R:`), written from the context only, as
    both the pairwise judgment and the pointwise critique open. Extra practice for the one line a
    self-judge's verdicts hang on: psrlm's M1 wrote it right less often than its own greedy step
    at the prefixes it had to judge (72% against 82%), having learned it from the pairwise rows
    alone. Prefixes as in `pairwise_sft_table`; `num_examples` rows, cycling over the problems."""
    if not problems:
        raise ValueError("worked_step_table: no problems")
    rows = []
    for j in range(num_examples):
        p = problems[j % len(problems)]
        prefix = _judged_prefix(p, _problem_rng(seed, f"worked-{j}", p.problem_id))
        rows.append({"example_id": f"worked_step/{p.problem_id}/{j}", "kind": "worked_step",
                     "prompt": style.judge_context(p.question, prefix),
                     "completion": f"R:{worked_step(expected_next(p.question, prefix).step or '-')}\n"})
    return from_rows(rows, "sft_examples")


def pairwise_sft_table(problems: list[ArithProblem], seed: int, num_examples: int,
                       style: CompactStyle = STYLE) -> pa.Table:
    """PSRLM EFT-style examples: a prefix (the reference, or half the time an injected-error
    solution, so judgments stay local to the prefix as written), the right next step and a
    realistic wrong one; each pair appears in both A/B orders (2 rows), `num_examples` rows in
    all (rounded down to even), cycling over the problems. Prompts are written in `style` (the
    run's: its judge prompts may open with `J:`)."""
    if not problems:
        raise ValueError("pairwise_sft_table: no problems")
    rows = []
    n_pairs = num_examples // 2
    for j in range(n_pairs):
        p = problems[j % len(problems)]
        rng = _problem_rng(seed, f"pairwise-{j}", p.problem_id)
        prefix = _judged_prefix(p, rng)
        right = expected_step(p.question, prefix)
        wrong, _ = corrupt_step(rng, p.question, prefix)
        assert right is not None
        for order, (a, b) in (("AB", (right, wrong)), ("BA", (wrong, right))):
            judgment = teacher_pairwise(p.question, prefix, a, b)
            assert judgment is not None  # corrupt_step's errors always show in the comparison
            rows.append(
                {
                    "example_id": f"pairwise/{p.problem_id}/{j}/{order}",
                    "kind": "pairwise",
                    "prompt": style.pairwise_prompt(p.question, prefix, a, b),
                    "completion": judgment,
                }
            )
    return from_rows(rows, "sft_examples")
