"""An exported judge loads in vLLM and generates exactly what the run's own weights generate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rprm_ray.config import load_recipe
from rprm_ray.export import export_model
from rprm_ray.manifest import Manifest

pytestmark = pytest.mark.integration

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"


def test_exported_judge_generates_like_the_run_weights(vllm_engine, tiny_model_dir: Path, tmp_path: Path) -> None:
    from vllm import SamplingParams

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
    # A second in-process engine would tear down vLLM's and torch.distributed's process-wide groups
    # when it is deleted, breaking the session's engine and later in-process DeepSpeed trainers: the
    # exported directory is loaded in a process of its own.
    script = (
        "import json, sys\n"
        "from vllm import LLM, SamplingParams\n"
        "llm = LLM(model=sys.argv[1], dtype='float32', max_model_len=512, seed=0, enforce_eager=True,\n"
        "          distributed_executor_backend='uni')\n"
        "prompts = json.loads(sys.argv[2])\n"
        "params = SamplingParams(temperature=0.0, max_tokens=16, seed=0)\n"
        "got = [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]\n"
        "chat = llm.get_tokenizer().apply_chat_template([{'role': 'user', 'content': prompts[0]}], tokenize=False)\n"
        "print('RESULT' + json.dumps({'got': got, 'chat': chat}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(prompts)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))[len("RESULT"):])
    # vLLM applies the exported generation_config's defaults; the explicit params above win.
    assert result["got"] == expected
    assert result["chat"] == prompts[0]
