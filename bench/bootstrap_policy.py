"""Policy bootstrap benchmark: wall time and held-out greedy accuracy of `rprm-ray bootstrap`,
printed beside the targets (>= 60% accuracy, <= 6 min total on a 2-core CPU machine).

    .venv/bin/python bench/bootstrap_policy.py [--recipe recipes/tiny_arith.yaml] [--stages 0 2]
        [--steps N] [--set k=v ...] [--interleave STEPS ROUNDS]
    .venv/bin/python bench/bootstrap_policy.py --smoke    (10 steps, 8 held-out problems: a check)

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


def interleaved_stage_overhead(recipe_path: Path, overrides: list[str], stages: list[int],
                               steps: int, rounds: int) -> None:
    """One trainer per ZeRO stage in this process, taking `steps` SFT steps in turn for `rounds`
    rounds: load from other processes hits every stage alike, so the ratios stay meaningful on a
    busy machine."""
    import time

    from rprm_ray.config import load_recipe
    from rprm_ray.tasks import arith, arith_tables
    from rprm_ray.tiny import ensure_model
    from rprm_ray.training import DeepSpeedTrainer

    with tempfile.TemporaryDirectory(prefix="bench-stages-") as cache:
        recipe = load_recipe(recipe_path, [f"model_cache={cache}", *overrides])
        base = ensure_model(recipe.models.policy, cache, "base", seed=recipe.seed)
        table = arith_tables.policy_sft_table(arith.make_splits(recipe.task)[0])
        trainers = {}
        for stage in stages:
            cfg = recipe.trainer.model_copy(update={
                "deepspeed": recipe.trainer.deepspeed.model_copy(update={"zero_stage": stage})})
            trainers[stage] = DeepSpeedTrainer(base, cfg, progress=False)
            trainers[stage].sft(table, steps=2)  # warm-up: first-step allocations
        wall = dict.fromkeys(stages, 0.0)
        cpu = dict.fromkeys(stages, 0.0)
        for _ in range(rounds):
            for stage, trainer in trainers.items():
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.sft(table, steps=steps)
                wall[stage] += time.perf_counter() - t0
                cpu[stage] += time.process_time() - c0
    n = steps * rounds
    first = stages[0]
    print(f"interleaved: {rounds} rounds x {steps} SFT steps per stage")
    for stage in stages:
        print(f"  ZeRO-{stage}: {wall[stage] / n:.3f} s/step wall, {cpu[stage] / n:.3f} cpu-s/step; "
              f"vs ZeRO-{first}: wall {wall[stage] / wall[first]:.2f}x, cpu {cpu[stage] / cpu[first]:.2f}x")


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
    parser.add_argument("--interleave", type=int, nargs=2, metavar=("STEPS", "ROUNDS"), default=None,
                        help="instead of full bootstraps, compare the stages' per-step cost by "
                             "alternating STEPS SFT steps per stage for ROUNDS rounds in one process")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:  # a few steps on a small world: checks the bootstrap path, not its accuracy
        args.steps = 10
        args.overrides = ["task.train_problems=200", "task.eval_problems=8", "trainer.micro_batch_size_per_device=8",
                          "trainer.global_batch_size=8", *args.overrides]
        args.no_progress = True
    if args.interleave:
        interleaved_stage_overhead(args.recipe, args.overrides, args.stages, *args.interleave)
        return 0

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
    print(f"{'zero':>4} {'steps':>6} {'SFT s':>7} {'s/step':>7} {'SFT cpu s':>9} {'total s':>8} "
          f"{'total cpu s':>11} {'accuracy':>9} {'target acc':>10} {'target s':>9}  verdict")
    for stage, r in rows:
        ok = r["accuracy"] >= TARGET_ACCURACY and r["total_s"] <= TARGET_SECONDS
        per_step = r["train_s"] / max(1, r["sft_steps"])
        print(f"{stage:>4} {r['sft_steps']:>6} {r['train_s']:>7.1f} {per_step:>7.3f} {r['train_cpu_s']:>9.1f} "
              f"{r['total_s']:>8.1f} {r['total_cpu_s']:>11.1f} {r['accuracy']:>9.1%} {TARGET_ACCURACY:>10.0%} {TARGET_SECONDS:>9}  "
              f"{'meets both' if ok else 'misses'}")
    if len(rows) > 1:
        base = rows[0][1]["train_s"]
        for stage, r in rows[1:]:
            cpu_base = rows[0][1]["train_cpu_s"]
            print(f"SFT ZeRO-{stage} / ZeRO-{rows[0][0]}: wall {r['train_s'] / base:.2f}x, "
                  f"cpu {r['train_cpu_s'] / cpu_base:.2f}x")
    try:
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
              "(other processes on the machine slow every figure above)")
    except (AttributeError, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
