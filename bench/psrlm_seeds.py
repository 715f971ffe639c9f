"""PSRLM's iterations over several sampling seeds: the mean gain of the last model over M1, with
its interval.

    .venv/bin/python bench/psrlm_seeds.py [--recipe recipes/tiny_psrlm.yaml | --run runs/<psrlm run>]
        [--seeds 0 1 2] [--set KEY=VALUE ...] [--root runs/psrlm_seeds] [--smoke]

Each seed is one `rprm-ray run` of the recipe with `generator.sampling.seed` (the search's
candidates and the self-judge's held-out candidates) set to it, named `<recipe>-seed<s>` under
`--root`. M1 does not depend on that seed: it is trained once (the model cache) and every seed's
iterations start from the same M1, so the seeds differ only in what the searches sampled. A seed
whose run already finished is read back, and an unfinished one resumes. With `--run`, that finished
psrlm run's recipe is rerun, and the run itself stands for its own seed.

Printed: per seed, pass@1 of M1..M_last and the last model's gain with its paired interval (and,
with loop.sft_control, the last model against its SFT-spend control); then the mean gain over the
seeds, its interval from resampling problems (each problem's last-model score is its fraction of
seeds solved), and the spread between seeds; with the control, the mean of the last model
against it the same way; and the largest loss of pass@1 from one model to the next in any seed
(the recipe's "no iteration loses more than 1 point").

`--smoke` (with `--run` of a micro psrlm run): one more seed beside the run's own, to check that
the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from rprm_ray.config import load_recipe
from rprm_ray.evaluation.stats import paired_difference

ROOT = Path(__file__).resolve().parents[1]
SEED_FIELD = "generator.sampling.seed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def correct(run_dir: Path, stage: str) -> dict[str, bool]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = pq.read_table(run_dir / manifest["stages"][stage]["outputs"]["solutions"]).to_pylist()
    return {r["problem_id"]: bool(r["correct"]) for r in rows}


def finished(run_dir: Path, iterations: int) -> bool:
    manifest = run_dir / "manifest.json"
    return manifest.is_file() and f"iter_{iterations}/policy_eval" in json.loads(manifest.read_text())["stages"]


def run_seed(recipe_path: Path, sets: list[str], seed: int, root: Path, name: str) -> Path:
    """The finished run of one seed: made, resumed, or read back."""
    run_dir = root / name
    iterations = load_recipe(recipe_path, sets).loop.iterations
    if finished(run_dir, iterations):
        print(f"seed {seed}: reading {run_dir}", flush=True)
        return run_dir
    args = [sys.executable, "-m", "rprm_ray.cli", "run", str(recipe_path)]
    for s in [*sets, f"{SEED_FIELD}={seed}", f"run_root={root}", f"name={name}",
              f"resources.serve_port={free_port()}"]:
        args += ["--set", s]
    if (run_dir / "manifest.json").is_file():
        args += ["--resume", str(run_dir)]
    print(f"seed {seed}: {' '.join(args[3:])}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("RAY_ADDRESS", None)  # each run starts its own local cluster, as `rprm-ray run` does
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    (root / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"psrlm_seeds: seed {seed}'s run failed (exit {done.returncode}); its output is in "
                         f"{root / (name + '.log')}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return run_dir


def seed_figures(run_dir: Path, iterations: int) -> dict:
    """pass@1 per model, the last model's per-problem correctness, and its SFT-spend control's."""
    per_model = [correct(run_dir, f"iter_{k}/policy_eval") for k in range(iterations + 1)]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    control_stage = f"iter_{iterations}/sft_control_eval"
    return {"pass@1": [100.0 * sum(c.values()) / len(c) for c in per_model], "m1": per_model[0],
            "last": per_model[-1], "control": correct(run_dir, control_stage) if control_stage in stages else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny_psrlm.yaml")
    source.add_argument("--run", type=Path, help="a finished psrlm run: its recipe is rerun, and it is its own seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--root", type=Path, default=None, help="where the seeds' runs go (default runs/psrlm_seeds)")
    parser.add_argument("--smoke", action="store_true", help="with --run: one more seed beside the run's own")
    args = parser.parse_args()

    recipe_path = (args.run / "recipe.yaml") if args.run else args.recipe
    recipe = load_recipe(recipe_path, args.sets)
    if recipe.loop.mode != "psrlm":
        raise SystemExit(f"psrlm_seeds: {recipe_path} is a {recipe.loop.mode} recipe (loop.mode), not psrlm")
    own_seed = recipe.generator.sampling.seed
    seeds = [own_seed, own_seed + 1] if args.smoke else args.seeds
    if args.smoke and not args.run:
        raise SystemExit("psrlm_seeds: --smoke reruns a finished (micro) psrlm run: give --run")
    root = (args.root or (args.run.parent / "psrlm_seeds" if args.run else ROOT / "runs" / "psrlm_seeds")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    n = recipe.loop.iterations

    figures = {}
    for seed in seeds:
        if args.run and seed == own_seed and not args.sets:
            run_dir = args.run
        else:
            run_dir = run_seed(recipe_path, args.sets, seed, root, f"{recipe.name}-seed{seed}")
        figures[seed] = seed_figures(run_dir, n)

    print(f"\npass@1 per model over {len(seeds)} sampling seeds ({SEED_FIELD}); {recipe_path}")
    print(f"{'seed':>6}  " + "  ".join(f"{'M' + str(k + 1):>6}" for k in range(n + 1)) + "  last - M1 (95% CI)")
    gains = []
    for seed, f in figures.items():
        problems = sorted(f["m1"])
        d = paired_difference([f["last"][p] for p in problems], [f["m1"][p] for p in problems])
        gains.append(d.points)
        line = f"{seed:>6}  " + "  ".join(f"{v:6.2f}" for v in f["pass@1"]) + f"  {d.text()}"
        if f["control"] is not None:
            c = paired_difference([f["last"][p] for p in problems], [f["control"][p] for p in problems])
            line += f"; vs its SFT-spend control {c.text()}"
        print(line)
    # Each problem's score: its fraction of seeds solved. M1 is one model (greedy) in every seed,
    # so its fraction is 0 or 1 unless an engine's greedy decoding differed between runs.
    problems = sorted(next(iter(figures.values()))["m1"])

    def fraction_solved(which: str) -> list[float]:
        return [sum(f[which][p] for f in figures.values()) / len(figures) for p in problems]

    last = fraction_solved("last")
    mean = paired_difference(last, fraction_solved("m1"))
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(f"result: mean gain M{n + 1} - M1 over {len(seeds)} seeds: {mean.text()} (problems resampled); "
          f"per seed {', '.join(f'{g:+.2f}' for g in gains)}, sd {spread:.2f}")
    if all(f["control"] is not None for f in figures.values()):
        # The control's steps follow each seed's pair count, so it is its own model per seed too.
        print(f"result: mean M{n + 1} - its SFT-spend control over {len(seeds)} seeds: "
              f"{paired_difference(last, fraction_solved('control')).text()} (problems resampled)")
    losses = [(f["pass@1"][k] - f["pass@1"][k + 1], seed, k) for seed, f in figures.items() for k in range(n)]
    drop, seed, k = max(losses, default=(0.0, None, 0))
    print(f"largest loss of pass@1 from one model to the next: {max(drop, 0.0):.2f} points"
          + (f" (seed {seed}, M{k + 1} -> M{k + 2})" if drop > 0 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
