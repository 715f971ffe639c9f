"""How much can step-wise DPO lift the tiny policy with a perfect judge? An upper bound for the
self-rewarding iterations, measured side by side for several learning rates in one run.

The policy (M1 from `bench/bootstrap_policy.py`, cached under the recipe's model cache) decodes
training problems greedily; at each solution's first wrong step the pair is (the expected step,
the step the policy wrote): exactly the pairs a perfect judge would hand step DPO at the states
where greedy decoding goes wrong. Each learning rate starts from M1 again (same pairs, same seed);
greedy pass@1 on the held-out problems is printed beside M1's.

    .venv/bin/python bench/step_dpo_oracle.py [--problems 6000] [--lr 2e-5 5e-5 1e-4] [--epochs 1] [--set k=v]
    .venv/bin/python bench/step_dpo_oracle.py --smoke     (a 150-step M1, 40 problems: a check)

Measured (2-core CPU, one epoch, beta 0.1, NLL coefficient 1), M1 at 80.0: with `--problems 2000
--lr 2e-5 1e-4` (287 pairs) 80.75 and 75.5; with the same pairs from 6000 problems (891) 79.75,
73.5 (5e-5) and 68.75 (1e-4; 3 epochs: 48.75). After DPO the policy drops digits (`85-74=5`):
larger step-DPO updates hurt even with perfect pairs. With DPO-Positive (lambda 50, the recipe's
value; another machine, M1 73.75, 1,128 pairs from 6,000 problems): 2e-5 74.00, **1e-4
77.50 (+3.75)**, 3e-4 72.25.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rprm_ray.batches import from_rows
from rprm_ray.commands.bootstrap import bootstrap_policy
from rprm_ray.config import SamplingConfig, load_recipe
from rprm_ray.engines.base import EngineSettings
from rprm_ray.engines.hf_engine import HFEngine
from rprm_ray.prompts import get_style
from rprm_ray.tasks import arith

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_arith.yaml"


def greedy_pass_at_1(engine, style, problems) -> float:
    outs = engine.generate([style.policy_prompt(p.question) for p in problems], 1,
                           SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=80, seed=0))
    hits = sum(arith.is_correct_answer(p, style.extract_answer(style.split_steps(o[0].text)))
               for p, o in zip(problems, outs, strict=True))
    return 100.0 * hits / len(problems)


def perfect_pairs(engine, style, problems):
    """(expected step, the policy's step) at each greedy solution's first wrong step."""
    outs = engine.generate([style.policy_prompt(p.question) for p in problems], 1,
                           SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=80, seed=0))
    rows = []
    for p, o in zip(problems, outs, strict=True):
        steps = style.split_steps(o[0].text)
        err = arith.label_steps(p, steps)
        if not 0 <= err < len(steps):
            continue
        expected = arith.expected_step(p.question, steps[:err])
        if expected is None:
            continue
        rows.append({"pair_id": f"oracle/{p.problem_id}", "kind": "step", "problem_id": p.problem_id,
                     "prompt": style.render_prefix(p.question, steps[:err]),
                     "chosen": expected + style.step_separator,
                     "rejected": steps[err] + style.step_separator,
                     "ref_chosen_logp": None, "ref_rejected_logp": None})
    return from_rows(rows, "preference_pairs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=6000, help="training problems decoded for pairs")
    parser.add_argument("--lr", type=float, nargs="+", default=[2e-5, 5e-5, 1e-4])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of recipes/tiny_arith.yaml")
    parser.add_argument("--smoke", action="store_true",
                        help="a small size (a 150-step M1, in a temporary model cache, that writes steps "
                             "to pair): checks that the bench runs")
    args = parser.parse_args()
    smoke_cache = None
    if args.smoke:
        smoke_cache = tempfile.TemporaryDirectory(prefix="bench-oracle-")
        args.problems, args.lr = 40, [1e-4]
        args.overrides = ["task.train_problems=400", "task.eval_problems=8", "bootstrap.policy_sft_steps=150",
                          "trainer.micro_batch_size_per_device=16", "trainer.global_batch_size=16",
                          f"model_cache={smoke_cache.name}", *args.overrides]

    from rprm_ray.training import DeepSpeedTrainer

    recipe = load_recipe(RECIPE, args.overrides)
    style = get_style(recipe.models.prompt_style)
    m1 = Path(bootstrap_policy(recipe, progress=False)["model_dir"])
    train, held_out = arith.make_splits(recipe.task)
    engine = HFEngine(m1, EngineSettings())
    base = greedy_pass_at_1(engine, style, held_out)
    pairs = perfect_pairs(engine, style, train[: args.problems])
    print(f"M1 {m1.name}: greedy pass@1 {base:.2f} on {len(held_out)} held-out problems; "
          f"{pairs.num_rows} perfect pairs from {args.problems} training problems")
    if pairs.num_rows == 0:
        raise SystemExit("step_dpo_oracle: M1 wrote no step to pair (no parsable wrong step); train it longer")
    print(f"{'step-DPO lr':>12}{'pass@1':>9}{'vs M1':>8}{'reward acc':>12}{'train s':>9}")
    for lr in args.lr:
        trainer = DeepSpeedTrainer(m1, recipe.trainer, total_steps=1, progress=False)
        start = time.perf_counter()
        metrics = trainer.dpo(pairs, epochs=args.epochs, lr=lr)
        seconds = time.perf_counter() - start
        out = Path(recipe.model_cache) / "step-dpo-oracle"
        trainer.save(out)
        acc = greedy_pass_at_1(HFEngine(out, EngineSettings()), style, held_out)
        print(f"{lr:>12.0e}{acc:>9.2f}{acc - base:>+8.2f}{metrics['reward_accuracy']:>12.2f}{seconds:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
