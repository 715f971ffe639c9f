"""Data-parallel DeepSpeed ranks as Ray actors (gloo on CPU): the rendezvous the GPU cluster uses
too. Ranks on one node split its cores, and after every optimizer step they hold the same weights."""

from __future__ import annotations

import os

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.config import TrainerConfig

pytestmark = pytest.mark.integration


def _sft_table(n: int = 32):
    rows = [{"example_id": f"ex{i}", "kind": "policy", "prompt": f"Q:{10 + i}+{3 + i % 7}\n",
             "completion": f"{10 + i}+{3 + i % 7}={13 + i + i % 7}\nA:{13 + i + i % 7}\n"} for i in range(n)]
    return from_rows(rows, "sft_examples")


def test_two_ranks_train_in_step_on_their_share_of_the_cores(ray_cluster, tiny_model_dir) -> None:
    from actors.trainer import TrainerGroup

    # No CPU reservation: the session's engines hold the test cluster's 2 logical CPUs.
    cfg = TrainerConfig(num_workers=2, num_cpus_per_worker=0, micro_batch_size_per_device=4,
                        global_batch_size=8, lr=3e-3, warmup_ratio=0.0,
                        deepspeed={"zero_stage": 2, "backend": "gloo"})
    group = TrainerGroup(tiny_model_dir, cfg, name="dp-test")
    try:
        assert group.rank_threads() == [max(1, (os.cpu_count() or 1) // 2)] * 2
        before = group.rank_checksums()
        metrics = group.sft(_sft_table(), steps=3)
        after = group.rank_checksums()
    finally:
        group.shutdown()
    assert metrics["steps"] == 3
    assert after[0] == after[1], "data-parallel ranks diverged"
    assert after[0] != before[0], "SFT steps left the weights unchanged"
