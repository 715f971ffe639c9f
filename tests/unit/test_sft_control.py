"""The SFT-spend control (stages/sft_control.py): each control model continues the previous one
(M1 first) by SFT on M1's persisted rows for as many steps as that iteration's step DPO took, with
another data seed per iteration. The trainer is replaced here; the e2e micro run trains it for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from rprm_ray import batches
from rprm_ray.config import Recipe
from rprm_ray.loop import Run, StageError, StageResult
from rprm_ray.stages import sft_control


def _run(tmp_path, keep_rows: bool = True) -> Run:
    recipe = Recipe.model_validate({"name": "control", "run_root": str(tmp_path / "runs"),
                                    "loop": {"mode": "psrlm", "sft_control": True}})
    run = Run.open(recipe)
    rows = batches.from_rows([{"example_id": f"policy/p{i}", "kind": "policy", "prompt": f"Q:{i}+1\n",
                               "completion": f"{i}+1={i + 1}\n"} for i in range(4)], "sft_examples")
    tables = {"sft_examples": (rows, "sft_examples")} if keep_rows else {}
    run.stage("iter_0/policy_sft", lambda: StageResult(tables=tables, state={"m1_dir": str(tmp_path / "m1"),
                                                                             "policy_dir": str(tmp_path / "m1")}))
    return run


def test_each_control_continues_the_last_for_the_step_dpos_steps(tmp_path, monkeypatch):
    run = _run(tmp_path)
    calls = []

    def fake_sft(run_, init, table, steps, out_dir, name, trainer_cfg):
        calls.append((Path(init).name, steps, trainer_cfg.seed, trainer_cfg.lr, table.num_rows, name))
        return {"steps": float(steps), "loss_last": 0.1}

    monkeypatch.setattr(sft_control, "train_sft", fake_sft)
    for k, dpo_steps in ((1, 3), (2, 7)):
        run.stage(f"iter_{k}/step_dpo", lambda s=dpo_steps: StageResult(metrics={"steps": float(s)}))
        metrics = run.stage(f"iter_{k}/sft_control", lambda k=k: sft_control.sft_control_stage(run, k))
        assert metrics["steps"] == dpo_steps
    lr = run.recipe.trainer.dpo_lr  # the step DPO's peak rate (loop.step_dpo_lr null here), not the SFT's
    assert lr != run.recipe.trainer.lr
    assert calls == [("m1", 3, 1, lr, 4, "sft-control-1"), ("model", 7, 2, lr, 4, "sft-control-2")]
    assert run.state["sft_control_dir"] == str(run.model_dir("iter_2/sft_control"))


def test_a_run_whose_m1_kept_no_rows_is_told_how_to_get_them(tmp_path):
    run = _run(tmp_path, keep_rows=False)
    run.stage("iter_1/step_dpo", lambda: StageResult(metrics={"steps": 2.0}))
    run.current_stage = "iter_1/sft_control"
    with pytest.raises(StageError, match=r"--rerun iter_0/policy_sft"):
        sft_control.sft_control_stage(run, 1)


def test_the_control_is_refused_where_no_policy_iterates():
    with pytest.raises(ValueError, match="loop.sft_control"):
        Recipe.model_validate({"loop": {"mode": "rprm", "sft_control": True}})
