"""psrlm's self-judge, measured after each iteration: how often the policy, prompted as pairwise
judge, names the right step of a pair of its own candidate steps (`evaluation.self_judge`).

The candidates are sampled as the search samples them (generator.sampling, w per prefix) at the
prefixes of the policy's greedy solutions of held-out problems; the world's step labeler marks
which candidate is right for this figure only, and only pairs with exactly one right step count.
The same policy weights generate and judge, as in the search (with loop.pairwise_judge
frozen_m1, M1 judges the current policy's candidates)."""

from __future__ import annotations

from rprm_ray.evaluation.self_judge import measure_self_judge
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages.policy import eval_problems, pairwise_judge_dir, solution_sampling


def measures_self_judge(run: Run) -> bool:
    """Whether a psrlm run gets the per-iteration self-judge stages."""
    return (run.recipe.loop.mode == "psrlm" and run.recipe.evaluation.self_judge_problems != 0
            and run.task.has_step_labels)


def self_judge_eval_stage(run: Run, model_dir: str) -> StageResult:
    r = run.recipe
    problems = eval_problems(run)
    if r.evaluation.self_judge_problems:
        problems = problems.slice(0, r.evaluation.self_judge_problems)
    generator = run.roles.generator(model_dir)
    judge = run.roles.judge(pairwise_judge_dir(run))  # the model that judges the search's pairs
    acc, overrules, own, judgments, counts = measure_self_judge(
        generator, judge, run.task.style, problems, run.task.step_is_right, r.generator.candidates_per_step,
        r.generator.sampling, solution_sampling(run, 0.0), read_own_step=run.task.judges_own_step)
    if acc.pairs == 0:
        run.say(f"note: no pair of the policy's own candidates had exactly one right step ({counts}); "
                "the self-judge's accuracy is not measured at this iteration")
    figures = acc.as_dict()
    metrics = {**counts, **{k: figures[k] for k in ("pairs", "judgments", "invalid")},
               "self_judge_accuracy": pct(acc.accuracy), "self_judge_accuracy_interval": figures["accuracy_interval"],
               "pair_accuracy": pct(acc.pair_accuracy), "position_consistency": pct(acc.position_consistency),
               "slot_a_rate": pct(acc.slot_a_rate),
               # Where one step is the policy's greedy one: how often naming the other is right.
               "overrules": overrules.overrules, "overrule_precision": pct(overrules.precision),
               "greedy_mistakes_caught": pct(overrules.catch_rate), "greedy_mistakes": overrules.greedy_wrong}
    if own is not None:  # the judge's own worked step against the policy's greedy step, same prefixes
        metrics.update({"own_step_accuracy": pct(own.own_accuracy), "greedy_step_accuracy": pct(own.greedy_accuracy),
                        "judged_prefixes": own.prefixes})
    return StageResult(metrics=metrics, tables={"judgments": (judgments, "pairwise_judgments")})


def pct(share: float | None) -> float | None:
    return None if share is None else 100.0 * share
