"""`rprm-ray bootstrap` (rprm_ray/commands/bootstrap.py): the cache key of a bootstrapped policy and
the command's one-line errors. Training itself runs in bench/bootstrap_policy.py's smoke test."""

from __future__ import annotations

from pathlib import Path

from rprm_ray.cli import main
from rprm_ray.commands.bootstrap import policy_key
from rprm_ray.config import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"


def key(*overrides: str) -> str:
    return policy_key(load_recipe(RECIPE, list(overrides)))


def test_the_cache_key_follows_what_determines_the_weights():
    base = key()
    assert base.startswith("bootstrap-policy-") and base == key()
    for changed in ("bootstrap.policy_sft_steps=10", "task.train_problems=100", "trainer.lr=0.001", "seed=1",
                    "models.policy.tiny.num_layers=3"):
        assert key(changed) != base, changed
    # Settings of other roles and of later stages reuse the bootstrapped policy.
    # So do the trainer's DPO settings, waits and checkpoint spacing, which no SFT reads.
    for unrelated in ("bootstrap.judge_sft_steps=10", "judge.critiques_per_step=4", "loop.iterations=5", "name=x",
                      "trainer.dpo_epochs=4", "trainer.dpo_lr=0.01", "trainer.dpop_lambda=0",
                      "trainer.checkpoint_interval_steps=7", "trainer.call_timeout_s=5"):
        assert key(unrelated) == base, unrelated


def test_a_bad_recipe_is_one_line_naming_the_field(capsys):
    assert main(["bootstrap", str(RECIPE), "--set", "trainer.lr=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rprm-ray bootstrap:") and "trainer.lr" in err

