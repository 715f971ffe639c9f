"""Real DeepSpeed on CPU (gloo, world size 1): ZeRO-2 steps change weights, SFT learns, reference
log-probs match a plain transformers forward, DPO moves the reward margin, checkpoints reload."""

from __future__ import annotations

import math

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.config import TrainerConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trainer(tiny_model_dir):
    from rprm_ray.training import DeepSpeedTrainer

    cfg = TrainerConfig(
        micro_batch_size_per_device=8,
        global_batch_size=16,  # 2 micro batches per optimizer step: exercises accumulation
        lr=3e-3,
        dpo_lr=1e-3,
        warmup_ratio=0.0,
        dpo_beta=0.5,
        deepspeed={"zero_stage": 2, "backend": "gloo"},
    )
    return DeepSpeedTrainer(tiny_model_dir, cfg, progress=False)


def _sft_table(n: int = 32):
    rows = []
    for i in range(n):
        a, b = 10 + i, 3 + i % 7
        rows.append({"example_id": f"ex{i}", "kind": "policy", "prompt": f"Q:{a}+{b}\n",
                     "completion": f"{a}+{b}={a + b}\nA:{a + b}\n"})
    return from_rows(rows, "sft_examples")


def _pairs_table():
    rows = []
    for i in range(16):
        a, b = 20 + i, 4 + i % 5
        rows.append({"pair_id": f"p{i}", "kind": "critique" if i % 2 else "step", "problem_id": f"q{i}",
                     "prompt": f"Q:{a}*{b}\n", "chosen": f"{a}*{b}={a * b}\n",
                     "rejected": f"{a}*{b}={a * b + 1 + i % 3}\n"})
    return from_rows(rows, "preference_pairs")


def test_deepspeed_uses_gloo_and_zero2(trainer) -> None:
    import torch

    assert torch.distributed.is_initialized()
    assert torch.distributed.get_backend() == "gloo"
    assert trainer.engine.zero_optimization_stage() == 2
    assert trainer.engine.gradient_accumulation_steps() == 2


def test_sft_steps_change_weights_and_lower_loss(trainer) -> None:
    from rprm_ray.training import lr_at

    before = trainer.weights_checksum()
    params_before = {k: v.clone() for k, v in trainer.state_dict().items()}
    metrics = trainer.sft(_sft_table(), steps=30)
    after = trainer.weights_checksum()
    assert after != before
    changed = [k for k, v in trainer.state_dict().items() if not (v == params_before[k]).all()]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert metrics["steps"] == 30
    # The per-step schedule reaches the optimizer ZeRO-2 wraps.
    assert trainer.engine.optimizer.param_groups[0]["lr"] == pytest.approx(lr_at(29, 30, 3e-3, 0.0))
    assert metrics["loss_last"] < metrics["loss_first"]


def test_reference_logps_match_plain_transformers_forward(trainer, tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rprm_ray.dpo import sequence_logps
    from rprm_ray.training import collate, tokenize_rows

    pairs = trainer.add_reference_logps(_pairs_table())
    assert pairs.column("ref_chosen_logp").null_count == 0
    saved = trainer.save(tmp_path / "ckpt")
    model = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32)
    row = pairs.slice(1, 1).to_pylist()[0]  # a "critique" pair: EOS appended
    assert row["kind"] == "critique"
    rows = tokenize_rows(trainer.tokenizer, [row["prompt"]], [row["chosen"]], 256, append_eos=True)
    assert rows[0].ids[-1] == trainer.tokenizer.eos_token_id
    ids, mask = collate(rows, trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = sequence_logps(model(input_ids=ids).logits, ids, mask).item()
    assert row["ref_chosen_logp"] == pytest.approx(expected, abs=1e-3)
    step_row = pairs.slice(0, 1).to_pylist()[0]  # a "step" pair: no EOS
    rows = tokenize_rows(trainer.tokenizer, [step_row["prompt"]], [step_row["chosen"]], 256, False)
    ids, mask = collate(rows, trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = sequence_logps(model(input_ids=ids).logits, ids, mask).item()
    assert step_row["ref_chosen_logp"] == pytest.approx(expected, abs=1e-3)


def test_dpo_raises_reward_margin(trainer) -> None:
    pairs = trainer.add_reference_logps(_pairs_table())
    first = trainer.dpo(pairs, epochs=1)
    assert first["steps"] == 1 and first["pairs"] == 16
    # At the reference point every pair's rewards are 0, so the first loss is about log 2.
    assert abs(first["loss"] - math.log(2)) < 0.05
    later = trainer.dpo(pairs, epochs=6)
    assert later["margin"] > 0 and later["reward_accuracy"] > 0.5
    assert later["loss"] < math.log(2)


def test_save_reloads_with_same_checksum(trainer, tmp_path) -> None:
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rprm_ray.tiny import is_complete
    from rprm_ray.training import checksum_model_dir, checksum_state_dict

    out = trainer.save(tmp_path / "saved")
    assert is_complete(out)
    assert checksum_model_dir(out) == trainer.weights_checksum()
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert checksum_state_dict(reloaded.state_dict()) == trainer.weights_checksum()
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.decode(tok.encode("Q:1+2\n")) == "Q:1+2\n"


def test_a_trainer_starts_after_another_library_remade_the_world(trainer, tiny_model_dir) -> None:
    """An in-process vLLM engine destroys torch's world through torch (not deepspeed.comm) and the
    next one makes its own; DeepSpeed's cached groups of the old world must not reach the next
    trainer ("Group ... is not registered")."""
    import torch

    from rprm_ray.deepspeed_setup import _free_port
    from rprm_ray.training import DeepSpeedTrainer

    torch.distributed.destroy_process_group()
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    cfg = TrainerConfig(micro_batch_size_per_device=8, global_batch_size=8, warmup_ratio=0.0,
                        deepspeed={"zero_stage": 2, "backend": "gloo"})
    again = DeepSpeedTrainer(tiny_model_dir, cfg, progress=False)
    assert again.sft(_sft_table(8), steps=1)["steps"] == 1
