"""Weight sync cost against model size: the trainer saves new weights, an engine (generator or judge
replica) loads them in place and verifies them, as every self-rewarding iteration does.

Phases, each timed on its own (seconds):
- `save`: `DeepSpeedTrainer.save_with_checksum` — gather, checksum, write HF safetensors;
- `reload`: `VllmEngine.load_weights` — stream the safetensors into the live vLLM engine;
- `verify`: `VllmEngine.weights_checksum` — compare every resident tensor with what was read.
Generator and judge replicas reload concurrently from the shared directory, so one engine's phases
are the critical path. Two sizes are measured; a line `t = a + b * GB` per phase is fitted through
them and extrapolated to a 7B model in bf16 (15.2 GB). On a GPU cluster the constants differ (the
shared filesystem's bandwidth and the GPU copy replace this machine's disk and memory), the form
does not: sync grows linearly with the checkpoint's bytes.

With `--run RUN_DIR` the iteration's share is printed: sync time (at the tiny size) over the
seconds the run's first iteration took (its stages' sum, from manifest.json).

    .venv/bin/python bench/weight_sync.py [--sizes 128x2 512x12] [--rounds 2] [--run runs/<name>]
    .venv/bin/python bench/weight_sync.py --smoke      # seconds: a broken benchmark fails CI

Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_arith.yaml"
PHASES = ("save", "reload", "verify")
SEVEN_B_BF16_GB = 7.6e9 * 2 / 1e9


def build(hidden: int, layers: int, out: Path, verdict_token: bool = False) -> Path:
    """An untrained tiny Llama of that size (head_dim 64, MLP 4 x hidden); `verdict_token` for a
    judge's vocabulary (bench/engine_scaling.py builds its models here too)."""
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.tiny import build_tiny_model

    cfg = TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 64),
                          intermediate_size=4 * hidden)
    return build_tiny_model(cfg, out, seed=0, verdict_token=verdict_token)


def checkpoint_gb(model_dir: Path) -> float:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 1e9


def measure_saves(model: Path, work: Path, rounds: int) -> tuple[float, list[tuple[Path, str]]]:
    """Median seconds of `rounds` trainer saves, and the saved (directory, checksum) pairs."""
    from rprm_ray.config import load_recipe
    from rprm_ray.training import DeepSpeedTrainer

    trainer = DeepSpeedTrainer(model, load_recipe(RECIPE, ["trainer.deepspeed.zero_stage=0"]).trainer,
                               progress=False)
    times, saved = [], []
    for r in range(rounds):
        out = work / f"round{r}"
        start = time.perf_counter()
        saved.append((out, trainer.save_with_checksum(out)))
        times.append(time.perf_counter() - start)
    return statistics.median(times), saved


def measure_reloads(model: Path, saved: list[tuple[Path, str]]) -> tuple[float, float, dict]:
    """Median seconds of an engine's in-place reload and of its verification, per saved checkpoint,
    and the last verification's counts: vLLM's CPU backend repacks linear weights into oneDNN
    kernels and keeps no plain copy, so `verify` compares only the tensors still resident (on GPU
    engines, all of them)."""
    from rprm_ray.config import load_recipe
    from rprm_ray.engines import make_engine

    engine = make_engine(model, "vllm", load_recipe(RECIPE).generator, dtype="float32", seed=0)
    reload, verify = [], []
    try:
        for out, checksum in saved:
            start = time.perf_counter()
            engine.load_weights(out)
            reload.append(time.perf_counter() - start)
            start = time.perf_counter()
            held = engine.weights_checksum()
            verify.append(time.perf_counter() - start)
            if held != checksum:
                raise SystemExit(f"weight_sync: engine holds {held[:12]}, trainer saved {checksum[:12]}")
        counts = dict(engine.last_verification)
    finally:
        engine.close()
    return statistics.median(reload), statistics.median(verify), counts


def iteration_seconds(run: Path) -> float:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return sum(s["seconds"] for key, s in stages.items() if key.startswith("iter_1/"))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["128x2", "512x12"], help="HIDDENxLAYERS per model")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", type=Path, default=None, help="a finished run, for the iteration's share")
    parser.add_argument("--smoke", action="store_true", help="one small size, one round, no fit")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.rounds = ["128x1"], 1
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Every trainer first, then every engine: in one process, DeepSpeed cannot initialise after
        # a vLLM engine has set up (and torn down) its own process groups.
        models, saves = {}, {}
        for size in args.sizes:
            hidden, layers = (int(x) for x in size.split("x"))
            models[size] = build(hidden, layers, Path(tmp) / size / "model")
            seconds, saves[size] = measure_saves(models[size], Path(tmp) / size, args.rounds)
            results[size] = {"gb": checkpoint_gb(models[size]), "save": seconds}
        for size in args.sizes:
            results[size]["reload"], results[size]["verify"], counts = measure_reloads(models[size], saves[size])
            t = results[size]
            print(f"{size:>8s}: {t['gb'] * 1e3:8.1f} MB  save {t['save']:6.2f} s  reload {t['reload']:6.2f} s  "
                  f"verify {t['verify']:6.2f} s ({counts['verified']} tensors compared, "
                  f"{counts['not_resident']} not resident)", flush=True)
    if len(args.sizes) < 2:
        return results
    small, large = (results[s] for s in (args.sizes[0], args.sizes[-1]))
    print(f"\nweight sync, median of {args.rounds} round(s); fit t = a + b * GB through {args.sizes[0]} "
          f"and {args.sizes[-1]}, extrapolated to 7B bf16 ({SEVEN_B_BF16_GB:.1f} GB):")
    total_7b = 0.0
    for phase in PHASES:
        b = (large[phase] - small[phase]) / max(large["gb"] - small["gb"], 1e-12)
        a = small[phase] - b * small["gb"]
        at_7b = a + b * SEVEN_B_BF16_GB
        total_7b += at_7b
        print(f"  {phase:6s}  a = {a:6.3f} s  b = {b:7.2f} s/GB  -> {at_7b:8.1f} s")
    print(f"  sync at 7B bf16 ~ {total_7b:.0f} s ({total_7b / 60:.1f} min) on this machine's disk and memory")
    if args.run is not None:
        sync = sum(small[p] for p in PHASES)
        it = iteration_seconds(args.run)
        print(f"  share of the run's first iteration: {sync:.2f} s of {it:.0f} s = {sync / it:.1%} "
              f"(per engine; replicas reload in parallel)")
    return results


if __name__ == "__main__":
    main()
