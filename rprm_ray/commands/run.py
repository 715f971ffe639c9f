"""`rprm-ray run RECIPE [--set k=v ...] [--resume RUN_DIR] [--dry-run]`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/tiny_arith.yaml for every field)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field by its dotted name, e.g. --set loop.iterations=3")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue an interrupted run: finished stages are skipped")
    p.add_argument("--rerun", metavar="STAGE",
                   help="with --resume: forget STAGE (e.g. iter_1/judge_dpo) and every later stage, "
                        "so they run again (a stage whose output was reported corrupt)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the recipe and print the placement plan; start nothing")


def run(args: argparse.Namespace) -> int:
    from rprm_ray.config import load_recipe
    from rprm_ray.loop import RunError

    overrides = list(args.overrides)
    if args.resume is not None:
        # A run directory names its run: resuming runs/<name> needs no `--set name=<name>`.
        given = {o.split("=", 1)[0].strip() for o in overrides}
        if "name" not in given:
            overrides.append(f"name={args.resume.name}")
        if "run_root" not in given:
            overrides.append(f"run_root={args.resume.parent}")
    if getattr(args, "rerun", None) and args.resume is None:
        raise RunError("--rerun STAGE needs --resume RUN_DIR")
    recipe = load_recipe(args.recipe, overrides)  # RecipeError: rprm-ray run: error: ... (cli.main)
    from rprm_ray.loop import format_plan

    print(format_plan(recipe))
    if args.dry_run:
        from rprm_ray.hub import length_checks

        errors, notes = length_checks(recipe)
        for line in notes:
            print(f"length: {line}")
        if errors:
            raise RunError("; ".join(f"{args.recipe}: {line}" for line in errors))
        print("dry run: recipe valid; nothing started")
        return 0
    from rprm_ray.hub import resolve_recipe_models

    # A missing model ends the run here, before Ray or any actor starts (ModelResolutionError:
    # one line from cli.main).
    for role, path in resolve_recipe_models(recipe).items():
        print(f"model: {role} = {path}")
    return execute(recipe, args.resume, getattr(args, "rerun", None))


def execute(recipe, resume_dir: Path | None, rerun: str | None = None) -> int:
    from rprm_ray.loop import Run, RunError
    from rprm_ray.manifest import ManifestError
    from rprm_ray.pipeline import run_pipeline
    from rprm_ray.report import summary_text, write_report
    from rprm_ray.roles import Roles, init_ray

    run = Run.open(recipe, resume_dir)  # RunError / ManifestError: reported by cli.main
    if rerun:
        print(f"rerun: forgot {', '.join(run.rerun(rerun))}")
    from rprm_ray.deepspeed_setup import NonFiniteLossError

    with contextlib.ExitStack() as started:
        if recipe.models.teacher.launch:
            started.enter_context(launched_teacher(recipe, run.dir))
        init_ray(recipe)
        run.roles = Roles(recipe)
        try:
            run_pipeline(run)
        except (RunError, ManifestError, NonFiniteLossError) as exc:
            # One line naming the stage; finished stages are kept. A trainer actor's error arrives as
            # Ray's RayTaskError (a subclass of the original): its `cause` is the message to show.
            print(f"rprm-ray run: error: {getattr(exc, 'cause', None) or exc}", file=sys.stderr)
            return 1
        finally:
            run.roles.shutdown()
            write_report(run.dir)
            run.finish()
    print(summary_text(run.dir))
    return 0


@contextlib.contextmanager
def launched_teacher(recipe, run_dir: Path):
    """`models.teacher.launch`: vLLM's OpenAI-compatible server for the teacher model at the
    recipe's url (on this machine), for the length of the run; its log is the run's
    teacher-server.log."""
    from urllib.parse import urlparse

    from rprm_ray.hub import resolve_model
    from rprm_ray.teacher_server import free_port, vllm_openai_server

    t = recipe.models.teacher
    url = urlparse(t.url)
    host = url.hostname or "127.0.0.1"
    port = url.port
    if not port:
        # Port 0: a free port for this run, so runs on one machine never collide; the run's
        # teacher client reads the url from the recipe.
        port = free_port(host)
        t.url = url._replace(netloc=f"{host}:{port}").geturl()
    model_dir = resolve_model(t.model, revision=t.revision, cache=recipe.models.hub_cache, where="models.teacher.model")
    print(f"teacher: starting vLLM's OpenAI-compatible server for {t.model} on {host}:{port}", flush=True)
    with vllm_openai_server(model_dir, served_name=t.model, host=host, port=port,
                            max_model_len=recipe.judge.max_model_len_tokens,
                            log_path=run_dir / "teacher-server.log"):
        yield
