"""`rprm-ray data prm800k IN OUT [--neutral correct|error]`: dataset converters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="converter", required=True, metavar="FORMAT")
    prm = sub.add_parser("prm800k", help="PRM800K JSONL -> ProcessBench-format labeled solutions",
                         description="Convert one PRM800K file (openai/prm800k data/phase*_*.jsonl) to the "
                                     "ProcessBench-format JSONL that task.dataset.*_labeled_solutions reads.")
    prm.add_argument("input", type=Path, help="a PRM800K JSONL file")
    prm.add_argument("output", type=Path, help="where to write (JSONL; a JSON array if it ends in .json)")
    prm.add_argument("--neutral", choices=["correct", "error"], default="correct",
                     help="how a step rated 0 (neutral) counts (default: correct)")


def run(args: argparse.Namespace) -> int:
    from rprm_ray import prm800k

    try:
        result = prm800k.convert(args.input, neutral=args.neutral)
    except prm800k.Prm800kError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.rows:
        print(f"error: {args.input}: no usable labeled solution (skipped: {_counts(result)})", file=sys.stderr)
        return 2
    out = prm800k.write(result.rows, args.output)
    print(f"wrote {len(result.rows)} solutions ({result.with_error} with a wrong step) to {out}"
          + (f"; skipped: {_counts(result)}" if result.skipped else ""))
    return 0


def _counts(result) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(result.skipped.items())) or "none"
