"""`rprm-ray bootstrap RECIPE [--set k=v]`: build the tiny policy, SFT it on the embedded world's
reference solutions with the DeepSpeed trainer, and print its greedy accuracy on held-out problems.

Runs in this process (no Ray): the quickest way to check that a recipe's policy can learn the task.
The trained policy is cached under `model_cache/bootstrap-policy-<hash of its inputs>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rprm_ray.config import Recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="recipe YAML (e.g. recipes/tiny_arith.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set bootstrap.policy_sft_steps=300")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to save the trained policy (default: the recipe's model cache)")
    parser.add_argument("--eval-backend", choices=("transformers", "vllm"), default="transformers",
                        help="greedy decoding for the accuracy check: in-process transformers "
                             "(default; no engine start-up) or vLLM through rprm_ray.engines")
    parser.add_argument("--force", action="store_true", help="retrain even if a cached policy exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def policy_key(recipe: Recipe) -> str:
    """Everything that determines the bootstrapped weights, hashed."""
    parts = [recipe.models.policy.model_dump(mode="json"), recipe.task.model_dump(mode="json"),
             recipe.trainer.sft_fingerprint(), recipe.bootstrap.policy_sft_steps, recipe.seed]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return f"bootstrap-policy-{digest}"


def greedy_accuracy(recipe: Recipe, model_dir: Path, problems: list, completions: list[str]) -> float:
    """Share of problems whose greedy completion ends in the right answer."""
    from rprm_ray.prompts import get_style
    from rprm_ray.tasks import arith

    style = get_style(recipe.models.prompt_style)
    hits = sum(arith.is_correct_answer(p, style.extract_answer(c)) for p, c in zip(problems, completions, strict=True))
    return hits / max(1, len(problems))


def _vllm_greedy(recipe: Recipe, model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    from rprm_ray.config import SamplingConfig
    from rprm_ray.engines import make_engine

    engine = make_engine(model_dir, "vllm", recipe.generator)
    try:
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=recipe.seed)
        return [c[0].text for c in engine.generate(prompts, n=1, sampling=sampling)]
    finally:
        engine.close()


def bootstrap_policy(
    recipe: Recipe,
    out_dir: Path | None = None,
    eval_backend: str = "transformers",
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build + SFT + evaluate the policy. Returns timings (s), accuracy and where the model is."""
    from rprm_ray.prompts import get_style
    from rprm_ray.tasks import arith, arith_tables
    from rprm_ray.tiny import ensure_model, is_complete

    if recipe.task.kind != "arith":
        raise ValueError(f"bootstrap: task.kind {recipe.task.kind!r} — the policy bootstrap trains on "
                         "the embedded arith world only")
    t_start, cpu_start = time.perf_counter(), time.process_time()
    key = policy_key(recipe)
    out = Path(out_dir) if out_dir else Path(recipe.model_cache) / key
    base = ensure_model(recipe.models.policy, recipe.model_cache, f"{key}-init", seed=recipe.seed)
    if not isinstance(base, Path):
        raise ValueError(f"bootstrap: models.policy.name_or_path {base!r} is not 'tiny'; the bootstrap "
                         "builds and trains the tiny policy")
    train, held_out = arith.make_splits(recipe.task)
    n_eval = recipe.evaluation.eval_problems or len(held_out)
    held_out = held_out[:n_eval]
    style = get_style(recipe.models.prompt_style)
    prompts = [style.policy_prompt(p.question) for p in held_out]
    max_new = recipe.generator.sampling.max_new_tokens * (recipe.task.max_steps + 1)
    t_built = time.perf_counter()

    result: dict[str, Any] = {"model_dir": str(out), "eval_problems": len(held_out),
                              "sft_steps": recipe.bootstrap.policy_sft_steps}
    from rprm_ray.training import DeepSpeedTrainer

    trainer = None
    if is_complete(out) and (out / "train_metrics.json").is_file() and not force:
        result.update(json.loads((out / "train_metrics.json").read_text()), reused=True)
        t_init = t_trained = time.perf_counter()
        cpu_init = cpu_trained = time.process_time()
    else:
        if out.exists():
            shutil.rmtree(out)
        table = arith_tables.policy_sft_table(train)
        trainer = DeepSpeedTrainer(base, recipe.trainer, total_steps=recipe.bootstrap.policy_sft_steps,
                                   progress=progress)
        t_init, cpu_init = time.perf_counter(), time.process_time()
        metrics = trainer.sft(table)
        t_trained, cpu_trained = time.perf_counter(), time.process_time()
        trainer.save(out)
        (out / "train_metrics.json").write_text(json.dumps(metrics))
        result.update(metrics, reused=False, zero_stage=recipe.trainer.deepspeed.zero_stage,
                      threads=trainer.num_threads)

    if eval_backend == "vllm":
        completions = _vllm_greedy(recipe, out, prompts, max_new)
    else:
        if trainer is None:
            trainer = DeepSpeedTrainer(out, recipe.trainer, total_steps=1, progress=progress)
        completions = trainer.greedy(prompts, max_new_tokens=max_new)
    t_end = time.perf_counter()
    result.update(
        accuracy=greedy_accuracy(recipe, out, held_out, completions),
        eval_backend=eval_backend,
        build_s=round(t_built - t_start, 1),
        init_s=round(t_init - t_built, 1),
        train_s=round(t_trained - t_init, 1),
        eval_s=round(t_end - t_trained, 1),
        total_s=round(t_end - t_start, 1),
        # CPU seconds of this process, all threads: what other processes on a shared machine
        # cannot inflate (wall time on an idle machine lies between cpu_s / threads and cpu_s).
        train_cpu_s=round(cpu_trained - cpu_init, 1),
        total_cpu_s=round(time.process_time() - cpu_start, 1),
        example=prompts[0] + completions[0] if prompts else "",
    )
    return result


def run(args: argparse.Namespace) -> int:
    from rprm_ray.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)  # RecipeError: reported by cli.main
    try:
        result = bootstrap_policy(recipe, args.out, args.eval_backend, args.force, not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rprm-ray bootstrap: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"policy: {result['model_dir']}{' (reused)' if result['reused'] else ''}")
    print(f"greedy accuracy on {result['eval_problems']} held-out problems: {result['accuracy']:.1%}")
    print(f"time: total {result['total_s']}s (build {result['build_s']}s, trainer init {result['init_s']}s, "
          f"SFT {result['train_s']}s, eval {result['eval_s']}s via {result['eval_backend']}; "
          f"CPU {result['total_cpu_s']}s)")
    if not result["reused"]:
        print(f"SFT loss: {result['loss_first']:.3f} -> {result['loss_last']:.3f} over {result['sft_steps']} steps")
    return 0
