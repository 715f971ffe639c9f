"""The SFT-spend control (`loop.sft_control`): what the iterations' extra training would have
given as plain SFT, so a self-rewarding gain is credited only beyond it.

Control model C(k+1) = C(k) (C1 = M1) trained by SFT on M1's own training rows for as many
optimizer steps as iteration k's step DPO took, each step `trainer.global_batch_size` rows, at
the step DPO's peak learning rate and schedule (`loop.step_dpo_lr`, else `trainer.dpo_lr`): only
the objective differs, SFT on known-good data instead of DPO on self-judged pairs. (At the SFT's
own peak rate, 2e-3, a restart from the converged M1 measures the restart: with the tiny psrlm
recipe's earlier M1, 42 such steps took it from 86.0 to 66.25.) Each iteration draws its rows
with another seed, so the control does not replay the same rows. It reads no label and no
search: only M1's data and the step count.
"""

from __future__ import annotations

from pathlib import Path

from rprm_ray.loop import Run, StageError, StageResult
from rprm_ray.stages.policy import correct_by_problem, pass_at_1_stage, versus
from rprm_ray.stages.training_stages import train_sft

M1_SFT = "iter_0/policy_sft"


def sft_control_stage(run: Run, iteration: int) -> StageResult:
    steps = int(run.manifest.stage(f"iter_{iteration}/step_dpo")["metrics"]["steps"])
    if "sft_examples" not in run.manifest.stage(M1_SFT)["outputs"]:  # recorded before its rows persisted
        raise StageError(f"the SFT control continues M1's SFT on its training rows, which {M1_SFT} did not "
                         f"keep in this run: rerun that stage (--resume {run.dir} --rerun {M1_SFT}; the "
                         "cached M1 is reused)")
    rows = run.table(M1_SFT, "sft_examples", "sft_examples")
    init = Path(run.state.get("sft_control_dir", run.state["m1_dir"]))
    out_dir = run.model_dir(f"iter_{iteration}/sft_control")
    r = run.recipe
    trainer = r.trainer.model_copy(update={"seed": r.trainer.seed + iteration,
                                           "lr": r.loop.step_dpo_lr or r.trainer.dpo_lr})
    metrics = train_sft(run, init, rows, steps, out_dir, f"sft-control-{iteration}", trainer)
    return StageResult(metrics={**metrics, "steps": steps},
                       state={"sft_control_dir": str(out_dir)})


def sft_control_eval_stage(run: Run, iteration: int) -> StageResult:
    """The control's pass@1 (and its difference from M1's), and the iteration's model against
    it problem by problem (`policy_vs_control`: what self-rewarding adds beyond the SFT spent)."""
    result = pass_at_1_stage(run, run.state["sft_control_dir"], baseline="iter_0/policy_eval")
    policy = correct_by_problem(run.table(f"iter_{iteration}/policy_eval", "solutions", "solutions"))
    control = correct_by_problem(result.tables["solutions"][0])
    result.metrics["policy_vs_control"] = versus(policy, control, f"iter_{iteration}/sft_control_eval")
    return result
