"""Length guards on a run's data: problems and labeled solutions whose prompts cannot fit their
model are left out when the run's data is written, and counted (`skipped_too_long` in the data
stage's metrics), so no stage sends a batch an engine must refuse. Prompts that grow later (search
prefixes) are guarded by the engines themselves (`engines.base.LengthGuard`).

A prompt fits when its tokens + the tokens the role may write <= the role's max_model_len_tokens.
With `models.too_long: truncate_left` nothing is left out here: the engines keep each prompt's
last tokens instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from rprm_ray.config import ModelSpec, Recipe
    from rprm_ray.prompts import PromptStyle


def role_tokenizer(recipe: Recipe, role: str):
    """The tokenizer `role`'s engine will use (a tiny model's is the byte tokenizer)."""
    from rprm_ray.hub import resolve_model

    spec: ModelSpec = recipe.models.policy
    if role == "judge" and recipe.judge_model is not None:
        spec = recipe.judge_model
    if spec.is_tiny:
        from rprm_ray.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    path = resolve_model(spec.name_or_path, revision=spec.revision, cache=recipe.models.hub_cache,
                         where=f"models.{role}.name_or_path")
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code)


def fits(tokenizer, prompts: list[str], budget: int) -> list[bool]:
    if not prompts:
        return []
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [len(x) <= budget for x in ids]


def policy_budget(recipe: Recipe) -> int:
    """Prompt tokens a policy prompt may have: a whole solution must fit after it (the budget of
    `stages.policy.solution_sampling`)."""
    g = recipe.generator
    solution = min(g.sampling.max_new_tokens * recipe.loop.max_steps_per_solution, g.max_model_len_tokens // 2)
    return g.max_model_len_tokens - solution


def judge_budget(recipe: Recipe) -> int:
    return recipe.judge.max_model_len_tokens - recipe.judge.sampling.max_new_tokens


def guard_problems(problems: pa.Table, style: PromptStyle, tokenizer, budget: int) -> tuple[pa.Table, int]:
    keep = fits(tokenizer, [style.policy_prompt(q) for q in problems.column("question").to_pylist()], budget)
    return problems.filter(pa.array(keep, pa.bool_())), keep.count(False)


def guard_labeled_steps(steps: pa.Table, style: PromptStyle, tokenizer, budget: int) -> tuple[pa.Table, int]:
    """Whole solutions are kept or left out (first-error F1 needs every step of a solution); a
    solution's longest judge prompt is its last step's."""
    if steps.num_rows == 0:
        return steps, 0
    last: dict[str, dict] = {}
    for r in steps.select(["solution_id", "step_idx", "question", "previous_steps", "now_step"]).to_pylist():
        if r["solution_id"] not in last or r["step_idx"] > last[r["solution_id"]]["step_idx"]:
            last[r["solution_id"]] = r
    ids = list(last)
    prompts = [style.judge_prompt(r["question"], list(r["previous_steps"]), r["now_step"]) for r in last.values()]
    too_long = [sid for sid, ok in zip(ids, fits(tokenizer, prompts, budget), strict=True) if not ok]
    if not too_long:
        return steps, 0
    kept = steps.filter(pc.invert(pc.is_in(steps.column("solution_id"), pa.array(too_long, pa.string()))))
    return kept, len(too_long)
