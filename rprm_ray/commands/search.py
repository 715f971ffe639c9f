"""`rprm-ray search RECIPE --strategy bon|beam|greedy|self_judged`: PRM-guided search on a Ray
cluster. The policy runs in PolicyGenerator actors, the judge in the ProcessJudge Serve
deployment (both through rprm_ray.roles); the strategy (rprm_ray.search) drives them a depth
level at a time for a whole batch of prompts. Results go to Parquet (one row per problem, schema
rprm_ray.search.base.RESULTS_SCHEMA) and accuracy is printed."""

from __future__ import annotations

import argparse
import sys
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
        type=Path,
        default=None,
        metavar="DIR",
        help="policy weights (default: models.policy; required when that is 'tiny': pass the "
        "bootstrapped policy directory)",
    )
    parser.add_argument(
        "--judge-model",
        type=Path,
        default=None,
        metavar="DIR",
        help="judge weights (default: models.judge; the policy itself for self_judged or when "
        "models.judge is null)",
    )
    parser.add_argument(
        "--problems",
        type=Path,
        default=None,
        metavar="FILE.parquet",
        help="a `problems` Parquet table to solve (default: the task's eval split)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="solve only the first N problems"
    )


def run(args: argparse.Namespace) -> int:
    from rprm_ray.batches import BatchError, from_parquet
    from rprm_ray.config import RecipeError, load_recipe
    from rprm_ray.tasks import TaskError, make_task

    overrides = list(args.overrides)
    if args.strategy:
        overrides.append(f"search.strategy={args.strategy}")
    try:
        recipe = load_recipe(args.recipe, overrides)
        task = make_task(recipe)
        problems = from_parquet(args.problems, "problems") if args.problems else task.problems("eval")
        policy_dir, judge_dir = model_dirs(recipe, args.policy_model, args.judge_model)
    except (RecipeError, TaskError, BatchError, ValueError, FileNotFoundError) as exc:
        print(f"rprm-ray search: {exc}", file=sys.stderr)
        return 2
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


def model_dirs(recipe: Recipe, policy: Path | None, judge: Path | None) -> tuple[str, str]:
    """(policy, judge) weights. A tiny model must be given as a directory: an untrained one writes
    noise. self_judged and models.judge null mean the policy judges itself (PSRLM)."""

    def pick(given: Path | None, spec: Any, role: str, flag: str) -> str:
        if given is not None:
            if not (given / "config.json").is_file():
                raise FileNotFoundError(f"{flag} {given}: not a model directory (no config.json)")
            return str(given.resolve())
        if spec.is_tiny:
            raise ValueError(
                f"models.{role} is 'tiny': pass {flag} DIR with the bootstrapped {role} "
                "(an untrained tiny model writes noise)"
            )
        from rprm_ray.hub import resolve_model

        return str(resolve_model(spec.name_or_path, revision=spec.revision, cache=recipe.models.hub_cache,
                                 where=f"models.{role}.name_or_path"))

    policy_dir = pick(policy, recipe.models.policy, "policy", "--policy-model")
    if recipe.search.strategy == "self_judged" or recipe.models.judge is None:
        return policy_dir, str(judge.resolve()) if judge else policy_dir
    return policy_dir, pick(judge, recipe.models.judge, "judge", "--judge-model")


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
