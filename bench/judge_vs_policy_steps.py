"""Can the judge teach the policy? Its own version of each step (the R line) against the policy's
greedy steps, on the policy's greedy solutions of problems the judge never saw.

Self-rewarding moves greedy decoding only where the judge and the policy disagree, so what matters is
who is right there. This script decodes training problems greedily with a finished run's M1, lets the
run's judge critique every step up to the first wrong one (as labeled by the embedded world), and
prints, separately for the states where the policy's step is right and where it is wrong, how often
the judge's R line is the expected step and how often its verdict is right; then the share of the
judge's rejections that hit a wrong step (the precision of "the judge says no").

    .venv/bin/python bench/judge_vs_policy_steps.py --run runs/<name> [--problems 1024] [--smoke (8 problems)]

(from the directory the run was started in: the manifest's model paths are relative to it)

Measured (2-core CPU; an M1 at 73.75; the 1,024 problems its iterations searched; 3,239
states, 185 of them wrong greedy steps):
    judge with R written in one go:  R right at 93.7% of right states, 42.7% of wrong ones
    judge with the worked R line (`arith_teacher.worked_step`; this script printed):
         policy step  states  judge R right  verdict right
               right    3054          93.8%          93.7%
               wrong     185          98.4%         100.0%
        judge said No 377 times; 185 of them at a wrong step (precision 49.1%)
With the worked line the judge's search pairs of those problems had 88% of chosen steps right and
3% of rejected ones right (65% / 16% before), and step DPO on them lifted M1 by 3.0 points.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from rprm_ray import batches, judging
from rprm_ray.config import SamplingConfig, load_recipe
from rprm_ray.engines import make_engine
from rprm_ray.prompts import get_style
from rprm_ray.tasks import arith, arith_teacher


def r_line(critique: str) -> str | None:
    line = next((x for x in critique.split("\n") if x.startswith("R:")), None)
    return None if line is None else arith_teacher.unworked_step(line[2:])


def searched_problems(run: Path, task_cfg, limit: int) -> list[arith.ArithProblem]:
    train, _ = arith.make_splits(task_cfg)
    by_id = {p.problem_id: p for p in train}
    ids = list(dict.fromkeys(i for results in sorted(run.glob("iter_*/search/search_results.parquet"))
                             for i in pq.read_table(results).column("problem_id").to_pylist()))
    if not ids:
        raise SystemExit(f"{run}: no iter_*/search/search_results.parquet (run the iterations first)")
    return [by_id[i] for i in ids[:limit]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory (runs/<name>)")
    parser.add_argument("--problems", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.problems = 8

    recipe = load_recipe(args.run / "recipe.yaml", [])
    if recipe.task.kind != "arith":
        raise SystemExit("judge_vs_policy_steps: needs the embedded world (task.kind: arith) for step labels")
    style = get_style(recipe.models.prompt_style)
    state = json.loads((args.run / "manifest.json").read_text())["state"]
    problems = searched_problems(args.run, recipe.task, args.problems)
    policy = make_engine(state["m1_dir"], "vllm", recipe.generator)
    outs = policy.generate([style.policy_prompt(p.question) for p in problems], 1,
                           SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=80, seed=0))
    rows, expected = [], []
    for p, out in zip(problems, outs, strict=True):
        steps = style.split_steps(out[0].text)
        first_error = arith.label_steps(p, steps)
        last = first_error if 0 <= first_error < len(steps) else len(steps) - 1
        for k in range(last + 1):
            rows.append({"problem_id": p.problem_id, "solution_id": p.problem_id, "step_idx": k,
                         "question": p.question, "previous_steps": steps[:k], "now_step": steps[k],
                         "label": k != first_error})
            expected.append(arith.expected_step(p.question, steps[:k]))
    judge = make_engine(state["judge_dir"], "vllm", recipe.judge)
    critiques, scores = judging.score_steps(judge, style, batches.from_rows(rows, "labeled_steps"), 1,
                                            recipe.judge.sampling, recipe.judge.score)
    counts: Counter = Counter()
    for row, critique, score, exp in zip(rows, critiques.to_pylist(), scores.to_pylist(), expected, strict=True):
        says_yes = (score["score"] if score["score"] is not None else 1.0) >= recipe.judge.threshold
        where = "right" if row["label"] else "wrong"
        counts[where] += 1
        counts[where, "R"] += r_line(critique["critique"]) == exp
        counts[where, "verdict"] += says_yes == row["label"]
        counts["no", where] += not says_yes
    print(f"{len(problems)} problems, {len(rows)} greedy steps judged (M1 {Path(state['m1_dir']).name}, "
          f"judge {state['judge_dir']})")
    print(f"{'policy step':>12}{'states':>8}{'judge R right':>15}{'verdict right':>15}")
    for where in ("right", "wrong"):
        n = max(1, counts[where])
        print(f"{where:>12}{counts[where]:>8}{100 * counts[where, 'R'] / n:>14.1f}%"
              f"{100 * counts[where, 'verdict'] / n:>14.1f}%")
    said_no = counts["no", "right"] + counts["no", "wrong"]
    print(f"judge said No {said_no} times; {counts['no', 'wrong']} of them at a wrong step "
          f"(precision {100 * counts['no', 'wrong'] / max(1, said_no):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
