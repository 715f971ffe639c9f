"""Why F1 at K sampled critiques does or does not beat the greedy critique: a finished run's judge
evaluation (stage iter_0/judge_eval_dpo, which keeps every critique it wrote), step by step.

For each evaluation set (injected errors; M1's own mistakes where the run built it) and each
critique temperature, it prints how many steps the greedy critique decides wrongly, how many of
those the mean P(Yes) of the K sampled critiques repairs (`fixed`), how many steps the greedy
critique gets right and the K-sample mean breaks (`broken`), and the error rate of a single sampled
critique beside the greedy one's (rprm_ray/evaluation/sampling_vs_greedy.py). K samples beat
greedy exactly where fixed > broken. Reads tables only: no engine, seconds.

    .venv/bin/python bench/critique_sampling.py --run runs/<a finished guided run> [--smoke]

Measured (2-core AMD EPYC; `recipes/tiny_arith.yaml`, M1 at 2,000 SFT steps, judge SFT cut to 400
steps so that it errs: own-mistakes F1 greedy 92.3, K=8 92.0): on 1,243 own steps the greedy
critique was wrong at 30; K=8 at T 0.5 repaired 2 of them and broke 4 right ones (one sampled
critique wrong at 2.9% of steps against greedy's 2.4%); at T 1.0 it repaired 2 and broke 18
(6.4%). The recipe's 800-step judge: greedy wrong at 4 of those steps, K=8 fixed 0 and broke 1 at
either temperature. The judge's errors are confident ones: a digit worked out wrongly in its R line is
sampled again at almost every draw, so averaging has nothing to repair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

from rprm_ray.config import load_recipe
from rprm_ray.evaluation.sampling_vs_greedy import sampling_vs_greedy
from rprm_ray.stages.judge import temperature_tag

STAGE = "iter_0/judge_eval_dpo"
SETS = {"": "injected errors", "_own": "M1's own mistakes"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished guided run's directory")
    ap.add_argument("--smoke", action="store_true", help="same work (it only reads tables); for `make test`")
    args = ap.parse_args()
    run = Path(args.run)
    recipe = load_recipe(run / "recipe.yaml")
    stage_dir = run / STAGE
    if not stage_dir.is_dir():
        raise SystemExit(f"{run}: no {STAGE} stage (a guided or rprm run with a judge DPO, finished)")
    mode, threshold = recipe.judge.score, recipe.evaluation.threshold
    printed = 0
    for suffix, name in SETS.items():
        greedy_path = stage_dir / f"critiques_greedy{suffix}.parquet"
        if not greedy_path.exists():
            continue
        greedy = pq.read_table(greedy_path)
        temperatures = recipe.evaluation.critique_temperatures
        for temperature in temperatures:
            path = stage_dir / f"critiques_sampled{suffix}{temperature_tag(temperature, temperatures)}.parquet"
            if not path.exists():
                continue
            sampled = pq.read_table(path)
            k = max(sampled.column("sample_idx").to_pylist(), default=-1) + 1
            if k == 0:
                continue
            got = sampling_vs_greedy(greedy, sampled, k, mode, threshold)
            print(f"K={k} sampled vs greedy on {name}, T {temperature:g}: {got.steps} steps, greedy wrong at "
                  f"{got.greedy_wrong}; fixed {got.fixed}, broken {got.broken}; one sampled critique wrong at "
                  f"{got.sample_error_rate:.1f}% of steps vs greedy {got.greedy_error_rate:.1f}%")
            printed += 1
    if not printed:
        raise SystemExit(f"{stage_dir}: no greedy and sampled critiques to compare (evaluation.critiques_per_step empty?)")


if __name__ == "__main__":
    main()
