"""SFT throughput of trainer layouts on one node: one rank using every core vs data-parallel ranks
sharing them (`trainer.num_workers`, `TrainerGroup` splits the cores), and padded vs packed micro
batches (`trainer.pack_sequences`), on the embedded world's policy or judge SFT data.

Layouts are timed in turn for `--rounds` rounds (median steps/s), so machine load hits all alike;
each timing excludes actor start-up and DeepSpeed init (a short warm-up SFT call runs first).

    .venv/bin/python bench/trainer_layouts.py --model models/<policy dir> [--data judge --run runs/X]
        [--steps 150] [--rounds 2]
    .venv/bin/python bench/trainer_layouts.py --model DIR --smoke     (2 steps, 1 round: a check)

Measured on the 2-core machine (`--rounds 2`): policy data from the base model, 100 steps:
1 rank 6.68 steps/s, 2 ranks 0.99x, packed 0.97x; judge data (a demo run's) from M1, 60 steps: 1 rank
2.39 steps/s, 2 ranks 1.04x, packed 1.23x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_arith.yaml"
LAYOUTS = {
    "1 rank, padded": {"num_workers": 1, "micro": 64, "pack": False},
    "2 ranks, padded": {"num_workers": 2, "micro": 32, "pack": False},
    "1 rank, packed": {"num_workers": 1, "micro": 64, "pack": True},
}


def sft_table(data: str, run: Path | None):
    from rprm_ray.config import load_recipe
    from rprm_ray.tasks import arith, arith_tables

    if data == "judge":
        if run is None:
            raise SystemExit("--data judge needs --run (a finished run's iter_0/judge_seed/judge_sft.parquet)")
        return pq.read_table(run / "iter_0" / "judge_seed" / "judge_sft.parquet")
    train, _ = arith.make_splits(load_recipe(RECIPE).task)
    return arith_tables.policy_sft_table(train)


def steps_per_s(model: Path, table, layout: dict, steps: int) -> float:
    from actors.trainer import TrainerGroup
    from rprm_ray.config import load_recipe

    recipe = load_recipe(RECIPE, [
        f"trainer.num_workers={layout['num_workers']}", f"trainer.micro_batch_size_per_device={layout['micro']}",
        f"trainer.pack_sequences={str(layout['pack']).lower()}", "trainer.num_cpus_per_worker=0"])
    group = TrainerGroup(model, recipe.trainer, name="bench")
    try:
        group.sft(table, steps=5)  # warm-up: allocator, first-step costs
        start = time.perf_counter()
        group.sft(table, steps=steps)
        return steps / (time.perf_counter() - start)
    finally:
        group.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="HF model dir to train from")
    parser.add_argument("--data", choices=("policy", "judge"), default="policy")
    parser.add_argument("--run", type=Path, default=None, help="finished run dir (for --data judge)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rounds = 2, 1

    import ray

    table = sft_table(args.data, args.run)
    ray.init(include_dashboard=False, log_to_driver=False)
    rates: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for round_ in range(args.rounds):
        for name, layout in LAYOUTS.items():
            rates[name].append(steps_per_s(args.model, table, layout, args.steps))
            print(f"round {round_ + 1}: {name:16s} {rates[name][-1]:.2f} steps/s", flush=True)
    base = statistics.median(rates["1 rank, padded"])
    print(f"\n{args.data} SFT, {args.steps} steps, median of {args.rounds} rounds")
    for name in LAYOUTS:
        rate = statistics.median(rates[name])
        print(f"  {name:16s} {rate:6.2f} steps/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
