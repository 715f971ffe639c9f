"""Policy stages: bootstrap SFT (M1), held-out pass@1, and the self-rewarding iteration
(step search judged without ground truth -> (best, worst) step pairs -> step-wise DPO)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.config import SamplingConfig, SearchConfig
from rprm_ray.evaluation.stats import paired_difference
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages import data
from rprm_ray.stages.training_stages import base_model, cache_key, cached_sft, train_dpo

# The compact pairwise judgment's format (arith_teacher.teacher_pairwise), in psrlm M1's cache key: the
# judge works its own step before it is shown the candidates, then marks both.
PAIRWISE_FORMAT = "recompute-first-worked"


def policy_sft_stage(run: Run) -> StageResult:
    """M1: the policy learns the step format from reference solutions (PSRLM's IFT). In `psrlm`
    mode the same model also learns pairwise judging (EFT), since it will judge itself."""
    r = run.recipe
    train = m1_problems(run)
    table = run.task.policy_sft(train)
    run.require_rows(table, "no policy SFT examples: no training problem has a usable reference solution "
                            "(a `solution` with a \\boxed answer, or a GSM8K worked answer)"
                     + (f" beyond the {r.search_pool_problems} held back for the searches "
                        "(loop.search_pool_problems)" if r.search_pool_problems else ""))
    eft_metrics: dict = {}
    if r.loop.mode == "psrlm" and r.bootstrap.pairwise_judge_examples:
        eft = run.task.pairwise_sft(train, r.bootstrap.pairwise_judge_examples, r.task.seed)
        if eft.num_rows == 0 and r.models.teacher.kind != "programmatic":
            eft, eft_metrics = teacher_pairwise_sft(run, r.bootstrap.pairwise_judge_examples)
        run.require_rows(eft, "no pairwise judge (EFT) examples for the self-rewarding policy, which would then "
                              "judge itself untrained" + (f" ({_eft_counts(eft_metrics)})" if eft_metrics else
                              "; a dataset task needs a teacher (models.teacher.kind vllm or openai) and "
                              "labeled steps") + "; or set bootstrap.pairwise_judge_examples: 0 to accept that")
        table = batches.concat([table, eft], "sft_examples")
    # psrlm's M1 is the judge; in the other modes the judge's SFT takes these rows (judge_seed).
    worked = r.bootstrap.worked_step_examples if r.loop.mode == "psrlm" else 0
    if worked:
        table = batches.concat([table, run.task.worked_step_sft(train, worked, r.task.seed)], "sft_examples")
    key = cache_key("policy-sft", r.loop.mode, r.task.model_dump(mode="json"),
                    r.models.policy.model_dump(mode="json"), r.trainer.sft_fingerprint(),
                    r.bootstrap.policy_sft_steps, r.bootstrap.pairwise_judge_examples, r.seed,
                    # psrlm's rows hold judge prompts: their format is part of what was trained.
                    *([r.distinct_judge_prompts, PAIRWISE_FORMAT] if r.loop.mode == "psrlm" else []),
                    *([r.search_pool_problems] if r.search_pool_problems else []),
                    *([worked] if worked else []))
    out, metrics = cached_sft(run, key, base_model(run, "policy"), table, r.bootstrap.policy_sft_steps,
                              "policy-sft")
    pool = ({"problems": train.num_rows, "search_pool_problems": r.search_pool_problems}
            if r.search_pool_problems else {})
    # The rows persist for the SFT-spend control (stages/sft_control.py), which continues this SFT.
    return StageResult(metrics={**metrics, "examples": table.num_rows, **pool, **eft_metrics},
                       tables={"sft_examples": (table, "sft_examples")},
                       state={"policy_dir": str(out), "m1_dir": str(out)})


def teacher_pairwise_sft(run: Run, num_examples: int) -> tuple[pa.Table, dict]:
    """PSRLM's EFT rows for a dataset task (`rprm_ray.eft`): twice as many candidate pairs as
    the rows asked for are judged (each kept pair gives 2 rows; the filter drops some), and the
    first `num_examples` kept rows are used. An endpoint teacher's answers persist under the
    stage's `chunks/teacher_pairwise/`."""
    from rprm_ray import eft

    r = run.recipe
    teacher = r.models.teacher
    steps = run.require_rows(data.labeled_steps(run, "train"), "PSRLM's pairwise (EFT) examples on a dataset "
                             "come from labeled steps judged by the teacher: set "
                             "task.dataset.train_labeled_solutions (e.g. PRM800K via `rprm-ray data prm800k`)")
    pairs = eft.candidate_pairs(steps, num_examples, r.task.seed)
    max_tokens = r.judge.sampling.max_new_tokens
    stats: dict = {}
    if teacher.kind == "openai":
        from rprm_ray.teacher_client import TeacherClient

        client = TeacherClient(teacher, max_tokens, extra_body=teacher.pairwise_extra_body)
        store = run.shards("teacher_pairwise", "teacher_responses")

        def judge(prompts: list[str]) -> list[str]:
            try:
                return [texts[0] if texts else "" for texts in client.generate(prompts, 1, store)]
            finally:
                stats.update({f"eft_teacher_{k}": v for k, v in client.stats.items()})
    else:
        from rprm_ray.engines import make_engine
        from rprm_ray.hub import resolve_model

        engine = make_engine(resolve_model(teacher.model, revision=teacher.revision, cache=r.models.hub_cache,
                                           where="models.teacher.model"), "vllm", r.judge)
        sampling = SamplingConfig(temperature=teacher.temperature, top_p=0.95, max_new_tokens=max_tokens,
                                  seed=r.seed)

        def judge(prompts: list[str]) -> list[str]:
            return [c[0].text for c in engine.generate(prompts, 1, sampling)]

    from rprm_ray.stages.judge import teacher_style

    # The teacher reads its own rendering; the rows the policy learns from are in the policy's.
    table, counts = eft.judged_examples(pairs, teacher_style(run), judge, student_style=run.task.style)
    return table.slice(0, num_examples), {**counts, **stats, "eft_examples": min(table.num_rows, num_examples)}


def _eft_counts(metrics: dict) -> str:
    return ", ".join(f"{k} {metrics[k]}" for k in ("eft_pairs", "eft_unparsable", "eft_inconsistent",
                                                    "eft_against_label") if k in metrics)


def solution_sampling(run: Run, temperature: float, seed_offset: int = 0) -> SamplingConfig:
    """Full solutions: room for every step of the longest allowed solution."""
    g = run.recipe.generator
    budget = min(g.sampling.max_new_tokens * run.recipe.loop.max_steps_per_solution, g.max_model_len_tokens // 2)
    return SamplingConfig(temperature=temperature, top_p=1.0 if temperature == 0 else g.sampling.top_p,
                          max_new_tokens=budget, seed=run.recipe.seed + seed_offset)


def eval_problems(run: Run) -> pa.Table:
    table = data.problems(run, "eval")
    limit = run.recipe.evaluation.eval_problems
    return table.slice(0, limit) if limit else table


def grade_solutions(run: Run, solutions: pa.Table, problems: pa.Table) -> pa.Table:
    """Fill `correct` against the reference answers (evaluation only; never inside iterations)."""
    reference = {r["problem_id"]: r["answer"] for r in problems.to_pylist()}
    rows = solutions.to_pylist()
    for row in rows:
        row["correct"] = run.task.grade(row["question"], reference[row["problem_id"]], row["answer"])
    return batches.from_rows(rows, "solutions")


def pass_at_1_stage(run: Run, model_dir: str, baseline: str | None = None) -> StageResult:
    """Greedy pass@1 on held-out problems (the PSRLM papers' main metric). With `baseline` (an
    earlier pass@1 stage, e.g. M1's), also the difference from it problem by problem, with its
    bootstrap interval (`vs_baseline`)."""
    problems = eval_problems(run)
    generator = run.roles.generator(model_dir)
    sampling = solution_sampling(run, 0.0)
    solutions = run.map_chunks(
        "solutions", problems, run.recipe.generator.problems_per_chunk,
        lambda chunk: {"solutions": grade_solutions(run, generator.generate(chunk, n=1, sampling=sampling), chunk)},
        {"solutions": "solutions"})["solutions"]
    correct = correct_by_problem(solutions)
    metrics: dict = {"pass@1": 100.0 * sum(correct.values()) / max(1, problems.num_rows),
                     "problems": problems.num_rows}
    if baseline is not None:
        metrics["vs_baseline"] = versus(correct, correct_by_problem(run.table(baseline, "solutions", "solutions")),
                                        baseline)
    return StageResult(metrics=metrics, tables={"solutions": (solutions, "solutions")})


def versus(correct: dict[str, bool], before: dict[str, bool], baseline: str) -> dict:
    """Pass@1 of `correct` minus that of `before` ({problem_id: correct} of the pass@1 stage
    `baseline`), problem by problem over the problems both attempted, with its paired bootstrap
    interval."""
    shared = [pid for pid in correct if pid in before]
    return {**paired_difference([correct[p] for p in shared], [before[p] for p in shared]).as_dict(),
            "baseline": baseline}


def correct_by_problem(solutions: pa.Table) -> dict[str, bool]:
    """{problem_id: correct} of a graded table with one row per problem (`solutions` or search results)."""
    return {pid: bool(c) for pid, c in zip(solutions.column("problem_id").to_pylist(),
                                           solutions.column("correct").to_pylist(), strict=True)}


def iteration_problem_ids(run: Run) -> list[str]:
    """Every training problem some self-rewarding iteration searches, in iteration order (none in
    `rprm` mode, which runs no iterations)."""
    ids: list[str] = []
    if run.recipe.loop.mode == "rprm":
        return ids
    for iteration in range(1, run.recipe.loop.iterations + 1):
        ids.extend(iteration_problems(run, iteration).column("problem_id").to_pylist())
    return list(dict.fromkeys(ids))


def search_pool(run: Run) -> pa.Table:
    """The training problems the iterations search: the first loop.search_pool_problems (resolved)
    of the train split, or all of it when none are held back."""
    train = data.problems(run, "train")
    pool = run.recipe.search_pool_problems
    return train.slice(0, pool) if pool else train


def m1_problems(run: Run) -> pa.Table:
    """The training problems whose reference solutions (and pairwise judgments) M1 learns from:
    the train split less the search pool, when one is held back."""
    train = data.problems(run, "train")
    pool = run.recipe.search_pool_problems
    return train.slice(pool) if pool else train


def iteration_problems(run: Run, iteration: int) -> pa.Table:
    """A fresh slice of the search pool per iteration, `loop.problems_in_iteration` problems long
    (cycling when the pool runs out); answers are never read by the search."""
    loop = run.recipe.loop
    train = search_pool(run)
    n = loop.problems_in_iteration(iteration)
    start = loop.problems_searched_before(iteration) % max(1, train.num_rows - n + 1)
    table = train.slice(start, n)
    # Hide the reference answers: self-rewarding uses no ground-truth labels.
    return table.set_column(table.column_names.index("answer"), "answer",
                            pa.array([None] * table.num_rows, pa.string()))


def search_config(run: Run) -> SearchConfig:
    r = run.recipe
    return SearchConfig(strategy="greedy" if r.loop.mode == "guided" else "self_judged",
                        candidates_per_step=r.generator.candidates_per_step, max_depth=r.loop.max_steps_per_solution,
                        aggregation=r.search.aggregation, filter_duplicates=True, batch_prompts=r.search.batch_prompts,
                        concurrent_chunks=r.search.concurrent_chunks,
                        sampling=r.generator.sampling)


def self_reward_search_stage(run: Run, iteration: int) -> StageResult:
    """Step-by-step search with w candidates per step, judged by the R-PRM judge (guided) or by the
    policy itself pairwise (psrlm); (best, worst) per step become step-DPO pairs; ties roll back."""
    r = run.recipe
    problems = iteration_problems(run, iteration)
    policy_dir = run.state["policy_dir"]
    generator = run.roles.generator(policy_dir)
    style = run.task.style
    cfg = search_config(run)
    trace: list[dict] = []  # every judged candidate per level, for the report
    # Each finished chunk of batch_prompts problems persists under the stage's chunks/search/.
    if r.loop.mode == "guided":
        from rprm_ray.search.greedy import greedy_search

        results, step_pairs = greedy_search(problems, generator, run.roles.judge(run.state["judge_dir"]), cfg,
                                            style, rollback_on_tie=r.loop.rollback_on_tie,
                                            min_pair_margin=r.loop.step_pair_min_margin, trace=trace,
                                            chunk_map=run.chunk_map("search"))
    else:
        from rprm_ray.search.self_judged import self_judged_search

        judge = run.roles.judge(pairwise_judge_dir(run))
        results, step_pairs = self_judged_search(problems, generator, judge, cfg, style,
                                                 rollback_on_tie=r.loop.rollback_on_tie, trace=trace,
                                                 chunk_map=run.chunk_map("search"))
    finished = sum(bool(f) for f in results.column("finished").to_pylist())
    trace.sort(key=lambda t: (t["problem_id"], t["level"], t["candidate_id"]))  # by problem, for the report
    return StageResult(
        metrics={"problems": problems.num_rows, "finished": finished, "pairs": step_pairs.num_rows,
                 "rollbacks": sum(results.column("rollbacks").to_pylist()),
                 "judge_calls": sum(results.column("judge_calls").to_pylist())},
        tables={"search_results": (results, "search_results"), "pairs": (step_pairs, "preference_pairs"),
                "search_trace": (batches.from_rows(trace, "search_trace"), "search_trace")},
    )


def pairwise_judge_dir(run: Run) -> str:
    """psrlm's pairwise judge: the current policy (loop.pairwise_judge self), or M1 (frozen_m1)."""
    return run.state["m1_dir" if run.recipe.loop.pairwise_judge == "frozen_m1" else "policy_dir"]


def step_dpo_stage(run: Run, iteration: int) -> StageResult:
    key = f"iter_{iteration}"
    pairs = run.require_rows(
        run.table(f"{key}/search", "pairs", "preference_pairs"),
        f"no step pairs to train on: the search of {key}/search found no prefix whose candidates its judge "
        "ranked with a clear best and worst (see that stage's metrics); search more problems "
        "(loop.problems_per_iteration) or more candidates per step")
    out_dir = run.model_dir(f"{key}/step_dpo")
    loop = run.recipe.loop
    trainer = (run.recipe.trainer if loop.step_dpo_nll_coef is None
               else run.recipe.trainer.model_copy(update={"dpo_nll_coef": loop.step_dpo_nll_coef}))
    metrics, with_ref = train_dpo(run, Path(run.state["policy_dir"]), pairs, out_dir, f"step-dpo-{iteration}",
                                  lr=loop.step_dpo_lr, trainer_cfg=trainer)
    return StageResult(metrics={**metrics, "pairs": pairs.num_rows},
                       tables={"pairs_with_reference": (with_ref, "preference_pairs")},
                       state={"policy_dir": str(out_dir)})
