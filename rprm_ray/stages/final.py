"""Final evaluation: PRM-guided Best-of-N (every aggregation, weighted, majority) and step-level
beam search at the same number of generated candidate steps, on held-out problems."""

from __future__ import annotations

from rprm_ray.evaluation.bon import BonProblem, evaluate_best_of_n
from rprm_ray.loop import Run, StageResult
from rprm_ray.search.best_of_n import score_solutions, solution_id
from rprm_ray.stages.policy import eval_problems, grade_solutions, solution_sampling

AGGREGATIONS = ("min", "last", "prod", "mean")


def best_of_n_stage(run: Run) -> StageResult:
    """N samples per problem are drawn and judged once; every (N, aggregation) point of the curve
    is read from that one draw (prefixes of the sample list), as search-and-learn reports it."""
    r = run.recipe
    problems = eval_problems(run)
    n_max = max(r.evaluation.bon_samples_per_prompt)
    generator = run.roles.generator(run.state["policy_dir"])
    judge = run.roles.judge(run.state["judge_dir"])
    solutions = generator.generate(problems, n=n_max, sampling=solution_sampling(run, r.search.sampling.temperature, 7))
    solutions = grade_solutions(run, solutions, problems)
    scores = score_solutions(solutions, judge)
    by_problem: dict[str, list[dict]] = {}
    for sol in sorted(solutions.to_pylist(), key=lambda s: (s["problem_id"], s["sample_idx"])):
        by_problem.setdefault(sol["problem_id"], []).append(sol)
    bon_problems = [
        BonProblem(id=pid, step_scores=[scores[solution_id(pid, s["sample_idx"])] for s in sols],
                   correct=[bool(s["correct"]) for s in sols], answers=[s["answer"] for s in sols])
        for pid, sols in by_problem.items()
    ]
    ns = sorted(set(r.evaluation.bon_samples_per_prompt))
    metrics: dict = {"ns": ns, "problems": len(by_problem),
                     "candidate_steps": sum(len(s["steps"]) for s in solutions.to_pylist()),
                     # Steps generated for the first n samples of each problem: the budget that
                     # Best-of-n spends, read against beam search's at equal cost.
                     "candidate_steps_at_n": {str(n): sum(len(s["steps"]) for sols in by_problem.values()
                                                          for s in sols[:n]) for n in ns}}
    for how in AGGREGATIONS:
        res = evaluate_best_of_n(bon_problems, how, ns)
        metrics[f"bon_{how}"] = {str(n): res.best_of_n[n] for n in ns}
        metrics["oracle"] = {str(n): res.oracle[n] for n in ns}
        metrics["weighted_" + how] = {str(n): res.weighted[n] for n in ns}
        metrics["majority"] = {str(n): res.majority[n] for n in ns}
    best_how = max(AGGREGATIONS, key=lambda h: metrics[f"bon_{h}"][str(n_max)])
    metrics["best_aggregation"] = best_how
    metrics[f"bon@{n_max}"] = metrics[f"bon_{best_how}"][str(n_max)]
    # The papers' Pass@1 beside Best-of-N (method_spec A11): the mean accuracy of the same
    # temperature samples, over all n_max of them (lower variance than the first sample alone).
    metrics["pass@1_samples"] = 100.0 * sum(p.correct.count(True) for p in bon_problems) / max(
        1, sum(len(p.correct) for p in bon_problems))
    return StageResult(metrics=metrics, tables={"solutions": (solutions, "solutions")})


def beam_stage(run: Run) -> StageResult:
    """Beam search with N beams and width M; its candidate-step budget is reported beside BoN's."""
    from rprm_ray.search.beam import run_beam

    r = run.recipe
    problems = eval_problems(run)
    generator = run.roles.generator(run.state["policy_dir"])
    judge = run.roles.judge(run.state["judge_dir"])
    cfg = r.search.model_copy(update={"strategy": "beam"})
    results = run_beam(problems, generator, judge, cfg, run.task.style, grade=run.task.grade)
    rows = results.to_pylist()
    correct = sum(bool(x["correct"]) for x in rows)
    return StageResult(
        metrics={"beam_accuracy": 100.0 * correct / max(1, len(rows)), "problems": len(rows),
                 "candidate_steps": sum(x["candidate_steps"] for x in rows),
                 "beams": cfg.samples_per_prompt, "beam_width": cfg.beam_width},
        tables={"results": (results, "search_results")},
    )

