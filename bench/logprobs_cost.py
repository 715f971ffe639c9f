"""What vLLM's per-token log-probs cost, and what the judge saves by reading P(Yes) at one place.

Two comparisons, each timed in turn for `--rounds` rounds (median reported) so machine load hits
both sides alike, on a finished run's models and held-out labeled steps:

    judge:     the run's judge writes the demo's critiques (compact style, greedy K=1 and sampled
               K=4) two ways: (a) one generation asking for top-k log-probs at every token (how
               the judge read P(Yes) before the verdict continuation), (b) `judging.critiques_with_verdict`: the
               critique without log-probs up to the verdict prefix, then a short continuation with
               them. The critiques must be identical and P(Yes) equal (checked, printed).
    generator: the run's policy expands the same prefixes with and without `logprobs=0` (the
               candidates' cumulative_logprob, `generator.candidate_logprobs`).

    .venv/bin/python bench/logprobs_cost.py --run runs/tiny_arith [--steps 600] [--rounds 2] [--smoke]

Measured on the 2-core machine (a finished demo run, `--rounds 1`, 600 steps): judge K=1 1.64x, K=4 1.19x,
identical critiques, max |dP(Yes)| 9e-13; the generator's 24-token steps 1.22x slower with
logprobs=0 (bare vLLM on 104-token critiques: 1.6x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from rprm_ray import judging
from rprm_ray.config import GeneratorConfig, JudgeConfig, SamplingConfig
from rprm_ray.prompts import get_style


def single_generation(engine, prompts, n, sampling):
    """The former judge path: top-k log-probs at every generated token."""
    return engine.generate(list(prompts), n=n, sampling=sampling, logprobs=judging.VERDICT_TOP_LOGPROBS)


def judge_rows(engine, steps, rounds: int) -> None:
    style = get_style("compact")
    probe = judging.critiques_with_verdict
    for k, temperature in [(1, 0.0), (4, 1.0)]:
        sampling = SamplingConfig(temperature=temperature, top_p=1.0, max_new_tokens=104, seed=0)
        timings: dict[str, list[float]] = {}
        outputs = {}
        for name, write in [("per-token", single_generation), ("verdict-probe", probe)] * rounds:
            judging.critiques_with_verdict = write  # write_critiques looks it up at call time
            start = time.perf_counter()
            try:
                outputs[name], _ = judging.score_steps(engine, style, steps, k, sampling, "p_yes")
            finally:
                judging.critiques_with_verdict = probe
            timings.setdefault(name, []).append(time.perf_counter() - start)
        old, new = outputs["per-token"], outputs["verdict-probe"]
        texts = zip(old.column("critique").to_pylist(), new.column("critique").to_pylist(), strict=True)
        same = sum(a == b for a, b in texts)
        p_yes = zip(old.column("p_yes").to_pylist(), new.column("p_yes").to_pylist(), strict=True)
        worst = max((abs(a - b) for a, b in p_yes if a is not None and b is not None), default=float("nan"))
        t_old, t_new = statistics.median(timings["per-token"]), statistics.median(timings["verdict-probe"])
        print(f"judge K={k}: per-token {t_old:6.1f} s  verdict-probe {t_new:6.1f} s  ratio {t_old / t_new:4.2f}x  "
              f"same critiques {same}/{old.num_rows}  max |dP(Yes)| {worst:.1e}")


def generator_rows(engine, steps, rounds: int) -> None:
    style = get_style("compact")
    rows = steps.to_pylist()
    prompts = list(dict.fromkeys(style.render_prefix(r["question"], list(r["previous_steps"])) for r in rows))
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=0)
    timings: dict[str, list[float]] = {}
    for name, logprobs in [("no log-probs", None), ("logprobs=0", 0)] * rounds:
        start = time.perf_counter()
        engine.generate(prompts, 6, sampling, stop=style.step_stop, logprobs=logprobs)
        timings.setdefault(name, []).append(time.perf_counter() - start)
    t_off, t_on = statistics.median(timings["no log-probs"]), statistics.median(timings["logprobs=0"])
    print(f"generator ({len(prompts)} prefixes x 6): no log-probs {t_off:6.1f} s  logprobs=0 {t_on:6.1f} s  "
          f"ratio {t_on / t_off:4.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory (runs/<name>)")
    parser.add_argument("--steps", type=int, default=600, help="held-out labeled steps to judge")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rounds = 8, 1
    # The run's final judge and policy, wherever its stages saved them.
    state = json.loads((args.run / "manifest.json").read_text())["state"]
    judge_dir, policy_dir = Path(state["judge_dir"]), Path(state["policy_dir"])
    steps_file = args.run / "iter_0" / "data" / "steps_eval.parquet"
    for path in (judge_dir, policy_dir, steps_file):
        if not path.exists():
            raise SystemExit(f"{args.run}: {path} is missing; give a finished guided run")
    steps = pq.read_table(steps_file).slice(0, args.steps)
    from rprm_ray.engines import make_engine

    judge = make_engine(judge_dir, "vllm", JudgeConfig())
    judge_rows(judge, steps, args.rounds)
    judge.close()
    policy = make_engine(policy_dir, "vllm", GeneratorConfig())
    generator_rows(policy, steps, args.rounds)
    policy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
