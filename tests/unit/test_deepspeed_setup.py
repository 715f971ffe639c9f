"""The generated DeepSpeed configs the cluster recipes rely on, checked without starting DeepSpeed:
an offloaded optimizer gets DeepSpeed's CPU Adam (DeepSpeed refuses a torch optimizer there),
ZeRO-3 gathers 16-bit weights for saving, the 7B recipes turn gradient checkpointing on, and the
non-finite loss guard names the stage and step."""

from pathlib import Path

import pytest
import torch

from rprm_ray.config import TrainerConfig, load_recipe
from rprm_ray.deepspeed_setup import (
    NonFiniteLossError,
    check_finite_loss,
    deepspeed_config,
    optimizer_name,
)

ROOT = Path(__file__).resolve().parents[2]


def cfg(**ds):
    return TrainerConfig(micro_batch_size_per_device=4, global_batch_size=16, deepspeed=ds)


def test_default_config_has_no_offload_and_plain_adamw(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    c = TrainerConfig(micro_batch_size_per_device=4, global_batch_size=16, num_workers=2)
    ds = deepspeed_config(c)
    assert ds["zero_optimization"] == {"stage": 2}
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == 2
    assert optimizer_name(c) == "torch.optim.AdamW"
    assert "zero_force_ds_cpu_optimizer" not in ds  # DeepSpeed's own check stays on


def test_offloaded_optimizer_uses_deepspeed_cpu_adam():
    c = cfg(zero_stage=3, offload_optimizer=True)
    ds = deepspeed_config(c)
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert optimizer_name(c) == "DeepSpeedCPUAdam"


def test_zero3_gathers_16bit_weights_once_for_saving():
    ds = deepspeed_config(cfg(zero_stage=3, precision="bf16"))
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}


@pytest.mark.parametrize("name", ["rprm_qwen2.5-math-7b.yaml", "psrlm_qwen2.5-math-7b.yaml"])
def test_the_7b_recipes_train_zero3_bf16_with_gradient_checkpointing(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    d = recipe.trainer.deepspeed
    assert (d.zero_stage, d.precision, d.gradient_checkpointing) == (3, "bf16", True)
    ds = deepspeed_config(recipe.trainer)
    assert ds["zero_optimization"]["stage"] == 3
    if d.offload_optimizer:
        assert optimizer_name(recipe.trainer) == "DeepSpeedCPUAdam"


def test_a_non_finite_loss_names_the_stage_and_step():
    assert check_finite_loss(torch.tensor(0.25), "sft", 0, 1) == 0.25
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLossError, match=rf"DeepSpeedTrainer.dpo: loss is {bad} at optimizer step 8; "
                                                     r"training stopped before the backward pass and nothing was saved"):
            check_finite_loss(torch.tensor(bad), "DeepSpeedTrainer.dpo", 7, 1)
