"""Critiques per second of the process judge: bare vLLM vs the ProcessJudge through Ray Serve vs
the transformers backend, on the same prompts, measured side by side in one run.

    (a) the bare vLLM engine in this process, writing the critiques as the judge does
        (`judging.critiques_with_verdict`: no log-probs up to the verdict prefix, then the verdict
        continued with the top-k log-probs P(Yes) needs; same sampling, same per-prompt seeds):
        the ceiling
    (b) `JudgeClient.score_steps` -> ProcessJudge replica on Serve (one replica holding the same
        vLLM engine): adds Arrow tables through the object store, Serve routing, verdict parsing,
        P(Yes) and step scores
    (c) the transformers backend (`make_engine(..., "transformers")`) writing critiques the same way

Target: b/a >= 0.8. The three are timed in turn in every round (median of `--rounds` reported), so
load from other processes on the machine hits them alike. (a) and (b) share prompts and seeds, so
they generate identical critiques (checked) and do the same work; (c) samples differently, so its
generated-token rate is printed too.

Without --model-dir an untrained tiny model is built: its critiques are noise, which costs the
same to generate as sense (most run to max_new_tokens, like long real critiques).

The paper-style prompts are ~2,250 bytes, one token each for the char-level tiny model, so the
untrained tiny judge is built with positions for the longest prompt plus the critique (and the
engines get that context length); a --model-dir too short for them is refused.

    .venv/bin/python bench/judge_throughput.py [--steps 64] [--k 4] [--max-new-tokens 96] [--rounds 3]
    .venv/bin/python bench/judge_throughput.py --smoke      (2 steps, K=1, 8 tokens, 1 round: a check)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from rprm_ray import judging
from rprm_ray.config import AutoscalingConfig, JudgeConfig, SamplingConfig, TaskConfig, TinyModelConfig
from rprm_ray.prompts import get_style


def labeled_steps(num_steps: int) -> pa.Table:
    from rprm_ray.tasks.arith import make_splits
    from rprm_ray.tasks.arith_tables import labeled_steps_table

    _, eval_problems = make_splits(TaskConfig(train_problems=50, eval_problems=max(8, num_steps), seed=7))
    table = labeled_steps_table(eval_problems, seed=7, error_rate=0.5)
    if table.num_rows < num_steps:
        raise SystemExit(f"the embedded world gave {table.num_rows} labeled steps, fewer than --steps {num_steps}")
    return table.slice(0, num_steps)


def model_positions(model_dir: Path) -> int:
    import json

    return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])


def tokenizer_of(model_dir: Path) -> Callable[[str], list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return lambda text: tok.encode(text, add_special_tokens=False)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="an HF judge model (default: untrained tiny)")
    # One-call judges only: (a) replays the judge's prompts in one `LLM.generate`; the compact
    # judge writes its own line first and is shown the step in a second call.
    parser.add_argument("--style", default="paper", choices=["paper"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--k", type=int, default=4, help="critiques per step")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="Ray CPUs = the replica's CPUs")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.k, args.max_new_tokens, args.rounds = 2, 1, 8, 1
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    steps = labeled_steps(args.steps)
    prompts = judging.judge_prompts(steps, get_style(args.style))
    tmp = tempfile.TemporaryDirectory(prefix="judge_bench_")
    model_dir = args.model_dir
    if model_dir is None:
        from rprm_ray.tiny import build_tiny_model

        # One token per byte: positions for the longest prompt and its critique, in whole 512s.
        longest = max(len(p.encode()) for p in prompts) + args.max_new_tokens + 1
        tiny = TinyModelConfig(max_position_embeddings=-(-longest // 512) * 512)
        model_dir = build_tiny_model(tiny, Path(tmp.name) / "tiny_judge", seed=0)
    model_dir = Path(model_dir).resolve()
    context = model_positions(model_dir)
    longest = max(len(tokenizer_of(model_dir)(p)) for p in prompts) + args.max_new_tokens
    if longest > context:
        raise SystemExit(f"{model_dir}: {context} positions, but the longest {args.style} judge prompt "
                         f"and its critique take {longest} tokens")

    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    # One replica with all the CPUs: the same engine and threads as bare vLLM in this process.
    cfg = JudgeConfig(
        critiques_per_step=args.k,
        sampling=sampling,
        num_cpus_per_replica=args.cpus,
        max_batch_rows_per_request=max(args.steps, 1),
        autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=1),
        max_model_len_tokens=context,
    )
    critiques = args.steps * args.k

    # (a) bare vLLM: the engine the judge replica builds (same engine arguments, e.g. whole
    # prefills on CPU) and the judge's own two calls, without Arrow, Serve or parsing. (A single
    # call with log-probs at every token is 2.5x slower: bench/logprobs_cost.py.)
    from rprm_ray.engines import make_engine

    engine = make_engine(model_dir, "vllm", cfg)
    llm = engine.llm

    def bare() -> list:
        return judging.critiques_with_verdict(engine, prompts, args.k, sampling)

    # (c) transformers backend.
    hf = make_engine(model_dir, "transformers", cfg)

    def transformers() -> list:
        return judging.critiques_with_verdict(hf, prompts, args.k, sampling)

    # (b) ProcessJudge on Serve.
    import ray

    from actors.judge import deploy_judge

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    client = deploy_judge(cfg, model_dir, name="judge_bench", style_name=args.style)

    def serve_judge() -> tuple[pa.Table, pa.Table]:
        return client.score_steps(steps)

    # Warm-up: first calls pay for compilation and caches.
    bare_out = bare()
    transformers()
    serve_critiques, _ = serve_judge()

    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    tokens = {"a": 0, "c": 0}
    for _ in range(args.rounds):
        # Prefix caching would let a repeat skip the prompts' prefill; reset so every round
        # computes them, as a fresh batch of steps would.
        llm.reset_prefix_cache()
        t, bare_out = timed(bare)
        times["a"].append(t)
        t, _ = timed(serve_judge)
        times["b"].append(t)
        t, hf_out = timed(transformers)
        times["c"].append(t)
    tokens["a"] = sum(len(c.token_ids) for outs in bare_out for c in outs)
    tokens["c"] = sum(len(c.token_ids) for outs in hf_out for c in outs)

    bare_texts = [c.text for outs in bare_out for c in outs]
    same = bare_texts == serve_critiques.column("critique").to_pylist()
    counts = judging.critique_counts(serve_critiques)

    rate = {key: critiques / statistics.median(ts) for key, ts in times.items()}
    print(
        f"\njudge throughput: {args.steps} steps x K={args.k} = {critiques} critiques per call, "
        f"max_new_tokens={args.max_new_tokens}, model {model_dir.name}, {args.cpus} CPUs, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'':34}{'critiques/s':>12}{'tokens/s':>10}{'s/call':>8}")
    rows = [
        ("(a) bare vLLM engine, same calls", "a", tokens["a"]),
        ("(b) ProcessJudge via Ray Serve", "b", tokens["a"] if same else None),
        ("(c) transformers backend", "c", tokens["c"]),
    ]
    for label, key, toks in rows:
        med = statistics.median(times[key])
        tok_rate = f"{toks / med:10.0f}" if toks is not None else f"{'?':>10}"
        print(f"{label:34}{rate[key]:12.1f}{tok_rate}{med:8.2f}")
    print(f"b/a = {rate['b'] / rate['a']:.2f}  (target >= 0.8)    b/c = {rate['b'] / rate['c']:.2f}")
    print(f"(a) and (b) critiques identical: {same}; (b) invalid critiques: {counts.invalid}/{counts.total}")

    client.shutdown()
    ray.shutdown()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
