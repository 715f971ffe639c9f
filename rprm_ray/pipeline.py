"""Which stages a recipe's mode runs, in order. Each line is one resumable stage.

- rprm:    R-PRM judge training only (teacher seed -> SFT -> own critiques -> DPO), F1 per phase.
- guided:  the design card's shape: the R-PRM judge above (its F1 also on M1's own sampled
           mistakes, arith), then self-rewarding iterations in which the judge scores the policy's
           candidate steps and the policy learns by step-wise DPO.
- psrlm:   one model is policy and pairwise judge (M1 = SFT on solutions + pairwise judgments);
           each iteration it searches, judges itself, and learns from its (best, worst) steps;
           after each, its pairwise accuracy on its own held-out candidates (arith).

With loop.sft_control, each iteration of either policy mode also trains and scores its SFT-spend
control (stages/sft_control.py).
"""

from __future__ import annotations

from rprm_ray.loop import Run
from rprm_ray.stages import final, judge, own_mistakes, policy, sft_control
from rprm_ray.stages.data import DATA, data_stage
from rprm_ray.stages.self_judge import measures_self_judge, self_judge_eval_stage


def run_pipeline(run: Run) -> None:
    r = run.recipe
    mode = r.loop.mode
    run.stage(DATA, lambda: data_stage(run))
    if mode in ("guided", "psrlm"):
        run.stage("iter_0/policy_sft", lambda: policy.policy_sft_stage(run))
        run.stage("iter_0/policy_eval", lambda: policy.pass_at_1_stage(run, run.state["policy_dir"]))
    if own_mistakes.measures_own_mistakes(run):  # the judge's F1 on M1's own mistakes, beside injected ones
        run.stage(own_mistakes.STAGE, lambda: own_mistakes.own_solutions_stage(run))
    self_judge = measures_self_judge(run)
    if self_judge:
        run.stage("iter_0/self_judge_eval", lambda: self_judge_eval_stage(run, run.state["policy_dir"]))
    if mode in ("guided", "rprm"):
        run.stage("iter_0/judge_seed", lambda: judge.judge_seed_stage(run))
        run.stage("iter_0/judge_sft", lambda: judge.judge_sft_stage(run))
        # The K curve (inference-time scaling) is drawn for the final judge only: it costs
        # max(K) sampled critiques per held-out step.
        run.stage("iter_0/judge_eval_sft",
                  lambda: judge.judge_f1_stage(run, run.state["judge_sft_dir"], "sft", k_curve=False))
        run.stage("iter_0/judge_samples", lambda: judge.judge_samples_stage(run))
        run.stage("iter_0/judge_dpo", lambda: judge.judge_dpo_stage(run))
        run.stage("iter_0/judge_eval_dpo", lambda: judge.judge_f1_stage(run, run.state["judge_dir"], "dpo"))
    if mode in ("guided", "psrlm"):
        for k in range(1, r.loop.iterations + 1):
            run.stage(f"iter_{k}/search", lambda k=k: policy.self_reward_search_stage(run, k))
            run.stage(f"iter_{k}/step_dpo", lambda k=k: policy.step_dpo_stage(run, k))
            run.stage(f"iter_{k}/policy_eval",
                      lambda: policy.pass_at_1_stage(run, run.state["policy_dir"], baseline="iter_0/policy_eval"))
            if self_judge:
                run.stage(f"iter_{k}/self_judge_eval", lambda: self_judge_eval_stage(run, run.state["policy_dir"]))
            if r.loop.sft_control:  # the same training spent on plain SFT of M1
                run.stage(f"iter_{k}/sft_control", lambda k=k: sft_control.sft_control_stage(run, k))
                run.stage(f"iter_{k}/sft_control_eval", lambda k=k: sft_control.sft_control_eval_stage(run, k))
    if mode == "guided":
        run.stage("final/best_of_n", lambda: final.best_of_n_stage(run))
        run.stage("final/beam", lambda: final.beam_stage(run))

