"""Real DeepSpeed on CPU (gloo, world size 1): a diverging loss stops training before anything is
saved or recorded; ZeRO-3 with the model built partitioned (zero.Init), gradient checkpointing
and an offloaded optimizer (DeepSpeed's CPU Adam) trains and saves one gathered bf16 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.config import TrainerConfig, load_recipe

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _sft_table(n: int = 16):
    rows = [{"example_id": f"ex{i}", "kind": "policy", "prompt": f"Q:{10 + i}+3\n",
             "completion": f"{10 + i}+3={13 + i}\nA:{13 + i}\n"} for i in range(n)]
    return from_rows(rows, "sft_examples")


def test_a_diverging_loss_stops_the_stage_before_anything_is_saved(tiny_model_dir, tmp_path):
    import torch

    from rprm_ray.loop import Run, StageResult
    from rprm_ray.training import DeepSpeedTrainer, NonFiniteLossError

    cfg = TrainerConfig(micro_batch_size_per_device=8, global_batch_size=8, warmup_ratio=0.0,
                        deepspeed={"zero_stage": 2, "backend": "gloo"})
    trainer = DeepSpeedTrainer(tiny_model_dir, cfg, progress=False)
    # Diverged weights, injected: one NaN in the final norm makes every logit NaN. (A huge learning
    # rate does not get there: DeepSpeed skips steps whose gradients overflow.)
    with torch.no_grad():
        trainer.module.model.norm.weight[0] = float("nan")
    run = Run.open(load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}"]))
    model_dir = run.model_dir("iter_0/policy_sft")

    def stage():
        metrics = trainer.sft(_sft_table(), steps=5)
        trainer.save(model_dir)
        return StageResult(metrics=metrics)

    with pytest.raises(NonFiniteLossError, match=r"DeepSpeedTrainer.sft: loss is nan at optimizer step 1; "
                                                 r"training stopped before the backward pass"):
        run.stage("iter_0/policy_sft", stage)
    assert not model_dir.exists()
    assert not run.manifest.is_done("iter_0/policy_sft")
    assert json.loads(run.manifest.path.read_text())["stages"] == {}


@pytest.fixture
def zero3_scope():
    """A ZeRO-3 trainer registers itself with transformers (is_deepspeed_zero3_enabled) for as long
    as it lives; later tests in this process load models plainly, so the registration ends here."""
    yield
    import gc

    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    gc.collect()
    assert not is_deepspeed_zero3_enabled()


def test_zero3_offload_checkpointing_trains_and_saves_one_bf16_checkpoint(tiny_model_dir, tmp_path, zero3_scope):
    from safetensors import safe_open

    from rprm_ray.training import DeepSpeedTrainer, checksum_model_dir

    cfg = TrainerConfig(micro_batch_size_per_device=8, global_batch_size=8, lr=3e-3, warmup_ratio=0.0,
                        deepspeed={"zero_stage": 3, "precision": "bf16", "offload_optimizer": True,
                                   "gradient_checkpointing": True, "backend": "gloo"})
    trainer = DeepSpeedTrainer(tiny_model_dir, cfg, progress=False)
    assert type(trainer.engine.optimizer.optimizer).__name__ == "DeepSpeedCPUAdam"
    assert trainer.module.is_gradient_checkpointing
    # Built partitioned: ZeRO-3 parameters carry ds_id from construction (zero.Init).
    assert all(hasattr(p, "ds_id") for p in trainer.module.parameters())
    metrics = trainer.sft(_sft_table(), steps=4)
    assert metrics["steps"] == 4 and metrics["loss_last"] < metrics["loss_first"]
    out = tmp_path / "saved"
    checksum = trainer.save_with_checksum(out)
    assert checksum == checksum_model_dir(out)
    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.bfloat16"}
