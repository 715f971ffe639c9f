"""Replay one self-rewarding iteration's step DPO from M1 with other losses and learning rates.

Takes a finished run's M1 (manifest state `m1_dir`) and the step pairs its judge picked in
`iter_1/search`, trains step DPO from M1 once per setting (same pairs, same seed), and prints greedy
pass@1 on a dev set of fresh problems (task seed 7, the held-out test problems removed), side by
side with M1's, in one run. Settings: every learning rate with and without DPO-Positive.

    .venv/bin/python bench/step_dpo_replay.py --run runs/<name> [--lr 2e-5 1e-4] [--dpop-lambda 0 50]
        [--nll-coef 1 10] [--epochs 1] [--smoke (one setting, 8 dev problems: a check)]

Measured (2-core CPU; a demo run of the recipe before its judge hold-out, M1 73.75 on the test set;
412 pairs; one epoch, beta 0.1, NLL coefficient 1), dev pass@1 of M1 76.00:
    lr 2e-5: 77.25 plain, 77.00 DPOP-50;  5e-5: 76.00 / 77.50;  1e-4: 72.50 / 77.00;
    3e-4 (DPOP-50): 71.00;  1e-3 (DPOP-50): 36.00.
With the judge held out of the searched problems (run of the committed recipe, 412 pairs, 300 of the
chosen steps correct and 57 of the rejected), DPOP-50, NLL coefficient 1 / 10, same dev set:
    lr 1e-4: 75.50 / 75.50;  3e-4: 68.00 / 69.00;  1e-3: 35.75 / 35.75 (68 s for the six).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from step_dpo_oracle import greedy_pass_at_1  # bench/ is on sys.path when this script runs

from rprm_ray.config import load_recipe
from rprm_ray.engines.base import EngineSettings
from rprm_ray.engines.hf_engine import HFEngine
from rprm_ray.prompts import get_style
from rprm_ray.tasks import arith


def pass_at_1(model_dir: Path, style, problems) -> float:
    return greedy_pass_at_1(HFEngine(model_dir, EngineSettings()), style, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory (runs/<name>)")
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-5, 5e-5, 1e-4])
    parser.add_argument("--dpop-lambda", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--nll-coef", type=float, nargs="+", default=None,
                        help="NLL-of-chosen coefficients (default: the run's trainer.dpo_nll_coef)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dev-problems", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.lr, args.dpop_lambda, args.dev_problems = [1e-4], [50.0], 8

    from rprm_ray.training import DeepSpeedTrainer

    recipe = load_recipe(args.run / "recipe.yaml", [])
    style = get_style(recipe.models.prompt_style)
    m1 = Path(json.loads((args.run / "manifest.json").read_text())["state"]["m1_dir"])
    pairs = pq.read_table(args.run / "iter_1" / "search" / "pairs.parquet")
    _, test = arith.make_splits(recipe.task)
    _, dev = arith.make_splits(recipe.task.model_copy(update={"seed": 7, "train_problems": 1,
                                                               "eval_problems": args.dev_problems}))
    test_questions = {p.question for p in test}
    dev = [p for p in dev if p.question not in test_questions]
    base = pass_at_1(m1, style, dev)
    print(f"M1 {m1.name}: dev pass@1 {base:.2f} on {len(dev)} problems; {pairs.num_rows} step pairs from {args.run}")
    print(f"{'lr':>8}{'dpop':>6}{'nll':>6}{'pass@1':>9}{'vs M1':>8}{'reward acc':>12}")
    for lr, lam, nll in itertools.product(args.lr, args.dpop_lambda, args.nll_coef or [recipe.trainer.dpo_nll_coef]):
        cfg = recipe.trainer.model_copy(update={"dpop_lambda": lam, "dpo_nll_coef": nll})
        trainer = DeepSpeedTrainer(m1, cfg, total_steps=1, progress=False)
        metrics = trainer.dpo(pairs, epochs=args.epochs, lr=lr)  # reference log-probs from M1 itself
        with tempfile.TemporaryDirectory() as out:
            trainer.save(Path(out))
            acc = pass_at_1(Path(out), style, dev)
        print(f"{lr:>8.0e}{lam:>6.0f}{nll:>6g}{acc:>9.2f}{acc - base:>+8.2f}{metrics['reward_accuracy']:>12.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
