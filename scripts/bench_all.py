"""Run every benchmark in bench/ and print the line that carries each one's figure (`make bench`).

    python scripts/bench_all.py [--run runs/<a finished guided run>] [--psrlm-run runs/<psrlm run>]
        [--smoke] [--only NAME ...]

Benchmarks that read a finished run get `--run` (default: the guided run under runs/ that
finished last), or its M1 via `--model`; psrlm_seeds' smoke reruns `--psrlm-run`; the rest build
what they need. At full size the whole set takes an hour or more on a 2-core machine; `--smoke` runs
each at its smallest size (what `make test` does). Exit status: the number of benchmarks that
failed or printed no result line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def free_port() -> int:
    """A free port between Ray's worker ports (10002-19999) and the kernel's ephemeral range
    (32768-): a port the kernel hands out (bind to 0) can be taken by another connection before
    Serve binds it, which failed a run ("Failed to bind to address 127.0.0.1:32931")."""
    import random

    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("bench_all: no free port between 20000 and 32000 for Serve")


# What each benchmark needs beside its size, from the run directory and its manifest state.
INPUTS: dict[str, Callable[[Path, dict], list[str]]] = {
    # A port of its own: Serve's default may be held by a run on the same machine.
    "beam_vs_bon.py": lambda run, state: ["--run", str(run), "--set", f"resources.serve_port={free_port()}"],
    "critique_sampling.py": lambda run, state: ["--run", str(run)],
    "judge_vs_policy_steps.py": lambda run, state: ["--run", str(run)],
    "logprobs_cost.py": lambda run, state: ["--run", str(run)],
    "step_dpo_replay.py": lambda run, state: ["--run", str(run)],
    "trainer_layouts.py": lambda run, state: ["--model", state["m1_dir"]],
}
# Benchmarks that build what they need at full size but whose smoke size reruns a finished micro
# run of the given mode: (mode, arguments).
SMOKE_INPUTS: dict[str, tuple[str, Callable[[Path, dict], list[str]]]] = {
    # Full size: recipes/tiny_psrlm.yaml over three seeds; smoke: one more seed of a micro psrlm run.
    "psrlm_seeds.py": ("psrlm", lambda run, state: ["--run", str(run)]),
}
# The line with each benchmark's figure (its ratio where it has one): printed means measured.
RESULT: dict[str, str] = {
    "beam_vs_bon.py": r"beam\S* - Best-of-N over \d+ seeds: .*",
    "bootstrap_policy.py": r"\[zero \d\] accuracy \d+\.\d%.*",
    "critique_sampling.py": r"K=\d+ sampled vs greedy on .*: \d+ steps, greedy wrong at \d+; fixed \d+, broken \d+.*",
    "engine_scaling.py": r"vLLM vs transformers on this CPU \(items/s\): generator: .*; judge: .*",
    "judge_throughput.py": r"b/a = \d+\.\d\d .* b/c = \d+\.\d\d",
    "judge_vs_policy_steps.py": r"judge said No \d+ times.*",
    "logprobs_cost.py": r"generator \(\d+ prefixes x 6\): .* ratio +\d+\.\d\dx",
    "psrlm_seeds.py": r"result: mean (gain M\d+ - M1|M\d+ - its SFT-spend control) over \d+ seeds: .*",
    "psrlm_self_judge.py": r"result: self-judge pairwise accuracy \d+\.\d%.*",
    "search_batching.py": r"speed-up \(one-at-a-time / batched\): \d+\.\d\dx.*",
    "step_dpo_oracle.py": r" +\d+e-\d\d +\d+\.\d\d +[+-]\d+\.\d\d.*",
    "step_dpo_replay.py": r" +\d+e-\d\d +\d+ +\d+(\.\d+)? +\d+\.\d\d +[+-]\d+\.\d\d.*",
    "trainer_layouts.py": r" +2 ranks, padded +\d+\.\d\d steps/s +\d+\.\d\dx",
    "trainer_vs_torch.py": r" +deepspeed zero2 +\d+\.\d\d +\d+\.\d\d +\d+\.\d\d +\d+\.\d\d",
    "weight_sync.py": r"sync at 7B bf16 ~ \d+ s.*|\d+x\d+: .* verify +\d+\.\d\d s",
}


def scripts() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def inputs(script: str, smoke: bool) -> tuple[str, Callable[[Path, dict], list[str]]] | None:
    """(the mode of the finished run `script` reads, its arguments from that run), or None."""
    if smoke and script in SMOKE_INPUTS:
        return SMOKE_INPUTS[script]
    return ("guided", INPUTS[script]) if script in INPUTS else None


def command(script: str, runs: dict[str, Path | None], smoke: bool) -> list[str]:
    """The benchmark's command line; `runs`: a finished run directory per mode (guided, psrlm)."""
    args = [sys.executable, str(BENCH / script)] + (["--smoke"] if smoke else [])
    needed = inputs(script, smoke)
    if needed:
        mode, arguments = needed
        run_dir = runs.get(mode)
        if run_dir is None:
            flag = "--run" if mode == "guided" else f"--{mode}-run"
            raise SystemExit(f"bench/{script} reads a finished {mode} run: give {flag} runs/<name>")
        state = json.loads((run_dir / "manifest.json").read_text())["state"]
        args += arguments(run_dir, state)
    return args


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # benchmarks that use Ray start their own local cluster
    # This checkout's code, whichever checkout the environment's editable install points at.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def latest_run(mode: str, root: Path = ROOT / "runs") -> Path | None:
    """The run of `mode` under `root` with a report (metrics.json) that finished last, or None."""
    found = []
    for metrics in root.glob("*/metrics.json"):
        try:
            recipe = json.loads((metrics.parent / "manifest.json").read_text())["recipe"]
        except (OSError, ValueError, KeyError):
            continue
        if recipe.get("loop", {}).get("mode") == mode:
            found.append((metrics.stat().st_mtime, metrics.parent))
    return max(found)[1] if found else None


def result_lines(script: str, stdout: str) -> list[str]:
    pattern = RESULT.get(script)
    return [m.group(0).strip() for m in re.finditer(pattern, stdout)] if pattern else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a finished guided run directory (default: the guided run under runs/ that finished last)")
    parser.add_argument("--psrlm-run", type=Path, default=None,
                        help="a finished psrlm run (only --smoke reads one: psrlm_seeds reruns it)")
    parser.add_argument("--smoke", action="store_true", help="each benchmark at its smallest size")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these scripts only")
    args = parser.parse_args()
    args.run = args.run or latest_run("guided")
    for run in (args.run, args.psrlm_run):
        if run is not None and not (run / "manifest.json").is_file():
            raise SystemExit(f"{run}: not a run directory (no manifest.json)")
    chosen = [s for s in scripts() if args.only is None or s in args.only or s.removesuffix(".py") in args.only]
    summary: list[tuple[str, float, list[str], int]] = []
    for script in chosen:
        cmd = command(script, {"guided": args.run, "psrlm": args.psrlm_run}, args.smoke)
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, text=True)
        sys.stdout.write(done.stdout)
        summary.append((script, time.perf_counter() - start, result_lines(script, done.stdout), done.returncode))
    print("\n=== summary" + (" (smoke size)" if args.smoke else ""))
    failed = 0
    for script, seconds, lines, rc in summary:
        ok = rc == 0 and (lines or script not in RESULT)
        failed += not ok
        status = "ok" if ok else f"FAILED (exit {rc})" if rc else "FAILED (no result line)"
        print(f"{script:28}{seconds:7.0f}s  {status}")
        for line in lines:
            print(f"    {line}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
