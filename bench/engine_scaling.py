"""vLLM against the transformers backend as the model grows: generator and judge throughput side by
side, per model size, in one run.

A decoding step costs a fixed part (scheduling, sampling, detokenising and the rest of the Python
around the forward pass) and a part that grows with the parameters (the matmuls). At the tiny size
(~0.6M parameters) the matmuls are microseconds and the fixed parts of the two engines decide; as
the model grows the matmuls take over, and with them how well each engine batches and computes
(vLLM: continuous batching, no padding, a paged KV cache, compiled CPU kernels). This script
measures both roles at several sizes, and bounds the fixed part of the generator's step.

Per size (HIDDENxLAYERS; heads = hidden / 64, vLLM's CPU attention needs head_dim 64; MLP 4 x
hidden) an untrained Llama is built with a judge's vocabulary (bench/weight_sync.py's `build`), and
one engine per backend (`rprm_ray.engines.make_engine`, the same settings for both roles: prefix
caching on, 512 positions) plays both roles:
- generator: `--prompts` policy prompts of the embedded arithmetic world x `--samples` full
  solutions each, `--max-new-tokens` at most (one `Engine.generate` call, as PolicyGenerator does);
- judge: `--steps` labeled steps x `--k` critiques each through the judge's own loop
  (`rprm_ray.judging.write_critiques`, compact style: the judge's own line, then the comparison
  written greedily up to the verdict prefix and continued with the verdict's top log-probs, the
  ones P(Yes) is read from), `--critique-tokens` per call at most.
The compact style, not the paper's: paper prompts are ~2,250 tokens each for the byte-level tiny
tokenizer, and the transformers backend prefills every prompt once per critique (K copies in its
batch), which at 512x8 takes minutes per round on two cores; with the compact prompts the whole
three-size run takes ~2 minutes on a quiet 2-core machine while the judge still runs its real
multi-call loop.

Untrained models write noise, which costs the same to generate as sense. The two backends sample
differently, so they generate somewhat different token counts (end-of-sequence and stop strings
hit at random places): tokens/s compares the work, items/s (solutions, critiques) what a role
delivers. Each round times every (role, engine) pair in turn, vLLM's prefix cache reset first, so
load from other processes hits both alike; medians over `--rounds` after a small warm-up call of
each (vLLM compiles its model at start-up; first calls still fill caches and import lazily).

    .venv/bin/python bench/engine_scaling.py [--sizes 128x2 256x4 512x8] [--rounds 3]
    .venv/bin/python bench/engine_scaling.py --smoke      # seconds: a broken benchmark fails CI

Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from judge_throughput import labeled_steps
from weight_sync import build

from rprm_ray import judging
from rprm_ray.config import GeneratorConfig, SamplingConfig, TaskConfig
from rprm_ray.prompts import get_style

BACKENDS = ("vllm", "transformers")
ROLES = ("generator", "judge")
STYLE = get_style("compact")


class CountingEngine:
    """An Engine that counts the tokens its completions hold (every call of a role's loop)."""

    def __init__(self, engine):
        self.engine = engine
        self.tokens = 0

    def generate(self, prompts, n, sampling, **kwargs):
        out = self.engine.generate(prompts, n, sampling, **kwargs)
        self.tokens += sum(len(c.token_ids) for completions in out for c in completions)
        return out


@dataclass
class Work:
    """One role's call: what it runs, and how many items (solutions, critiques) it delivers."""

    items: int
    run: Callable[[CountingEngine], object]


def workloads(args: argparse.Namespace) -> dict[str, Work]:
    from rprm_ray.tasks import arith

    _, problems = arith.make_splits(TaskConfig(train_problems=1, eval_problems=args.prompts, seed=7))
    policy_prompts = [STYLE.policy_prompt(p.question) for p in problems]
    policy_sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    steps = labeled_steps(args.steps)
    judge_sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.critique_tokens, seed=0)
    return {
        "generator": Work(len(policy_prompts) * args.samples,
                          lambda e: e.generate(policy_prompts, args.samples, policy_sampling)),
        "judge": Work(steps.num_rows * args.k,
                      lambda e: judging.write_critiques(e, STYLE, steps, args.k, judge_sampling)),
    }


