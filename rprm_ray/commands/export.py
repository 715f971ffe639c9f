"""`rprm-ray export RUN --role judge|policy --to DIR [--force]`: a run's latest judge or policy as a
self-contained Hugging Face model directory (rprm_ray.export)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory (runs/<name>)")
    p.add_argument("--role", choices=("judge", "policy"), required=True,
                   help="which model: the run's latest judge, or its latest policy")
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="where to write the model directory")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")


def run(args: argparse.Namespace) -> int:
    from rprm_ray.export import export_model

    out = export_model(args.run_dir, args.role, args.to, force=args.force)
    files = sorted(p.name for p in out.iterdir())
    print(f"exported the {args.role} of {args.run_dir} -> {out} ({', '.join(files)})")
    return 0
