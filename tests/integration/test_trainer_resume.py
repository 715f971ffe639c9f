"""A trainer rank killed mid-step: the training stage, rerun, resumes from its last checkpoint.

Real Ray actors and real DeepSpeed (two data-parallel ranks, ZeRO-2, gloo on CPU) through the
pipeline's path: `Run.stage` -> `train_sft` -> `TrainerGroup`. The stage checkpoints every few
optimizer steps into <run>/<stage>/trainer_ckpt/; rank 1 is killed after a checkpoint while the
ranks train; the rerun continues from that checkpoint and ends with the same weights and losses as
an uninterrupted run of the same stage. In-process trainers check the tiny recipe's ZeRO stage 0,
DPO, and ZeRO-3 with an offloaded optimizer the same way.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.config import TrainerConfig, load_recipe

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STAGE = "iter_0/policy_sft"
STEPS = 60
INTERVAL = 4
# No CPU reservation: the session's engines may hold the test cluster's logical CPUs.
TRAINER = TrainerConfig(num_workers=2, num_cpus_per_worker=0, micro_batch_size_per_device=4,
                        global_batch_size=8, lr=3e-3, warmup_ratio=0.1, checkpoint_interval_steps=INTERVAL,
                        deepspeed={"zero_stage": 2, "backend": "gloo"})


def _sft_table(n: int = 36):
    rows = [{"example_id": f"ex{i}", "kind": "policy", "prompt": f"Q:{10 + i}+{3 + i % 7}\n",
             "completion": f"{10 + i}+{3 + i % 7}={13 + i + i % 7}\nA:{13 + i + i % 7}\n"} for i in range(n)]
    return from_rows(rows, "sft_examples")


def _run(tmp_path: Path, name: str):
    from rprm_ray.loop import Run
    from rprm_ray.roles import Roles

    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}", f"name={name}"])
    recipe = recipe.model_copy(update={"trainer": TRAINER})
    return Run.open(recipe, roles=Roles(recipe))


def _stage(run, init_dir: Path):
    from rprm_ray.loop import StageResult
    from rprm_ray.stages.training_stages import train_sft

    return lambda: StageResult(metrics=train_sft(run, init_dir, _sft_table(), STEPS, run.model_dir(STAGE),
                                                 "policy-sft"))


def _complete_steps(ckpt_dir: Path) -> list[int]:
    from rprm_ray.trainer_checkpoints import read_markers

    return sorted(m["step"] for m in read_markers(ckpt_dir).values() if m)


def test_a_rank_killed_mid_step_resumes_the_stage_from_its_last_checkpoint(ray_cluster, tiny_model_dir, tmp_path):
    import ray

    from rprm_ray.roles import checksum_of

    # Uninterrupted: the reference weights and losses.
    plain = _run(tmp_path, "resume-plain")
    expected = plain.stage(STAGE, _stage(plain, tiny_model_dir))
    assert expected["resumed_from_step"] == 0 and expected["steps"] == STEPS
    assert not (plain.dir / STAGE / "trainer_ckpt").exists(), "a finished stage keeps no trainer checkpoint"

    run = _run(tmp_path, "resume-killed")
    ckpt_dir = run.dir / STAGE / "trainer_ckpt" / "policy-sft"
    failure: dict[str, BaseException] = {}

    def first_attempt() -> None:
        try:
            run.stage(STAGE, _stage(run, tiny_model_dir))
        except BaseException as exc:  # the kill's error, checked below
            failure["error"] = exc

    attempt = threading.Thread(target=first_attempt)
    attempt.start()
    deadline = time.monotonic() + 120
    # After the second checkpoint (the first is then removed), while the ranks train on.
    while max(_complete_steps(ckpt_dir), default=0) < 2 * INTERVAL and attempt.is_alive() \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _complete_steps(ckpt_dir), "no checkpoint was written before the stage ended"
    ray.kill(ray.get_actor(f"{run.recipe.name}.policy-sft-rank1"), no_restart=True)  # mid-step: training goes on
    attempt.join(timeout=120)
    assert not attempt.is_alive(), "the stage did not fail after its rank was killed"
    assert "error" in failure, "the rank was killed after the stage finished: nothing to resume"
    assert "policy-sft-rank1: the process died while sft (stage iter_0/policy_sft)" in str(failure["error"])
    assert not run.manifest.is_done(STAGE)
    saved = _complete_steps(ckpt_dir)
    assert len(saved) == 1 and 2 * INTERVAL <= saved[0] < STEPS and saved[0] % INTERVAL == 0, saved

    resumed = run.stage(STAGE, _stage(run, tiny_model_dir))
    assert resumed["resumed_from_step"] == saved[0]
    assert resumed["steps"] == STEPS
    assert run.manifest.is_done(STAGE)
    assert not ckpt_dir.exists(), "the finished stage's trainer checkpoint was not removed"
    # The resumed run saw the same remaining batches with the same optimizer state: identical
    # weights and identical loss records (the first steps' losses come from the checkpoint).
    assert checksum_of(run.model_dir(STAGE)) == checksum_of(plain.model_dir(STAGE))
    assert {k: v for k, v in resumed.items() if k != "resumed_from_step"} == \
        {k: v for k, v in expected.items() if k != "resumed_from_step"}
    recorded = json.loads(run.manifest.path.read_text())["stages"][STAGE]["metrics"]
    assert recorded["resumed_from_step"] == saved[0]


def _pairs(n: int = 24):
    rows = [{"pair_id": f"p{i}", "kind": "step" if i % 2 else "solution", "problem_id": f"q{i}",
             "prompt": f"Q:{10 + i}+3\n", "chosen": f"{10 + i}+3={13 + i}\n", "rejected": f"{10 + i}+3={14 + i}\n",
             "ref_chosen_logp": None, "ref_rejected_logp": None} for i in range(n)]
    return from_rows(rows, "preference_pairs")


@pytest.fixture
def zero3_scope():
    """A ZeRO-3 trainer registers itself with transformers for as long as it lives; later tests in
    this process load models plainly, so the registration ends here."""
    yield
    import gc

    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    gc.collect()


ZERO0 = {"zero_stage": 0, "backend": "gloo"}
# The 7B recipes' layout, with the optimizer offloaded to DeepSpeed's CPU Adam (whose kernel needs
# its bias-correction products replayed after a load: trainer_checkpoints.replay_cpu_adam_steps).
ZERO3_OFFLOAD = {"zero_stage": 3, "precision": "bf16", "offload_optimizer": True, "gradient_checkpointing": True,
                 "backend": "gloo"}


@pytest.mark.parametrize("kind,deepspeed", [("sft", ZERO0), ("dpo", ZERO0), ("sft", ZERO3_OFFLOAD)],
                         ids=["sft-zero0", "dpo-zero0", "sft-zero3-offload"])
def test_in_process_trainers_resume_to_the_uninterrupted_weights_and_metrics(tiny_model_dir, tmp_path, kind,
                                                                             deepspeed, zero3_scope):
    """The tiny recipe's ZeRO stage 0 (the optimizer state in the model-states file), DPO's loop
    state, and ZeRO-3 + bf16 + CPU Adam: a fresh trainer given the directory of a call that
    checkpointed at step 10 of 12 redoes steps 11-12 and ends where that call ended."""
    from rprm_ray.training import DeepSpeedTrainer

    cfg = TrainerConfig(micro_batch_size_per_device=4, global_batch_size=4, lr=3e-3, dpo_lr=1e-4,
                        warmup_ratio=0.1, checkpoint_interval_steps=5, deepspeed=deepspeed)
    ckpt_dir = tmp_path / "trainer_ckpt"

    def train() -> tuple[dict, str]:
        trainer = DeepSpeedTrainer(tiny_model_dir, cfg, progress=False)
        if kind == "sft":
            metrics = trainer.sft(_sft_table(24), steps=12, checkpoint_dir=ckpt_dir)
        else:
            metrics = trainer.dpo(trainer.add_reference_logps(_pairs()), epochs=2, checkpoint_dir=ckpt_dir)
        return metrics, trainer.weights_checksum()

    first, first_weights = train()
    assert first["resumed_from_step"] == 0 and first["steps"] == 12
    assert _complete_steps(ckpt_dir) == [10]  # step 5's was removed once step 10's was complete
    second, second_weights = train()
    assert second["resumed_from_step"] == 10
    assert second_weights == first_weights
    assert {k: v for k, v in second.items() if k != "resumed_from_step"} == \
        {k: v for k, v in first.items() if k != "resumed_from_step"}
