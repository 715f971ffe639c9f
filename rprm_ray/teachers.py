"""Teachers: the 'stronger LLM' that writes R-PRM seed critiques for labeled steps.

Three kinds, chosen by `models.teacher.kind`:
- programmatic: the embedded world's rule-based teacher (always right; the tiny-world stand-in);
- vllm: a local vLLM model sampled through the engines interface;
- openai: any OpenAI-compatible endpoint (`url`, `model`, key from the `api_key_env` variable).

All return a `critiques` table: K critiques per labeled step, with `label` copied from the step so
the SFT filter (keep critiques that agree with the label) can run next. The label is never shown
to the teacher (method_spec A2: the paper's prompt has no label slot).
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SamplingConfig, TeacherConfig
from rprm_ray.prompts import PromptStyle, parse_verdict
from rprm_ray.shards import ShardStore
from rprm_ray.teacher_client import TeacherClient, TeacherError

__all__ = ["TeacherError", "engine_critiques", "openai_critiques", "programmatic_critiques"]




def _critique_rows(steps: pa.Table, style: PromptStyle, write: Callable[[list[str], int], list[list[str]]],
                   k: int) -> pa.Table:
    rows = steps.to_pylist()
    prompts = [style.judge_prompt(r["question"], r["previous_steps"], r["now_step"]) for r in rows]
    texts = write(prompts, k)
    out = []
    for row, prompt, samples in zip(rows, prompts, texts, strict=True):
        for i, critique in enumerate(samples):
            verdict = parse_verdict(critique)
            out.append(
                dict(problem_id=row["problem_id"], solution_id=row["solution_id"], step_idx=row["step_idx"],
                     sample_idx=i, prompt=prompt, critique=critique, verdict=verdict,
                     valid=verdict is not None, p_yes=None, label=row["label"])
            )
    return batches.from_rows(out, "critiques")


def programmatic_critiques(steps: pa.Table, task, k: int) -> pa.Table:
    """The task's rule-based teacher (the embedded world's); deterministic, so K copies."""

    def write(prompts: list[str], k: int) -> list[list[str]]:
        rows = steps.to_pylist()
        return [[task.teacher_critique(r["question"], r["previous_steps"], r["now_step"])] * k for r in rows]

    return _critique_rows(steps, task.style, write, k)


def engine_critiques(steps: pa.Table, style: PromptStyle, engine, k: int, sampling: SamplingConfig,
                     store: ShardStore | None = None, chunk_rows: int | None = None) -> pa.Table:
    """A model teacher writes critiques the way the judge does (two calls for recompute-first
    styles), so the rows are the judge's own `critique_rows`. With a `store` (of `critiques`),
    the steps go in chunks of `chunk_rows`, each persisted when done; a rerun reads finished
    chunks back."""
    from rprm_ray.judging import critique_rows, write_critiques
    from rprm_ray.shards import map_chunks

    def write(chunk: pa.Table) -> pa.Table:
        prompts, completions = write_critiques(engine, style, chunk, k, sampling, where="teacher")
        return critique_rows(chunk, prompts, completions, where="teacher")

    if store is None:
        return write(steps)
    return map_chunks(store, steps, chunk_rows or max(1, steps.num_rows), write)


def openai_critiques(steps: pa.Table, style: PromptStyle, cfg: TeacherConfig, k: int,
                     max_tokens: int, store: ShardStore | None = None,
                     client: TeacherClient | None = None) -> pa.Table:
    """K critiques per step from an OpenAI-compatible endpoint (`teacher_client`), one request
    per step with n=K. With a `store`, answers persist as they arrive and a rerun reuses them."""
    client = client or TeacherClient(cfg, max_tokens)
    if store is None:
        import tempfile

        store = ShardStore(tempfile.mkdtemp(prefix="teacher-"), "teacher_responses")

    def write(prompts: list[str], k: int) -> list[list[str]]:
        return client.generate(prompts, k, store)

    return _critique_rows(steps, style, write, k)
