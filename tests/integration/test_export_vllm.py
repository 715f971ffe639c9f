"""An exported judge loads in vLLM and generates exactly what the run's own weights generate."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from rprm_ray.config import load_recipe
from rprm_ray.export import export_model
from rprm_ray.manifest import Manifest

pytestmark = pytest.mark.integration

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"


def test_exported_judge_generates_like_the_run_weights(vllm_engine, tiny_model_dir: Path, tmp_path: Path) -> None:
    from vllm import LLM, SamplingParams

    recipe = load_recipe(TINY, [f"run_root={tmp_path / 'runs'}", "name=r"])
    run_dir = tmp_path / "runs" / "r"
    manifest = Manifest.create(run_dir, recipe.model_dump(mode="json"))
    shutil.copytree(tiny_model_dir, run_dir / "judge_dpo")
    manifest.record("iter_0/judge_dpo", {}, {}, 1.0, {"judge_dir": str(run_dir / "judge_dpo")})
    out = export_model(run_dir, "judge", tmp_path / "exported")
    shutil.rmtree(run_dir)  # the export stands alone

    params = SamplingParams(temperature=0.0, max_tokens=16, seed=0)
    prompts = ["Q:(3+4)*2\nP:3+4=7\n", "Q:9-2\n"]
    expected = [o.outputs[0].text for o in vllm_engine.generate(prompts, params, use_tqdm=False)]
    llm = LLM(model=str(out), dtype="float32", max_model_len=512, seed=0, enforce_eager=True,
              distributed_executor_backend="uni")
    try:
        got = [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]
        # vLLM applies the exported generation_config's defaults; the explicit params above win.
        assert got == expected
        assert llm.get_tokenizer().apply_chat_template([{"role": "user", "content": prompts[0]}],
                                                       tokenize=False) == prompts[0]
    finally:
        del llm
        gc.collect()
