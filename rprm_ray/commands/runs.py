"""`rprm-ray report RUN` (rebuild a run's report from its manifest and tables) and `rprm-ray runs`
(list the runs under a directory with their mode, the stage reached and headline figures).
Neither starts Ray."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rprm_ray.data import DataError


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory (runs/<name>)")


def run_report(args: argparse.Namespace) -> int:
    from rprm_ray.report import summary_text, write_report

    if not (args.run_dir / "manifest.json").is_file():
        raise DataError(f"{args.run_dir}: not a run directory (no manifest.json)")
    write_report(args.run_dir)
    print(summary_text(args.run_dir))
    return 0


def add_runs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("runs"), metavar="DIR",
                   help="directory holding run directories (default: runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")


def run_info(run_dir: Path) -> dict[str, Any]:
    """What `runs` shows of one run directory: name, mode, stages done, the last one, when, and
    headline figures (from report.collect)."""
    from rprm_ray.manifest import Manifest
    from rprm_ray.report import bon_accuracy, collect

    manifest = Manifest.load(run_dir)
    stages = manifest.data.get("stages", {})
    last = list(stages.items())[-1] if stages else (None, {})  # stages are recorded in run order
    summary = collect(manifest)
    figures: dict[str, float] = {}
    if "pass@1_final" in summary:
        figures["pass@1"] = summary["pass@1_final"]
    judge = summary.get("judge", {})
    if judge:
        phase = "dpo" if "dpo" in judge else next(iter(judge))
        figures[f"judge_f1_{phase}"] = judge[phase]["f1"]
    bon = summary.get("best_of_n")
    if bon:
        n = max(int(k) for k in bon["bon_min"])
        figures[f"bon@{n}"] = bon_accuracy(bon, n)
    if summary.get("beam"):
        figures["beam"] = summary["beam"]["beam_accuracy"]
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "mode": (manifest.data.get("recipe") or {}).get("loop", {}).get("mode", "?"),
        "stages_done": len(stages),
        "last_stage": last[0],
        "finished_at": last[1].get("finished_at") or manifest.data.get("created_at"),
        "figures": figures,
    }


def run_runs(args: argparse.Namespace) -> int:
    from rprm_ray.manifest import ManifestError

    if not args.root.is_dir():
        raise DataError(f"--root {args.root}: no such directory")
    infos, unreadable = [], []
    for path in sorted(p for p in args.root.iterdir() if (p / "manifest.json").is_file()):
        try:
            infos.append(run_info(path))
        except (ManifestError, KeyError, TypeError, ValueError) as exc:
            unreadable.append(f"{path}: {exc}")
    if args.json:
        for info in infos:
            print(json.dumps(info))
    elif not infos:
        print(f"no runs under {args.root}")
    else:
        rows = [("run", "mode", "stages", "last stage", "finished", "figures")]
        for i in infos:
            figures = ", ".join(f"{k} {v:.1f}" for k, v in i["figures"].items()) or "-"
            rows.append((i["name"], i["mode"], str(i["stages_done"]), i["last_stage"] or "-",
                         i["finished_at"] or "-", figures))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    for line in unreadable:
        print(f"rprm-ray runs: skipped {line}", file=sys.stderr)
    return 0
