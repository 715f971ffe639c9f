"""`rprm-ray run RECIPE [--set k=v ...] [--resume RUN_DIR] [--dry-run]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/tiny_arith.yaml for every field)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field by its dotted name, e.g. --set loop.iterations=3")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue an interrupted run: finished stages are skipped")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the recipe and print the placement plan; start nothing")


def run(args: argparse.Namespace) -> int:
    from rprm_ray.config import load_recipe

    overrides = list(args.overrides)
    if args.resume is not None:
        # A run directory names its run: resuming runs/<name> needs no `--set name=<name>`.
        given = {o.split("=", 1)[0].strip() for o in overrides}
        if "name" not in given:
            overrides.append(f"name={args.resume.name}")
        if "run_root" not in given:
            overrides.append(f"run_root={args.resume.parent}")
    recipe = load_recipe(args.recipe, overrides)  # RecipeError: rprm-ray run: error: ... (cli.main)
    from rprm_ray.loop import format_plan

    print(format_plan(recipe))
    if args.dry_run:
        print("dry run: recipe valid; nothing started")
        return 0
    return execute(recipe, args.resume)


def execute(recipe, resume_dir: Path | None) -> int:
    from rprm_ray.loop import Run
    from rprm_ray.pipeline import run_pipeline
    from rprm_ray.report import summary_text, write_report
    from rprm_ray.roles import Roles, init_ray

    run = Run.open(recipe, resume_dir)  # RunError / ManifestError: reported by cli.main
    init_ray(recipe)
    run.roles = Roles(recipe)
    try:
        run_pipeline(run)
    finally:
        run.roles.shutdown()
        write_report(run.dir)
    print(summary_text(run.dir))
    return 0
