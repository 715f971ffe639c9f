"""PSRLM's self-judge on its own steps: bootstrap M1 (IFT on reference solutions + EFT pairwise
judgments from the programmatic teacher, one model), then let M1 sample candidate next steps on
problems it never trained on (the iterations' search pool) and judge every pair with exactly one
right step in both orders, as the search does. Prints the pairwise accuracy, the share of pairs
judged right in both orders, position consistency and how often slot A wins.

    .venv/bin/python bench/psrlm_self_judge.py [--recipe recipes/tiny_arith.yaml] [--steps N]
        [--problems P] [--format worked|one-call] [--backend vllm|transformers] [--set k=v ...]
    .venv/bin/python bench/psrlm_self_judge.py --smoke    (a few steps: checks that it runs)

`--format one-call` trains and judges with the pairwise format used before the worked one, for
comparison: both steps in the judge's prompt (which opens `Q:` like the policy's), its R line the
expected step in one go, then a marked line per step and the verdict. Step labels come from the
world's labeler and are used for the figures only. Models go to a temporary cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TARGET_ACCURACY = 0.85  # the issue's bar for M1's self-judge on its own held-out candidates


class OneCallStyle:
    """The compact pairwise format before the worked one (see the module doc)."""

    @staticmethod
    def make():
        from rprm_ray.prompts import CompactStyle

        class _Style(CompactStyle):
            recompute_first = False

            def pairwise_prompt(self, question, previous_steps, step_a, step_b):
                return f"{self.judge_context(question, previous_steps)}a:{step_a.strip()}\nb:{step_b.strip()}\n"

        return _Style(distinct_judge_prompts=False)

    @staticmethod
    def judgment(question: str, prefix: list[str], a: str, b: str) -> str:
        from rprm_ray.tasks import arith, arith_teacher

        exp = arith.expected_step(question, prefix)
        winner = "A" if a.strip() == exp else "B"
        lines = []
        for step in (a, b):
            e_left, e_result = arith.claimed_parts(exp)
            c_left, c_result = arith.claimed_parts(step)
            lines.append(f"{arith_teacher.aligned_pairs(e_left, c_left)}|{arith_teacher.aligned_pairs(e_result, c_result)}")
        return f"R:{exp}\nCa:{lines[0]}\nCb:{lines[1]}\n[[{winner}]]"


def eft_rows(problems, seed: int, n: int, fmt: str, style):
    """The EFT `sft_examples` rows in the chosen format (the same pairs either way)."""
    from rprm_ray import batches
    from rprm_ray.tasks import arith_tables

    if fmt == "worked":
        return arith_tables.pairwise_sft_table(problems, seed, n, style=style)
    table = arith_tables.pairwise_sft_table(problems, seed, n)  # the same pairs, rewritten below
    rows = []
    for row in table.to_pylist():
        context = row["prompt"].rstrip("\n").split("\n")
        question, prefix = context[0][2:], [x[2:] for x in context[1:]]
        a, b = (line[2:] for line in row["completion"].split("\n")[1:3])
        rows.append({**row, "prompt": style.pairwise_prompt(question, prefix, a, b),
                     "completion": OneCallStyle.judgment(question, prefix, a, b)})
    return batches.from_rows(rows, "sft_examples")


def own_candidates(engine, style, problems, w: int, sampling, max_new_tokens: int):
    """M1's greedy solution per problem; at each of its prefixes (the empty one, then one per step
    before its answer step) w sampled next steps, as `candidates` rows."""
    from rprm_ray import batches
    from rprm_ray.config import SamplingConfig

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=sampling.seed)
    solutions = engine.generate([style.policy_prompt(p.question) for p in problems], n=1, sampling=greedy)
    prefixes = []
    for p, (solution,) in zip(problems, solutions, strict=True):
        steps = style.split_steps(solution.text)
        prefixes.append((p, []))  # the first step, even after a solution with no readable step
        for k in range(1, len(steps)):
            if style.is_final_step(steps[k - 1]):
                break
            prefixes.append((p, steps[:k]))
    outputs = engine.generate([style.render_prefix(p.question, prefix) for p, prefix in prefixes], n=w,
                              sampling=sampling, stop=style.step_stop)
    rows = []
    for i, ((p, prefix), outs) in enumerate(zip(prefixes, outputs, strict=True)):
        for cid, c in enumerate(outs):
            rows.append({"problem_id": p.problem_id, "prefix_id": f"{p.problem_id}/{i}", "candidate_id": cid,
                         "question": p.question, "prefix_steps": prefix, "step": c.text.strip(),
                         "finished": style.is_final_step(c.text), "num_tokens": len(c.token_ids),
                         "cumulative_logprob": None})
    greedy_right = sum(style.extract_answer(s[0].text) == p.answer for p, s in zip(problems, solutions, strict=True))
    return batches.from_rows(rows, "candidates"), greedy_right, len(prefixes)


def main() -> int:
    from rprm_ray import batches
    from rprm_ray.config import load_recipe
    from rprm_ray.engines import make_engine
    from rprm_ray.evaluation.self_judge import judge_own_pairs
    from rprm_ray.prompts import get_style
    from rprm_ray.tasks import arith, arith_tables
    from rprm_ray.tiny import ensure_model
    from rprm_ray.training import DeepSpeedTrainer

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=repo / "recipes" / "tiny_arith.yaml")
    parser.add_argument("--steps", type=int, default=None, help="M1's SFT steps (default bootstrap.policy_sft_steps)")
    parser.add_argument("--problems", type=int, default=64, help="search-pool problems whose candidates are judged")
    parser.add_argument("--format", choices=("worked", "one-call"), default="worked")
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--model", type=Path, default=None,
                        help="judge with this M1 (a directory --save-model wrote) instead of training one")
    parser.add_argument("--save-model", type=Path, default=None, help="keep the trained M1 in this directory")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.problems = 10, 2
        args.overrides = ["task.train_problems=200", "task.eval_problems=8", "bootstrap.pairwise_judge_examples=40",
                          "trainer.micro_batch_size_per_device=8", "trainer.global_batch_size=8",
                          "loop.problems_per_iteration=8", "loop.iterations=1", *args.overrides]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-psrlm-judge-") as cache:
        recipe = load_recipe(args.recipe, ["loop.mode=psrlm", f"model_cache={cache}", *args.overrides])
        steps = args.steps if args.steps is not None else recipe.bootstrap.policy_sft_steps
        style = (get_style("compact", distinct_judge_prompts=recipe.distinct_judge_prompts)
                 if args.format == "worked" else OneCallStyle.make())
        train, _ = arith.make_splits(recipe.task)
        pool = recipe.search_pool_problems
        m1_problems, probe = train[pool:], train[:pool][: args.problems]
        table = batches.concat([arith_tables.policy_sft_table(m1_problems),
                                eft_rows(m1_problems, recipe.task.seed, recipe.bootstrap.pairwise_judge_examples,
                                         args.format, style)], "sft_examples")
        print(f"M1: {steps} SFT steps on {len(m1_problems)} problems' solutions + "
              f"{recipe.bootstrap.pairwise_judge_examples} pairwise judgments ({args.format} format); "
              f"search pool of {pool} problems held back, {len(probe)} probed", flush=True)
        if args.model is not None:
            m1, metrics = args.model, json.loads((args.model / "train_metrics.json").read_text())
        else:
            base = ensure_model(recipe.models.policy, cache, "base", seed=recipe.seed)
            trainer = DeepSpeedTrainer(base, recipe.trainer, total_steps=steps, progress=False)
            metrics = trainer.sft(table)
            m1 = trainer.save(args.save_model or Path(cache) / "m1")
            (m1 / "train_metrics.json").write_text(json.dumps(metrics))
            del trainer
        t_trained = time.perf_counter()

        engine = make_engine(m1, args.backend, recipe.judge)
        try:
            max_new = recipe.generator.sampling.max_new_tokens * (recipe.task.max_steps + 1)
            candidates, greedy_right, prefixes = own_candidates(
                engine, style, probe, recipe.generator.candidates_per_step, recipe.generator.sampling, max_new)
            labeler = lambda q, prev, step: step.strip() == arith.expected_step(q, prev)  # noqa: E731
            acc, judgments = judge_own_pairs(engine, style, candidates, labeler, recipe.judge.sampling)
        finally:
            engine.close()
    t_end = time.perf_counter()
    result = {"format": args.format, "sft_steps": steps, "loss_last": metrics.get("loss_last"),
              "probe_problems": len(probe), "greedy_pass": greedy_right / max(1, len(probe)),
              "prefixes": prefixes, "candidates": candidates.num_rows, **acc.as_dict(),
              "train_s": round(t_trained - t0, 1), "judge_s": round(t_end - t_trained, 1)}
    example = next((j for j in judgments.to_pylist() if j["valid"]), None)
    if example is not None:
        print("a judgment:\n  " + example["judgment"].replace("\n", "\n  "))
    print(f"M1 greedy on the probed problems: {result['greedy_pass']:.1%}; {prefixes} prefixes, "
          f"{candidates.num_rows} candidates")
    print(f"self-judge ({args.format}): {acc.text()}")
    print(f"time: train {result['train_s']}s, sample + judge {result['judge_s']}s; "
          f"load average {os.getloadavg()[0]:.1f}")
    verdict = "meets" if acc.accuracy is not None and acc.accuracy >= TARGET_ACCURACY else "misses"
    print(f"result: self-judge pairwise accuracy {100 * (acc.accuracy or 0):.1f}% "
          f"(target >= {100 * TARGET_ACCURACY:.0f}%: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
