"""Step scores from a judge model, for `rprm-ray eval processbench|bon --judge MODEL_OR_RUN`.

MODEL_OR_RUN is a model directory, a hub name, or a run directory (`runs/<name>` holding
`manifest.json`), which stands for the run's final judge with the run's prompt style and judge
settings. Judging runs `judging.score_steps` (the loop the ProcessJudge replicas run) on one engine
in this process, without Ray. The result is the `{id: step_scores}` mapping a SCORES.jsonl file
holds, so the benchmark scorers cannot tell a judged run from a saved one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rprm_ray.config import JudgeConfig, SamplingConfig
from rprm_ray.data import BonItem, DataError, ProcessBenchItem

if TYPE_CHECKING:
    import pyarrow as pa

    from rprm_ray.judging import ScoreMode

# A bare model directory has no recipe to say how long its prompts may be: take the model's own
# context, capped so the KV cache of a long-context model stays small on CPU nodes.
MAX_MODEL_LEN_CAP_TOKENS = 8192

# Steps per engine call: large enough to keep vLLM's batch full, small enough for the progress
# bar to move on a long benchmark.
JUDGE_CHUNK_ROWS = 512


# --------------------------------------------------------------------------------------------
# Which judge


@dataclass(frozen=True)
class JudgeSource:
    """A resolved MODEL_OR_RUN: the weights and the settings that come with them."""

    model_dir: str
    prompt_style: str | None  # the run's style; None for a bare model (the caller picks)
    judge_cfg: JudgeConfig  # the run's judge section; the defaults (and the model's context) otherwise
    engine_overrides: dict[str, Any] = field(default_factory=dict)  # the run's dtype / trust_remote_code
    origin: str = "model"  # "run <dir>", "model", "hub <name>": said on the progress line


def resolve_judge(model_or_run: str) -> JudgeSource:
    """A model directory (has config.json), a run directory (has manifest.json: its final judge),
    or a hub name ("org/model", fetched into the local hub cache); see rprm_ray.model_source."""
    from rprm_ray.model_source import resolve_model

    source = resolve_model(model_or_run, "judge", "--judge")
    if source.recipe is None:
        return _bare_model(source.model_dir, origin=source.origin)
    recipe = source.recipe
    spec = recipe.judge_model or recipe.models.policy
    return JudgeSource(
        model_dir=source.model_dir,
        prompt_style=recipe.models.prompt_style,
        judge_cfg=recipe.judge,
        engine_overrides={"dtype": spec.dtype, "trust_remote_code": spec.trust_remote_code},
        origin=source.origin,
    )


def _bare_model(model_dir: str, origin: str) -> JudgeSource:
    # No recipe says how long prompts may be: allow the model's own context.
    cfg = JudgeConfig(max_model_len_tokens=default_max_model_len(model_dir))
    return JudgeSource(model_dir=model_dir, prompt_style=None, judge_cfg=cfg, origin=origin)


# --------------------------------------------------------------------------------------------
# How to judge


@dataclass(frozen=True)
class JudgeOptions:
    """The command line's choices; None means "the run's setting, else the default"."""

    k: int = 1  # critiques per step: 1 = greedy, K > 1 sampled at temperature 1.0
    prompt_style: str | None = None
    max_new_tokens: int | None = None
    max_model_len: int | None = None
    backend: str = "vllm"
    enforce_eager: bool = False


def judge_settings(source: JudgeSource, options: JudgeOptions) -> JudgeConfig:
    """The source's judge config with the command line's sampling, context length and backend."""
    base = source.judge_cfg
    sampling = SamplingConfig(
        temperature=0.0 if options.k == 1 else 1.0,
        top_p=1.0,
        max_new_tokens=options.max_new_tokens or base.sampling.max_new_tokens,
        seed=base.sampling.seed,
    )
    values = {**base.model_dump(), "backend": options.backend, "sampling": sampling.model_dump(),
              "max_model_len_tokens": options.max_model_len or base.max_model_len_tokens}
    try:
        return JudgeConfig.model_validate(values)
    except ValueError as exc:
        raise DataError(f"--judge: unusable judge settings: {exc}") from None


