"""The judge's evaluation set of the policy's own mistakes (guided mode, a world with step labels):
M1 samples one solution per held-out problem as the searches sample, the world's labeler marks
each step, and `stages.judge.judge_f1_stage` scores the judge on it beside the injected errors."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.evaluation.own_mistakes import own_labeled_steps
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages.policy import eval_problems, grade_solutions, solution_sampling

STAGE = "iter_0/own_solutions"


def measures_own_mistakes(run: Run) -> bool:
    """Whether the run builds the set: guided mode (a policy and a separate judge), step labels."""
    return run.recipe.loop.mode == "guided" and run.task.has_step_labels


def own_solutions_stage(run: Run) -> StageResult:
    solutions, steps, counts = sample_own_steps(run, eval_problems(run), "solutions", seed_offset=1)
    run.require_rows(steps, "M1's sampled solutions of the held-out problems have no step to judge")
    return StageResult(metrics={**counts, "own_steps": steps.num_rows,
                                "temperature": run.recipe.generator.sampling.temperature},
                       tables={"solutions": (solutions, "solutions"), "steps": (steps, "labeled_steps")})


def sample_own_steps(run: Run, problems: pa.Table, name: str, seed_offset: int) -> tuple[pa.Table, pa.Table, dict]:
    """M1 samples one solution per problem at the search's temperature (the mistakes a judge
    meets when it scores the policy's candidates), persisted per chunk under `name`; the world's
    labeler marks its steps. Returns the graded solutions, their `labeled_steps` and counts."""
    r = run.recipe
    generator = run.roles.generator(run.state["m1_dir"])
    sampling = solution_sampling(run, r.generator.sampling.temperature, seed_offset=seed_offset)
    solutions = run.map_chunks(
        name, problems, r.generator.problems_per_chunk,
        lambda chunk: {"solutions": grade_solutions(run, generator.generate(chunk, n=1, sampling=sampling), chunk)},
        {"solutions": "solutions"})["solutions"]
    steps, counts = own_labeled_steps(solutions, run.task.step_is_right)
    return solutions, steps, counts


def own_steps(run: Run) -> pa.Table | None:
    """The set, when this run built it."""
    return run.table(STAGE, "steps", "labeled_steps") if run.manifest.is_done(STAGE) else None
