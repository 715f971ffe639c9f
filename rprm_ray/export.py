"""A run's judge or policy as a self-contained Hugging Face model directory (`rprm-ray export`).

The directory holds the weights as safetensors, config.json, the tokenizer with a chat template,
generation_config.json (the recipe's sampling for that role) and README.md, a model card with the
recipe, the data the run trained on and the run's figures. It loads with
`AutoModelForCausalLM.from_pretrained(DIR)` and `vllm.LLM(DIR)` and needs nothing from the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rprm_ray.data import DataError

if TYPE_CHECKING:
    from rprm_ray.config import Recipe

# The judge and policy read raw prompts in their style's format (rprm_ray.prompts); a tokenizer
# without a chat template gets this one, so `apply_chat_template` yields exactly that raw text.
PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def export_model(run_dir: Path, role: str, out_dir: Path, *, force: bool = False) -> Path:
    """Write the run's latest `role` ("judge" or "policy") weights to `out_dir`; returns it."""
    from rprm_ray.model_source import resolve_model

    if not (run_dir / "manifest.json").is_file():
        raise DataError(f"RUN {run_dir}: not a run directory (no manifest.json)")
    source = resolve_model(str(run_dir), role, "RUN")  # type: ignore[arg-type]
    assert source.recipe is not None and source.run_dir is not None
    src = Path(source.model_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise DataError(f"--to {out_dir}: directory exists and is not empty (pass --force to replace it)")
        shutil.rmtree(out_dir)
    if out_dir.resolve() == src.resolve() or src.resolve() in out_dir.resolve().parents:
        raise DataError(f"--to {out_dir}: inside the run's own model directory {src}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_weights(src, out_dir)
    _write_tokenizer(src, out_dir)
    generation_config(source.recipe, role, src).save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(source.recipe, role, source.run_dir, src))
    return out_dir


def _is_model_file(name: str) -> bool:
    # The weights, their index, the architecture config and remote code (trust_remote_code
    # models); the tokenizer and generation config are written separately, and what a run keeps
    # beside the weights (checksum.txt, training metrics) is not part of the model.
    return name == "config.json" or name.endswith((".safetensors", ".safetensors.index.json", ".py"))


def _copy_weights(src: Path, out: Path) -> None:
    if any(src.glob("*.safetensors")):
        for path in src.iterdir():
            if path.is_file() and _is_model_file(path.name):
                shutil.copy2(path, out / path.name)
        return
    # Older checkpoints (pytorch_model.bin): load and write safetensors.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(src, torch_dtype="auto").save_pretrained(out, safe_serialization=True)


def _write_tokenizer(src: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)


def generation_config(recipe: Recipe, role: str, src: Path) -> Any:
    """The recipe's sampling for the role (the judge's critiques, the policy's steps), with the
    model's special token ids."""
    import json

    from transformers import GenerationConfig

    sampling = recipe.judge.sampling if role == "judge" else recipe.generator.sampling
    config = json.loads((src / "config.json").read_text())
    values: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "do_sample": sampling.temperature > 0,
    }
    if sampling.temperature > 0:
        values.update(temperature=sampling.temperature, top_p=sampling.top_p)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(key) is not None:
            values[key] = config[key]
    return GenerationConfig(**values)


def model_card(recipe: Recipe, role: str, run_dir: Path, src: Path) -> str:
    from rprm_ray.config import dump_recipe
    from rprm_ray.manifest import Manifest
    from rprm_ray.report import collect, headline_rows

    manifest = Manifest.load(run_dir)
    summary = collect(manifest)
    mode = recipe.loop.mode
    style = recipe.models.prompt_style
    what = {
        "judge": "a generative process reward model (R-PRM style): given a question, the previous steps "
                 "and one step, it writes a critique ending in a verdict line, and P(Yes) at the verdict "
                 "is the step's score",
        "policy": "a step-by-step math policy; each step is one line (compact) or a `Step n:` paragraph (paper)",
    }[role]
    if recipe.task.kind == "arith":
        data = (f"the embedded arithmetic world (seed {recipe.task.seed}): {recipe.task.train_problems} training "
                f"and {recipe.task.eval_problems} held-out problems, generated and graded by `rprm_ray.tasks.arith`")
    else:
        sources = recipe.task.dataset.model_dump() if recipe.task.dataset else {}
        data = "datasets: " + ", ".join(f"{k} = `{v}`" for k, v in sources.items() if v)
    figures = "\n".join(f"| {a} | {b} |" for a, b in headline_rows(summary)) or "| (no figures recorded) | |"
    stages = "\n".join(f"- `{key}` ({stage['seconds']:.1f} s)" for key, stage in manifest.data["stages"].items())
    base = recipe.judge_model if role == "judge" and recipe.judge_model else recipe.models.policy
    base_line = "" if base.is_tiny else f"base_model: {base.name_or_path}\n"
    return f"""---
library_name: transformers
{base_line}tags:
- rprm-ray
- process-reward-model
- {role}
---

# {run_dir.name}: {role}

The {role} of the rprm-ray run `{run_dir.name}` (mode `{mode}`): {what}.

- Prompt style: `{style}` (`rprm_ray.prompts`); the chat template passes message contents through
  unchanged when the base tokenizer has none, so prompts are the style's raw text.
- Data: {data}.
- Generation defaults (`generation_config.json`): the recipe's {'judge' if role == 'judge' else 'generator'}.sampling.

Serve the judge over HTTP with `rprm-ray serve DIR --prompt-style {style}`, or load it with
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` or `vllm.LLM(DIR)`.

## Figures of the run

| figure | value |
|---|---|
{figures}

## Stages

{stages or '(none)'}

## Recipe

```yaml
{dump_recipe(recipe).rstrip()}
```
"""