def parameter_count(model_dir: Path) -> int:
    """Parameters in the checkpoint (embeddings included; the tied LM head is stored once)."""
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                numel = 1
                for dim in f.get_slice(name).get_shape():
                    numel *= dim
                total += numel
    return total


def measure_size(size: str, model_dir: Path, work: dict[str, Work], warm: dict[str, Work],
                 rounds: int) -> dict[tuple[str, str], dict]:
    """{(role, backend): {"seconds": median, "tokens": generated tokens, "items": n}} for one size."""
    from rprm_ray.engines import make_engine

    cfg = GeneratorConfig()
    engines = {backend: make_engine(model_dir, backend, cfg) for backend in BACKENDS}
    try:
        # Warm-up on a small batch: vLLM compiles its model for every batch shape at start-up
        # (dynamic shapes), so the first calls only pay for caches and lazy imports.
        for backend, engine in engines.items():
            start = time.perf_counter()
            for role in ROLES:
                warm[role].run(CountingEngine(engine))
            print(f"  {size} warm-up {backend}: {time.perf_counter() - start:.1f} s", flush=True)
        times: dict[tuple[str, str], list[float]] = {(r, b): [] for r in ROLES for b in BACKENDS}
        tokens: dict[tuple[str, str], list[int]] = {(r, b): [] for r in ROLES for b in BACKENDS}
        for _ in range(rounds):
            for role in ROLES:
                for backend, engine in engines.items():
                    if backend == "vllm":
                        # A repeat would otherwise skip the prompts' prefill; a fresh batch cannot.
                        engine.llm.reset_prefix_cache()
                    counted = CountingEngine(engine)
                    start = time.perf_counter()
                    work[role].run(counted)
                    times[role, backend].append(time.perf_counter() - start)
                    tokens[role, backend].append(counted.tokens)
        for backend, engine in engines.items():
            if engine.guard.skipped:  # a skipped prompt is work not done: the rates would lie
                raise SystemExit(f"engine_scaling: {size} {backend}: {engine.guard.skipped} prompts did not fit "
                                 f"{cfg.max_model_len_tokens} positions; lower --max-new-tokens/--critique-tokens")
    finally:
        for engine in engines.values():
            engine.close()
        del engines
        gc.collect()
    return {key: {"seconds": statistics.median(ts), "tokens": statistics.median(tokens[key]),
                  "items": work[key[0]].items} for key, ts in times.items()}


def wins_from(sizes: list[str], ratio: dict[str, float]) -> str:
    """The smallest size from which vLLM is faster at every larger size too."""
    first = None
    for size in reversed(sizes):
        if ratio[size] <= 1.0:
            break
        first = size
    if first is None:
        return f"vLLM does not win up to {sizes[-1]} ({ratio[sizes[-1]]:.2f}x there)"
    return f"vLLM wins from {first} ({ratio[first]:.2f}x there, {ratio[sizes[-1]]:.2f}x at {sizes[-1]})"


