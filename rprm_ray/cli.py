"""`rprm-ray` command line. Each subcommand's arguments and work live in the module that owns it;
this file only routes, and imports each module lazily so `rprm-ray --help` is instant."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rprm_ray.commands.run", "run a recipe (R-PRM judge training, PSRLM, guided) on Ray"),
    "eval": ("rprm_ray.commands.evaluate", "score ProcessBench / Best-of-N / math accuracy"),
    "search": ("rprm_ray.commands.search", "PRM-guided Best-of-N, beam or greedy search"),
    "submit": ("rprm_ray.commands.submit", "submit a recipe to a Ray cluster (Job Submission SDK)"),
    "status": ("rprm_ray.commands.submit", "show a submitted job's status"),
    "logs": ("rprm_ray.commands.submit", "print a submitted job's logs"),
    "bootstrap": ("rprm_ray.commands.bootstrap", "build the tiny models and bootstrap the policy"),
    "tiny": ("rprm_ray.commands.tiny", "lay a tiny model into the hub cache as ORG/NAME (no network needed)"),
    "data": ("rprm_ray.commands.data", "convert datasets (PRM800K) to the formats recipes read"),
    "serve": ("rprm_ray.commands.serve", "serve a judge over HTTP (Ray Serve): /v1/score, /get_reward"),
    "export": ("rprm_ray.commands.export", "export a run's judge or policy as a Hugging Face model directory"),
    "report": ("rprm_ray.commands.runs", "rebuild a run's report (metrics.json, plots, report.html)"),
    "runs": ("rprm_ray.commands.runs", "list runs: mode, stage reached, headline figures"),
    "stop": ("rprm_ray.commands.submit", "stop a submitted job"),
}

# Errors a command expects (bad input, missing files, unreachable cluster): one line on stderr,
# `rprm-ray <command>: error: ...`, exit 2. Looked up by module so `--help` imports none of them.
EXPECTED_ERRORS: tuple[tuple[str, str], ...] = (
    ("rprm_ray.config", "RecipeError"),
    ("rprm_ray.data", "DataError"),
    ("rprm_ray.batches", "BatchError"),
    ("rprm_ray.tasks.base", "TaskError"),
    ("rprm_ray.manifest", "ManifestError"),
    ("rprm_ray.loop", "RunError"),
    ("rprm_ray.commands.submit", "SubmitError"),
    ("rprm_ray.hub", "ModelResolutionError"),
)


def is_expected_error(exc: BaseException) -> bool:
    for module, name in EXPECTED_ERRORS:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(exc, getattr(mod, name)):
            return True
    return False


def _version() -> str:
    from rprm_ray import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rprm-ray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rprm-ray {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        adder = getattr(mod, f"add_{name}_arguments", None) or mod.add_arguments
        adder(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mod = importlib.import_module(args._module)
    runner = getattr(mod, f"run_{args.command}", None) or mod.run
    try:
        return int(runner(args) or 0)
    except Exception as exc:
        if not is_expected_error(exc):
            raise
        label = " ".join(str(part) for part in (args.command, getattr(args, "benchmark", None)) if part)
        print(f"rprm-ray {label}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
