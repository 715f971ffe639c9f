"""`rprm-ray search RECIPE --strategy bon|beam|greedy|self_judged`: PRM-guided search on a Ray
cluster. The policy runs in PolicyGenerator actors, the judge in the ProcessJudge Serve
deployment (both through rprm_ray.roles); the strategy (rprm_ray.search) drives them a depth
level at a time for a whole batch of prompts. Results go to Parquet (one row per problem, schema
rprm_ray.search.base.RESULTS_SCHEMA) and accuracy is printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from rprm_ray.config import Recipe

STRATEGY_NAMES = ("bon", "beam", "greedy", "self_judged")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="recipe YAML (e.g. recipes/tiny_arith.yaml)")
    parser.add_argument(
        "--strategy", choices=STRATEGY_NAMES, default=None, help="default: the recipe's search.strategy"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set search.samples_per_prompt=16 (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.parquet",
        help="results table (default: <run_root>/<name>/search/<strategy>.parquet)",
    )
    parser.add_argument(
        "--policy-model",
        default=None,
        metavar="MODEL_OR_RUN",
        help="policy weights: a model directory, a run directory (its latest policy) or a hub name "
        "(default: models.policy; required when that is 'tiny')",
    )
    parser.add_argument(
        "--judge-model",
        default=None,
        metavar="MODEL_OR_RUN",
        help="judge weights: a model directory, a run directory (its latest judge) or a hub name "
        "(default: models.judge; the policy itself for self_judged or when models.judge is null)",
    )
    parser.add_argument(
        "--problems",
        default=None,
        metavar="FILE",
        help="problems to solve: a `problems` Parquet table, or a math benchmark file or hub dataset "
        "as `eval math --data` reads (GSM8K, MATH-500, AIME24, AMC23); default: the task's eval split",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="solve only the first N problems"
    )


def run(args: argparse.Namespace) -> int:
    # RecipeError / TaskError / BatchError / DataError: `rprm-ray search: error: ...` (cli.main)
    from rprm_ray.config import load_recipe
    from rprm_ray.tasks import make_task

    overrides = list(args.overrides)
    if args.strategy:
        overrides.append(f"search.strategy={args.strategy}")
    recipe = load_recipe(args.recipe, overrides)
    task = make_task(recipe)
    problems = load_problems(args.problems) if args.problems else task.problems("eval")
    policy_dir, judge_dir = model_dirs(recipe, args.policy_model, args.judge_model)
    if args.limit:
        problems = problems.slice(0, args.limit)
    strategy = recipe.search.strategy
    out = args.out or recipe.run_dir / "search" / f"{strategy}.parquet"
    results = _search(recipe, task, problems, policy_dir, judge_dir)

    import pyarrow.parquet as pq

    from rprm_ray.search import accuracy

    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(results, out)
    total = sum(results.column("candidate_steps").to_pylist())
    print(f"strategy={strategy} problems={results.num_rows} candidate_steps={total} -> {out}")
    for column, label in (
        ("correct", "accuracy"),
        ("weighted_correct", "weighted"),
        ("majority_correct", "majority"),
    ):
        value = accuracy(results, column)
        if value is not None:
            print(f"{label}: {100 * value:.1f}%")
    return 0


def load_problems(source: str) -> pa.Table:
    """A `problems` table from Parquet, or from a math benchmark file / hub dataset."""
    if source.endswith(".parquet"):
        from rprm_ray.batches import from_parquet

        return from_parquet(source, "problems")
    from rprm_ray.data import load_math_problems

    return load_math_problems(source)


def model_dirs(recipe: Recipe, policy: str | Path | None, judge: str | Path | None) -> tuple[str, str]:
    """(policy, judge) weights, each given as a model directory, a run directory or a hub name
    (rprm_ray.model_source). A tiny model must be given: an untrained one writes noise.
    self_judged and models.judge null mean the policy judges itself (PSRLM)."""
    from rprm_ray.data import DataError
    from rprm_ray.model_source import resolve_model

    def pick(given: str | Path | None, spec: Any, role: Any, flag: str) -> str:
        if given is not None:
            return resolve_model(str(given), role, flag).model_dir
        if spec.is_tiny:
            raise DataError(
                f"models.{role} is 'tiny': pass {flag} MODEL_OR_RUN with the bootstrapped {role} "
                "(an untrained tiny model writes noise)"
            )
        from rprm_ray.hub import resolve_model as resolve_hub_model

        return str(resolve_hub_model(spec.name_or_path, revision=spec.revision, cache=recipe.models.hub_cache,
                                 where=f"models.{role}.name_or_path"))

    policy_dir = pick(policy, recipe.models.policy, "policy", "--policy-model")
    if recipe.search.strategy == "self_judged" or recipe.judge_model is None:
        return policy_dir, pick(judge, None, "judge", "--judge-model") if judge else policy_dir
    return policy_dir, pick(judge, recipe.judge_model, "judge", "--judge-model")


def _search(recipe: Recipe, task: Any, problems: pa.Table, policy_dir: str, judge_dir: str) -> pa.Table:
    from rprm_ray.roles import Roles, init_ray
    from rprm_ray.search import STRATEGIES

    init_ray(recipe)
    roles = Roles(recipe)
    try:
        generator = roles.generator(policy_dir)
        judge = roles.judge(judge_dir)
        strategy = recipe.search.strategy
        run_strategy = STRATEGIES[strategy]
        if strategy == "self_judged":
            return run_strategy(
                problems,
                generator,
                judge,
                recipe.search,
                task.style,
                rollback_on_tie=recipe.loop.rollback_on_tie,
                grade=task.grade,
            )
        return run_strategy(problems, generator, judge, recipe.search, task.style, grade=task.grade)
    finally:
        roles.shutdown()
