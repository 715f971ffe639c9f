"""Final evaluation: PRM-guided Best-of-N (every aggregation, weighted, majority) and step-level
beam search at the same number of generated candidate steps, on held-out problems."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.evaluation.bon import (
    BonProblem,
    best_pick_correct,
    cross_fitted_aggregations,
    evaluate_best_of_n,
    smallest_n_within_budget,
)
from rprm_ray.evaluation.stats import paired_difference
from rprm_ray.loop import Run, RunError, StageResult
from rprm_ray.search.best_of_n import judge_solution_steps, scores_by_solution, solution_id
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
    sampling = solution_sampling(run, r.search.sampling.temperature, 7)

    def sample_and_judge(chunk: pa.Table) -> dict[str, pa.Table]:
        solutions = grade_solutions(run, generator.generate(chunk, n=n_max, sampling=sampling), chunk)
        return {"solutions": solutions, "step_scores": judge_solution_steps(solutions, judge)}

    out = run.map_chunks("samples", problems, r.generator.problems_per_chunk, sample_and_judge,
                         {"solutions": "solutions", "step_scores": "step_scores"})
    solutions, step_scores = out["solutions"], out["step_scores"]
    bon_problems = best_of_n_problems(solutions, step_scores)
    ns = sorted(set(r.evaluation.bon_samples_per_prompt))
    metrics: dict = {"ns": ns, "problems": len(bon_problems),
                     "candidate_steps": sum(len(s) for s in solutions.column("steps").to_pylist()),
                     # Steps generated for the first n samples of each problem: the budget that
                     # Best-of-n spends, read against beam search's at equal cost (one score per step).
                     "candidate_steps_at_n": {str(n): sum(len(s) for p in bon_problems for s in p.step_scores[:n])
                                              for n in ns}}
    for how in AGGREGATIONS:
        res = evaluate_best_of_n(bon_problems, how, ns)
        metrics[f"bon_{how}"] = {str(n): res.best_of_n[n] for n in ns}
        metrics["oracle"] = {str(n): res.oracle[n] for n in ns}
        metrics["weighted_" + how] = {str(n): res.weighted[n] for n in ns}
        metrics["majority"] = {str(n): res.majority[n] for n in ns}
    # Which aggregation scores best here is reported, but the figure the targets read is chosen
    # on the other half of the problems (evaluation/bon.cross_fitted_aggregations).
    metrics["best_aggregation"] = max(AGGREGATIONS, key=lambda h: metrics[f"bon_{h}"][str(n_max)])
    picks, by_half = cross_fitted_aggregations(bon_problems, AGGREGATIONS, n_max)
    metrics["aggregation_by_half"] = list(by_half)
    metrics["bon_validated"] = {str(n): 100.0 * sum(best_pick_correct(p, how, n) for p, how in
                                                    zip(bon_problems, picks, strict=True)) / max(1, len(bon_problems))
                                for n in ns}
    metrics[f"bon@{n_max}"] = metrics["bon_validated"][str(n_max)]
    # The papers' Pass@1 beside Best-of-N (method_spec A11): the mean accuracy of the same
    # temperature samples, over all n_max of them (lower variance than the first sample alone).
    metrics["pass@1_samples"] = 100.0 * sum(p.correct.count(True) for p in bon_problems) / max(
        1, sum(len(p.correct) for p in bon_problems))
    metrics["bon_vs_pass@1_samples"] = paired_difference(
        [best_pick_correct(p, how, n_max) for p, how in zip(bon_problems, picks, strict=True)],
        [p.correct.count(True) / len(p.correct) for p in bon_problems]).as_dict()
    return StageResult(metrics=metrics, tables={"solutions": (solutions, "solutions"),
                                                "step_scores": (step_scores, "step_scores")})


def best_of_n_problems(solutions: pa.Table, step_scores: pa.Table) -> list[BonProblem]:
    """Scored candidates per problem, in sample order (graded `solutions` + the judge's scores)."""
    scores = scores_by_solution(solutions, step_scores)
    by_problem: dict[str, list[dict]] = {}
    for sol in sorted(solutions.to_pylist(), key=lambda s: (s["problem_id"], s["sample_idx"])):
        by_problem.setdefault(sol["problem_id"], []).append(sol)
    return [
        BonProblem(id=pid, step_scores=[scores[solution_id(pid, s["sample_idx"])] for s in sols],
                   correct=[bool(s["correct"]) for s in sols], answers=[s["answer"] for s in sols])
        for pid, sols in by_problem.items()
    ]


def beam_stage(run: Run) -> StageResult:
    """Beam search with N beams and width M; its candidate-step budget is reported beside BoN's."""
    from rprm_ray.search.beam import run_beam

    r = run.recipe
    problems = eval_problems(run)
    generator = run.roles.generator(run.state["policy_dir"])
    judge = run.roles.judge(run.state["judge_dir"])
    cfg = r.search.model_copy(update={"strategy": "beam"})
    results = run_beam(problems, generator, judge, cfg, run.task.style, grade=run.task.grade,
                       chunk_map=run.chunk_map("beam"))
    rows = results.to_pylist()
    correct = sum(bool(x["correct"]) for x in rows)
    metrics = {"beam_accuracy": 100.0 * correct / max(1, len(rows)), "problems": len(rows),
               "candidate_steps": sum(x["candidate_steps"] for x in rows),
               "beams": cfg.samples_per_prompt, "beam_width": cfg.beam_width}
    vs_bon = beam_vs_best_of_n(run, {x["problem_id"]: bool(x["correct"]) for x in rows}, metrics["candidate_steps"])
    if vs_bon is not None:
        metrics["beam_vs_bon"] = vs_bon
    return StageResult(metrics=metrics, tables={"results": (results, "search_results")})


def beam_vs_best_of_n(run: Run, beam_correct: dict[str, bool], beam_steps: int) -> dict | None:
    """Beam minus Best-of-n (its cross-fitted aggregation) at the smallest n spending beam's step budget, problem
    by problem, with its bootstrap interval; None when Best-of-N never spent as much or its scores
    were not kept (a run started before they were)."""
    bon = run.manifest.stage("final/best_of_n")["metrics"]
    n = smallest_n_within_budget({int(k): v for k, v in bon["candidate_steps_at_n"].items()}, beam_steps)
    if n is None:
        return None
    try:
        problems = best_of_n_problems(run.table("final/best_of_n", "solutions", "solutions"),
                                      run.table("final/best_of_n", "step_scores", "step_scores"))
    except RunError:
        return None
    if "aggregation_by_half" in bon:  # the aggregation each problem's Best-of-N used
        picks, _ = cross_fitted_aggregations(problems, AGGREGATIONS, max(bon["ns"]))
    else:  # a run recorded before the choice was cross-fitted
        picks = [bon["best_aggregation"]] * len(problems)
    kept = [(p, how) for p, how in zip(problems, picks, strict=True) if p.id in beam_correct]
    diff = paired_difference([beam_correct[p.id] for p, _ in kept],
                             [best_pick_correct(p, how, n) for p, how in kept])
    return {**diff.as_dict(), "n": n}

