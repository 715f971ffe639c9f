"""Policy bootstrap benchmark: wall time and held-out greedy accuracy of `rprm-ray bootstrap`,
printed beside the targets (>= 60% accuracy, <= 6 min total on a 2-core CPU machine).

    .venv/bin/python bench/bootstrap_policy.py [--recipe recipes/tiny_arith.yaml] [--stages 0 2]
        [--steps N] [--set k=v ...]

With several --stages the same bootstrap runs once per ZeRO stage (fresh model each time, the same
seed), so DeepSpeed's per-stage overhead is read side by side from one invocation. Models go to a
temporary model cache, never the repo's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

TARGET_ACCURACY = 0.60
TARGET_SECONDS = 6 * 60


def main() -> int:
    from rprm_ray.commands.bootstrap import bootstrap_policy
    from rprm_ray.config import load_recipe

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=repo / "recipes" / "tiny_arith.yaml")
    parser.add_argument("--stages", type=int, nargs="+", default=[0], choices=(0, 1, 2, 3),
                        help="ZeRO stages to compare (default: 0)")
    parser.add_argument("--steps", type=int, default=None, help="override bootstrap.policy_sft_steps")
    parser.add_argument("--eval-backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    try:
        load = os.getloadavg()
        print(f"cpus available: {len(os.sched_getaffinity(0))}, load average at start: "
              f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    except (AttributeError, OSError):
        pass
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-bootstrap-") as cache:
        for stage in args.stages:
            overrides = [f"model_cache={cache}", f"trainer.deepspeed.zero_stage={stage}", *args.overrides]
            if args.steps is not None:
                overrides.append(f"bootstrap.policy_sft_steps={args.steps}")
            recipe = load_recipe(args.recipe, overrides)
            result = bootstrap_policy(recipe, eval_backend=args.eval_backend, force=True,
                                      progress=not args.no_progress)
            rows.append((stage, result))
            print(f"[zero {stage}] accuracy {result['accuracy']:.1%}  total {result['total_s']}s "
                  f"(SFT {result['train_s']}s, eval {result['eval_s']}s)", flush=True)

    print()
    print(f"{'zero':>4} {'steps':>6} {'SFT s':>7} {'s/step':>7} {'total s':>8} {'accuracy':>9} "
          f"{'target acc':>10} {'target s':>9}  verdict")
    for stage, r in rows:
        ok = r["accuracy"] >= TARGET_ACCURACY and r["total_s"] <= TARGET_SECONDS
        per_step = r["train_s"] / max(1, r["sft_steps"])
        print(f"{stage:>4} {r['sft_steps']:>6} {r['train_s']:>7.1f} {per_step:>7.3f} {r['total_s']:>8.1f} "
              f"{r['accuracy']:>9.1%} {TARGET_ACCURACY:>10.0%} {TARGET_SECONDS:>9}  "
              f"{'meets both' if ok else 'misses'}")
    if len(rows) > 1:
        base = rows[0][1]["train_s"]
        for stage, r in rows[1:]:
            print(f"SFT time ZeRO-{stage} / ZeRO-{rows[0][0]}: {r['train_s'] / base:.2f}x")
    try:
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
              "(other processes on the machine slow every figure above)")
    except (AttributeError, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