def where_time_goes(args: argparse.Namespace, params: dict[str, int], results: dict[str, dict]) -> None:
    """The generator call is one batch of every sequence on both engines (the transformers backend
    batches 16 prompts x n at once), decoded for about max_new_tokens steps: seconds / steps is the
    time of one decoding step. The smallest model's step is nearly all fixed cost (scheduling,
    sampling, Python per step; its matmuls are tiny), so it bounds the fixed part of every larger
    model's step from above; the rest of a step grows with the parameters. (A bound, not a line
    fitted through the sizes: step time is not linear in the parameters, since larger matmuls run
    more efficiently, weights that outgrow the CPU caches stream from memory every step, and on a
    busy machine load changes between sizes.)"""
    if args.prompts > 16:
        return  # the transformers backend splits the call into several batches: no single step
    small = args.sizes[0]
    print(f"where the generator's time goes: ms per decoding step of the {args.prompts * args.samples}-sequence "
          f"batch; fixed part at most {small}'s step")
    for backend in BACKENDS:
        step = {s: 1e3 * results[s]["generator", backend]["seconds"] / args.max_new_tokens for s in args.sizes}
        cells = "  ".join(f"{s} {step[s]:7.1f} ms (fixed <= {min(step[small] / step[s], 1):4.0%}, "
                          f"{step[s] / (params[s] / 1e6):5.2f} ms/M params)" for s in args.sizes)
        print(f"  {backend:12} {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["128x2", "256x4", "512x8"], help="HIDDENxLAYERS per model")
    parser.add_argument("--prompts", type=int, default=16, help="generator: policy prompts per call")
    parser.add_argument("--samples", type=int, default=4, help="generator: solutions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generator: tokens per solution at most")
    parser.add_argument("--steps", type=int, default=8, help="judge: labeled steps per call")
    parser.add_argument("--k", type=int, default=4, help="judge: critiques per step")
    parser.add_argument("--critique-tokens", type=int, default=32, help="judge: max_new_tokens of its calls")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="smallest size, 1 round, few tokens: a check")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.rounds = args.sizes[:1], 1
        args.prompts, args.samples, args.max_new_tokens = 2, 2, 8
        args.steps, args.k, args.critique_tokens = 2, 2, 8
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    shapes = {}
    for size in args.sizes:
        try:
            hidden, layers = (int(x) for x in size.lower().split("x"))
        except ValueError:
            raise SystemExit(f"engine_scaling: --sizes {size!r}: expected HIDDENxLAYERS, e.g. 512x8") from None
        if hidden % 64:
            raise SystemExit(f"engine_scaling: --sizes {size}: hidden must be a multiple of 64 (head_dim 64)")
        shapes[size] = (hidden, layers)

    work = workloads(args)
    warm = workloads(argparse.Namespace(**{**vars(args), "prompts": min(args.prompts, 2),
                                           "steps": min(args.steps, 2)}))
    results: dict[str, dict] = {}
    params: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="engine_scaling_") as tmp:
        for size, (hidden, layers) in shapes.items():
            model_dir = build(hidden, layers, Path(tmp) / size, verdict_token=True)
            params[size] = parameter_count(model_dir)
            print(f"{size}: {params[size] / 1e6:.2f}M parameters", flush=True)
            results[size] = measure_size(size, model_dir, work, warm, args.rounds)

    import torch

    print(f"\nengine scaling: vLLM vs transformers, median of {args.rounds} round(s), "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print(f"  generator: {args.prompts} prompts x {args.samples} solutions, max_new_tokens={args.max_new_tokens}")
    print(f"  judge: {args.steps} steps x K={args.k} critiques (compact judge loop), "
          f"max_new_tokens={args.critique_tokens} per call")
    header = (f"{'size':>8}{'params':>9}  {'role':10}{'vllm tok/s':>11}{'items/s':>9}{'s':>7}"
              f"{'hf tok/s':>10}{'items/s':>9}{'s':>7}{'vllm/hf items':>15}{'tokens':>8}")
    print(header)
    ratios: dict[str, dict[str, float]] = {role: {} for role in ROLES}
    for size in args.sizes:
        for role in ROLES:
            v, h = results[size][role, "vllm"], results[size][role, "transformers"]
            item_rate = {b: r["items"] / r["seconds"] for b, r in (("vllm", v), ("hf", h))}
            tok_rate = {b: r["tokens"] / r["seconds"] for b, r in (("vllm", v), ("hf", h))}
            ratios[role][size] = item_rate["vllm"] / item_rate["hf"]
            print(f"{size:>8}{params[size] / 1e6:8.2f}M  {role:10}"
                  f"{tok_rate['vllm']:11.0f}{item_rate['vllm']:9.1f}{v['seconds']:7.2f}"
                  f"{tok_rate['hf']:10.0f}{item_rate['hf']:9.1f}{h['seconds']:7.2f}"
                  f"{ratios[role][size]:14.2f}x{tok_rate['vllm'] / tok_rate['hf']:7.2f}x")
    if len(args.sizes) > 1:
        where_time_goes(args, params, results)
    print("vLLM vs transformers on this CPU (items/s): "
          + "; ".join(f"{role}: {wins_from(args.sizes, ratios[role])}" for role in ROLES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