def default_max_model_len(model_dir: str | Path) -> int:
    """The model's context (config.json max_position_embeddings) up to MAX_MODEL_LEN_CAP_TOKENS."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    context = config.get("max_position_embeddings")
    if not isinstance(context, int) or context < 16:
        return JudgeConfig().max_model_len_tokens
    return min(context, MAX_MODEL_LEN_CAP_TOKENS)


# --------------------------------------------------------------------------------------------
# What to judge, and back to per-benchmark scores


def processbench_plan(items: Sequence[ProcessBenchItem]) -> pa.Table:
    """`labeled_steps` to judge: an erroneous solution up to its first wrong step (later steps
    cannot change whether the predicted first error matches), every step of a correct one."""
    from rprm_ray.evaluation.processbench import labeled_steps_table

    return labeled_steps_table(items, truncate=True)


def processbench_scores(step_scores: pa.Table) -> dict[str, list[float | None]]:
    """{ProcessBench id: [score per judged step]} (the plan's solution_id is the item id)."""
    from rprm_ray.scoring import scores_by_solution

    return scores_by_solution(step_scores)


def bon_solution_id(item_id: str, candidate: int) -> str:
    return f"{item_id}#{candidate}"


def bon_plan(items: Sequence[BonItem]) -> pa.Table:
    """`labeled_steps` to judge: every step of every candidate (Best-of-N aggregates them all)."""
    from rprm_ray.batches import empty, from_rows

    rows = [
        {
            "problem_id": item.id,
            "solution_id": bon_solution_id(item.id, c),
            "step_idx": i,
            "question": item.question,
            "previous_steps": steps[:i],
            "now_step": step,
            "label": None,  # Best-of-N files label whole candidates, not steps
        }
        for item in items
        for c, steps in enumerate(item.steps)
        for i, step in enumerate(steps)
    ]
    return from_rows(rows, "labeled_steps") if rows else empty("labeled_steps")


def bon_scores(step_scores: pa.Table, items: Sequence[BonItem]) -> dict[str, list[list[float | None]]]:
    """{problem id: [[score per step] per candidate]}, the nested SCORES.jsonl shape."""
    from rprm_ray.scoring import scores_by_solution

    by_solution = scores_by_solution(step_scores)
    return {
        item.id: [by_solution.get(bon_solution_id(item.id, c), []) for c in range(len(item.steps))]
        for item in items
    }


# --------------------------------------------------------------------------------------------
# Judging


def judge_step_scores(
    engine: Any,
    style: Any,
    labeled_steps: pa.Table,
    k: int,
    sampling: SamplingConfig,
    score_mode: ScoreMode,
    *,
    chunk_rows: int = JUDGE_CHUNK_ROWS,
    progress: bool = True,
) -> pa.Table:
    """`step_scores` for every row of `labeled_steps`, judged `chunk_rows` rows per engine call with
    a progress bar on stderr."""
    from rprm_ray import batches, judging
    from rprm_ray.progress import progress_bar

    total = labeled_steps.num_rows
    parts = []
    with progress_bar(total, "judging", enabled=progress, unit="step") as bar:
        for start in range(0, total, chunk_rows):
            chunk = labeled_steps.slice(start, chunk_rows)
            _, scores = judging.score_steps(engine, style, chunk, k, sampling, score_mode, where="eval --judge")
            parts.append(scores)
            bar.update(chunk.num_rows)
    return batches.concat(parts, "step_scores")


def score_with_judge(model_or_run: str, options: JudgeOptions, labeled_steps: pa.Table) -> pa.Table:
    """Resolve MODEL_OR_RUN, start its engine here, judge `labeled_steps`, close the engine."""
    from rprm_ray.engines import make_engine
    from rprm_ray.prompts import get_style

    source = resolve_judge(model_or_run)
    cfg = judge_settings(source, options)
    style_name = options.prompt_style or source.prompt_style or "paper"
    print(
        f"judge: {source.model_dir} ({source.origin}); style {style_name}, k={options.k}, "
        f"backend {cfg.backend}, {labeled_steps.num_rows} steps",
        file=sys.stderr, flush=True,
    )
    # vLLM logs to stdout by default, and stdout carries the command's table or JSON: send the
    # engine's chatter to stderr (the env var covers vLLM's logger, the redirect plain prints).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with contextlib.redirect_stdout(sys.stderr):
        engine = make_engine(
            source.model_dir, cfg.backend, cfg, enforce_eager=options.enforce_eager, **source.engine_overrides
        )
        try:
            return judge_step_scores(
                engine, get_style(style_name), labeled_steps, options.k, cfg.sampling, cfg.score
            )
        finally:
            engine.close()
