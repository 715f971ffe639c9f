"""R-PRM judge stages: teacher seed critiques -> SFT -> self-sampled critique pairs -> DPO, with
ProcessBench-style first-error F1 on held-out labeled solutions after each phase (method_spec A3-A7)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from rprm_ray import batches, pairs, teachers, tiny, waits
from rprm_ray.chat import role_style
from rprm_ray.config import Recipe, SamplingConfig, TrainerConfig
from rprm_ray.evaluation.processbench import harmonic_f1, predicted_first_error
from rprm_ray.judging import step_score_rows
from rprm_ray.loop import Run, StageResult
from rprm_ray.prompts import get_style
from rprm_ray.stages import data
from rprm_ray.stages.policy import iteration_problem_ids
from rprm_ray.stages.training_stages import base_model, cache_key, cached_sft, train_dpo

# ---- seed data ----------------------------------------------------------------------------


def teacher_style(run: Run):
    """How the teacher is prompted: a local (vllm) teacher through its own tokenizer's chat
    template; an endpoint gets the plain prompt (a chat endpoint applies the server's template)."""
    from rprm_ray.chat import load_chat_template, style_with_chat
    from rprm_ray.hub import resolve_model

    teacher = run.recipe.models.teacher
    if teacher.kind != "vllm":
        return get_style(run.recipe.models.prompt_style)
    model_dir = resolve_model(teacher.model, revision=teacher.revision, cache=run.recipe.models.hub_cache,
                              where="models.teacher.model")
    return style_with_chat(run.recipe.models.prompt_style, load_chat_template("auto", model_dir, "models.teacher"))


def with_judge_prompts(critiques: pa.Table, steps: pa.Table, style) -> pa.Table:
    """The critiques' `prompt` as the judge reads it (its chat template, not the teacher's): the
    judge's SFT rows are then byte for byte the prompts its engine is sent when it judges."""
    by_step = {(r["solution_id"], r["step_idx"]): r for r in steps.to_pylist()}
    prompts = []
    for sid, idx in zip(critiques.column("solution_id").to_pylist(), critiques.column("step_idx").to_pylist(),
                        strict=True):
        r = by_step[(sid, idx)]
        prompts.append(style.judge_prompt(r["question"], list(r["previous_steps"]), r["now_step"]))
    return critiques.set_column(critiques.column_names.index("prompt"), "prompt", pa.array(prompts, pa.string()))


def teacher_critiques(run: Run, steps: pa.Table, stats: dict | None = None) -> pa.Table:
    """The seed critiques; an endpoint teacher's answers persist under the stage's
    `chunks/teacher/` as they arrive (a resumed stage pays only for the missing ones), and its
    request counts go into `stats`."""
    teacher = run.recipe.models.teacher
    style = teacher_style(run) if teacher.kind != "programmatic" else run.task.style
    k = teacher.critiques_per_step
    if teacher.kind == "programmatic":
        return teachers.programmatic_critiques(steps, run.task, k)
    sampling = SamplingConfig(temperature=teacher.temperature, top_p=0.95,
                              max_new_tokens=run.recipe.judge.sampling.max_new_tokens, seed=run.recipe.seed)
    if teacher.kind == "openai":
        client = teachers.TeacherClient(teacher, sampling.max_new_tokens)
        try:
            return teachers.openai_critiques(steps, style, teacher, k, sampling.max_new_tokens,
                                             store=run.shards("teacher", "teacher_responses"), client=client)
        finally:
            if stats is not None:
                stats.update({f"teacher_{name}": v for name, v in client.stats.items()})
    from rprm_ray.engines import make_engine
    from rprm_ray.hub import resolve_model

    engine = make_engine(resolve_model(teacher.model, revision=teacher.revision, cache=run.recipe.models.hub_cache,
                                       where="models.teacher.model"), "vllm", run.recipe.judge)
    return teachers.engine_critiques(steps, style, engine, k, sampling, store=run.shards("teacher", "critiques"),
                                     chunk_rows=teacher.requests_per_shard)


def _question_key(question: str) -> str:
    return " ".join(question.split())


def _labeled_groups(run: Run) -> dict[str, list[str]]:
    """Labeled training problems grouped by question (file order): question -> problem_ids. A
    ProcessBench-format file (PRM800K converted) gives each solution its own id, and many
    solutions share a question."""
    steps = data.labeled_steps(run, "train")
    groups: dict[str, list[str]] = {}
    for pid, q in dict.fromkeys(zip(steps.column("problem_id").to_pylist(),
                                    steps.column("question").to_pylist(), strict=True)):
        groups.setdefault(_question_key(q), []).append(pid)
    return groups


def _shares_problem_ids(run: Run) -> bool:
    """Whether labeled steps carry the training problems' ids (the embedded world) rather than
    ids of their own (real data: PRM800K solutions beside NuminaMath problems)."""
    train = set(data.problems(run, "train").column("problem_id").to_pylist())
    return any(pid in train for pid in data.labeled_steps(run, "train").column("problem_id").to_pylist())


def _searched_questions(run: Run) -> set[str]:
    searched = set(iteration_problem_ids(run))
    train = data.problems(run, "train")
    return {_question_key(q) for pid, q in zip(train.column("problem_id").to_pylist(),
                                               train.column("question").to_pylist(), strict=True)
            if pid in searched}


def judge_dpo_problem_ids(run: Run) -> list[str]:
    """The labeled problems the judge's DPO samples come from, kept out of its SFT data: the
    `bootstrap.judge_dpo_problems` (null: `loop.problems_per_iteration`) training problems after
    those the iterations search. Where the labeled steps carry ids of their own (real data), the
    same number of labeled questions whose question no iteration searches, with every solution of
    each.

    On steps it was fine-tuned on, the judge repeats its (correct) training critiques even at
    temperature 1 (measured: 6 critique pairs from 2,048 steps x 4 samples); on unseen problems it
    disagrees with the label where its own computation fails (402 pairs from 1,766 steps, 12 after
    the 1:1 Yes/No balance)."""
    n = run.recipe.bootstrap.judge_dpo_problems or run.recipe.loop.problems_per_iteration
    if _shares_problem_ids(run):
        searched = set(iteration_problem_ids(run))
        rest = [p for p in data.problems(run, "train").column("problem_id").to_pylist() if p not in searched]
        return rest[:n]
    searched_q = _searched_questions(run)
    groups = [ids for q, ids in _labeled_groups(run).items() if q not in searched_q]
    # At most half the labeled questions, so the SFT keeps data on a small labeled set.
    groups = groups[: min(n, len(_labeled_groups(run)) // 2)]
    return [pid for ids in groups for pid in ids]


def judge_sft_held_out_ids(run: Run) -> set[str]:
    """Problems whose labeled steps the SFT judge never sees: those the self-rewarding iterations
    search and those its DPO samples come from. A judge trained on the searched problems' reference
    and labeled steps would bring their ground truth into the search, which must use none. At most
    half of a small training set. Where labeled steps carry ids of their own, a labeled solution
    is searched when its question is."""
    if _shares_problem_ids(run):
        train = data.problems(run, "train")
        ordered = list(dict.fromkeys(iteration_problem_ids(run) + judge_dpo_problem_ids(run)))
        return set(ordered[: train.num_rows // 2])
    searched_q = _searched_questions(run)
    groups = _labeled_groups(run)
    searched = [ids for q, ids in groups.items() if q in searched_q]
    kept_searched = [pid for ids in searched[: len(groups) // 2] for pid in ids]
    return set(kept_searched) | set(judge_dpo_problem_ids(run))


def judge_dpo_steps(run: Run) -> pa.Table:
    steps = data.labeled_steps(run, "train")
    return steps.filter(pc.is_in(steps.column("problem_id"), pa.array(judge_dpo_problem_ids(run), pa.string())))


def _without_problems(table: pa.Table, problem_ids: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("problem_id"), problem_ids)))


def judge_seed_stage(run: Run) -> StageResult:
    """Teacher critiques for labeled training steps, filtered to those agreeing with the label,
    balanced Yes/No 1:1 (A3); optionally mixed with policy data (the papers' judges start from a
    math-capable model; the tiny one learns both at once). The problems of
    `judge_sft_held_out_ids` are left out."""
    steps = data.labeled_steps(run, "train")
    held_out = pa.array(sorted(judge_sft_held_out_ids(run)), pa.string())
    steps = _without_problems(steps, held_out)
    run.require_rows(steps, "no labeled training steps for the teacher to critique (set "
                            "task.dataset.train_labeled_solutions to a ProcessBench-format file)")
    stats: dict = {}
    style = role_style(run.recipe, "judge")
    critiques = with_judge_prompts(teacher_critiques(run, steps, stats), steps, style)
    seed_sft = pairs.sft_filter(critiques, seed=run.recipe.pairs.seed, balance=True)
    run.require_rows(seed_sft, f"none of the {critiques.num_rows} teacher critiques has a verdict that agrees "
                               "with its step's label, so the judge's SFT would train on nothing")
    table = seed_sft
    if run.recipe.bootstrap.judge_mix_policy_data:
        table = batches.concat([seed_sft, run.task.policy_sft(data.problems(run, "train"))], "sft_examples")
    worked = run.recipe.bootstrap.worked_step_examples if run.recipe.loop.mode != "psrlm" else 0
    if worked:
        # The judge's first line alone, on the problems its critiques come from.
        problems = _without_problems(data.problems(run, "train"), held_out)
        table = batches.concat([table, run.task.worked_step_sft(problems, worked, run.recipe.task.seed, style)],
                               "sft_examples")
    valid = int(pc.sum(critiques.column("valid")).as_py() or 0)
    return StageResult(
        metrics={"teacher_critiques": critiques.num_rows, "teacher_valid": valid,
                 "judge_sft_examples": seed_sft.num_rows, "worked_step_examples": worked,
                 "mixed_examples": table.num_rows, **stats},
        tables={"teacher_critiques": (critiques, "critiques"), "judge_sft": (table, "sft_examples")},
    )


def judge_sft_trainer(recipe: Recipe) -> TrainerConfig:
    """The recipe's trainer, packing as `bootstrap.judge_pack_sequences` says (null: as the trainer)."""
    pack = recipe.bootstrap.judge_pack_sequences
    return recipe.trainer if pack is None else recipe.trainer.model_copy(update={"pack_sequences": pack})


def judge_init(run: Run) -> Path:
    """The judge's SFT starts from the trained policy (M1) when there is one, else from its base;
    a tiny policy's weights get the judge's verdict-prefix token first (tiny.py)."""
    if "policy_dir" not in run.state:
        return base_model(run, "judge")
    policy_dir = Path(run.state["policy_dir"])
    if not run.recipe.models.policy.is_tiny:
        return policy_dir
    return tiny.with_verdict_token(policy_dir, run.recipe.model_cache)


JUDGE_DPO_FIELDS = {"judge_dpo_problems", "judge_dpo_solutions", "judge_dpo_temperature"}


def judge_sft_stage(run: Run) -> StageResult:
    r = run.recipe
    table = run.table("iter_0/judge_seed", "judge_sft", "sft_examples")
    init = judge_init(run)
    trainer = judge_sft_trainer(r)
    # The teacher's url is where it answered, not what it is (a launched teacher on port 0 gets a
    # new port every run); its answers are in the table's fingerprint anyway.
    # The DPO's settings are not the SFT's (which problems it keeps out is in the data's fingerprint).
    key = cache_key("judge-sft", r.task.model_dump(mode="json"), r.models.judge.model_dump(mode="json"),
                    r.models.teacher.model_dump(mode="json", exclude={"url"}), trainer.sft_fingerprint(),
                    r.bootstrap.model_dump(mode="json", exclude=JUDGE_DPO_FIELDS), r.pairs.seed, str(init), r.seed,
                    *(["J:"] if r.distinct_judge_prompts else []))  # judge prompts' marker, when not Q:
    out, metrics = cached_sft(run, key, init, table, r.bootstrap.judge_sft_steps, "judge-sft", trainer)
    return StageResult(metrics=metrics, state={"judge_dir": str(out), "judge_sft_dir": str(out)})


# ---- evaluation ---------------------------------------------------------------------------


def first_error_f1(steps: pa.Table, step_scores: pa.Table, threshold: float) -> dict[str, float]:
    """ProcessBench metrics over the labeled solutions in `steps` (label -1 if all steps correct)."""
    scores = {(r["solution_id"], r["step_idx"]): r["score"] for r in step_scores.to_pylist()}
    by_solution: dict[str, list[dict]] = {}
    for r in steps.to_pylist():
        by_solution.setdefault(r["solution_id"], []).append(r)
    hits = {"error": [], "correct": []}
    for sid, rows in by_solution.items():
        rows.sort(key=lambda r: r["step_idx"])
        label = next((r["step_idx"] for r in rows if r["label"] is False), -1)
        pred = predicted_first_error([scores.get((sid, r["step_idx"])) for r in rows], threshold)
        hits["correct" if label == -1 else "error"].append(pred == label)
    error_acc = 100.0 * sum(hits["error"]) / max(1, len(hits["error"]))
    correct_acc = 100.0 * sum(hits["correct"]) / max(1, len(hits["correct"]))
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": harmonic_f1(error_acc, correct_acc),
            "solutions": len(by_solution)}


def eval_steps(run: Run) -> pa.Table:
    """Held-out labeled steps, limited to the first `evaluation.eval_problems` solutions."""
    steps = data.labeled_steps(run, "eval")
    limit = run.recipe.evaluation.eval_problems
    if limit:
        keep = list(dict.fromkeys(steps.column("solution_id").to_pylist()))[:limit]
        steps = steps.filter(pc.is_in(steps.column("solution_id"), pa.array(keep)))
    return steps


def judge_f1_stage(run: Run, model_dir: str, phase: str, k_curve: bool = True) -> StageResult:
    """Greedy K=1 F1 (the headline number), plus (k_curve) F1 vs K from K sampled critiques per
    step (at evaluation.critique_temperature, or one chosen per half of the solutions on the other
    half when it lists several: `_k_curve`): the first K samples of one draw of max(K) give every
    point of the curve. On the injected-error set (`{phase}_f1`, ...) and, where the run built it,
    on the policy's own mistakes (`{phase}_own_f1`, ...: stages/own_mistakes.py)."""
    from rprm_ray.stages.own_mistakes import own_steps

    sets = {"": eval_steps(run)}
    own = own_steps(run)
    if own is not None:
        sets["_own"] = own
    judge = run.roles.judge(model_dir)
    metrics: dict = {}
    tables: dict = {}
    for suffix, steps in sets.items():
        m, t = _f1_on(run, judge, steps, f"{phase}{suffix}", suffix, k_curve)
        metrics.update(m)
        tables.update(t)
    return StageResult(metrics=metrics, tables=tables)


def _f1_on(run: Run, judge, steps: pa.Table, prefix: str, suffix: str, k_curve: bool) -> tuple[dict, dict]:
    """One evaluation set's figures (metric names `prefix`_...) and tables (names ..._`suffix`)."""
    r = run.recipe
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=r.judge.sampling.max_new_tokens, seed=r.seed)
    scored = {"critiques": "critiques", "step_scores": "step_scores"}

    def greedy_chunk(chunk: pa.Table) -> dict[str, pa.Table]:
        critiques, step_scores = judge.score_steps(chunk, k=1, sampling=greedy)
        return {"critiques": critiques, "step_scores": step_scores}

    out = run.map_chunks(f"greedy{suffix}", steps, r.judge.steps_per_chunk, greedy_chunk, scored)
    critiques, step_scores = out["critiques"], out["step_scores"]
    metrics = {f"{prefix}_{k}": v for k, v in first_error_f1(steps, step_scores, r.evaluation.threshold).items()}
    metrics[f"{prefix}_invalid_critiques"] = int(critiques.num_rows - pc.sum(critiques.column("valid")).as_py())
    tables = {f"critiques_greedy{suffix}": (critiques, "critiques"),
              f"step_scores_greedy{suffix}": (step_scores, "step_scores")}
    ks = sorted(set(r.evaluation.critiques_per_step))
    if ks and k_curve:
        temperatures = r.evaluation.critique_temperatures
        sampled = {t: _sampled_critiques(run, judge, steps, t, max(ks), suffix + temperature_tag(t, temperatures))
                   for t in temperatures}
        for t, many in sampled.items():
            tables[f"critiques_sampled{suffix}{temperature_tag(t, temperatures)}"] = (many, "critiques")
        metrics.update(_k_curve(run, steps, sampled, ks, prefix))
    return metrics, tables


def temperature_tag(t: float, temperatures: list[float]) -> str:
    """A sampled pass's name suffix: none with one temperature (the names runs have always used)."""
    return "" if len(temperatures) == 1 else f"_t{t:g}"


def _sampled_critiques(run: Run, judge, steps: pa.Table, temperature: float, k: int, name: str) -> pa.Table:
    r = run.recipe
    sampling = SamplingConfig(temperature=temperature, top_p=1.0, max_new_tokens=r.judge.sampling.max_new_tokens,
                              seed=r.seed)
    return run.map_chunks(f"sampled{name}", steps, r.judge.steps_per_chunk,
                          lambda chunk: {"critiques": judge.score_steps(chunk, k=k, sampling=sampling)[0]},
                          {"critiques": "critiques"})["critiques"]


def _k_curve(run: Run, steps: pa.Table, sampled: dict[float, pa.Table], ks: list[int], prefix: str) -> dict:
    """F1 at each K from the first K sampled critiques per step (`{prefix}_f1_at_k{K}`). With
    several temperatures, each half of the solutions uses the one with the best F1 at the largest
    K on the other half (`evaluation.cross_fit`): `{prefix}_temperature_by_half`, and each
    temperature's F1 at the largest K over all solutions (`{prefix}_f1_by_temperature`, for
    reading only: choosing from it would tune on the test set)."""
    r = run.recipe
    solution_ids = list(dict.fromkeys(steps.column("solution_id").to_pylist()))

    def f1(critiques: pa.Table, k: int, solutions: list[str] | None = None) -> float:
        subset = critiques.filter(pc.less(critiques.column("sample_idx"), k))
        on = steps
        if solutions is not None:
            keep = pa.array(solutions, pa.string())
            subset = subset.filter(pc.is_in(subset.column("solution_id"), keep))
            on = steps.filter(pc.is_in(steps.column("solution_id"), keep))
        return first_error_f1(on, step_score_rows(subset, r.judge.score), r.evaluation.threshold)["f1"]

    if len(sampled) == 1:
        [critiques] = sampled.values()
        return {f"{prefix}_f1_at_k{k}": f1(critiques, k) for k in ks}
    from rprm_ray.evaluation.cross_fit import cross_fitted_choice

    per_solution, used = cross_fitted_choice(solution_ids, list(sampled),
                                             lambda t, half: f1(sampled[t], max(ks), list(half)))
    chosen = batches.concat([
        many.filter(pc.is_in(many.column("solution_id"),
                             pa.array([s for s, u in zip(solution_ids, per_solution, strict=True) if u == t],
                                      pa.string())))
        for t, many in sampled.items()], "critiques")
    return {**{f"{prefix}_f1_at_k{k}": f1(chosen, k) for k in ks},
            f"{prefix}_temperature_by_half": list(used),
            f"{prefix}_f1_by_temperature": {f"{t:g}": f1(many, max(ks)) for t, many in sampled.items()}}


# ---- DPO on the judge's own critiques (A5) ------------------------------------------------


def judge_samples_stage(run: Run) -> StageResult:
    """The SFT judge samples K critiques for the labeled steps of the problems held out of its SFT
    data; agreeing with the label = chosen, disagreeing = rejected (built next by the PairBuilder).
    With `bootstrap.judge_dpo_solutions` own, the steps are M1's sampled solutions of those problems,
    labelled by the world: the mistakes the judge meets in a search, where it errs more often."""
    r = run.recipe
    own_counts: dict = {}
    if r.judge_dpo_on_own_solutions:
        steps, own_counts = own_solution_steps(run)
    else:
        steps = judge_dpo_steps(run)
    steps = run.require_rows(
        steps, "no labeled training steps left for the judge's DPO samples (every labeled "
        "problem is searched by an iteration or used by the judge's SFT): add labeled solutions "
        "(task.dataset.train_labeled_solutions) or lower loop.problems_per_iteration")
    judge = run.roles.judge(run.state["judge_sft_dir"])
    sampled = SamplingConfig(temperature=r.bootstrap.judge_dpo_temperature, top_p=1.0,
                             max_new_tokens=r.judge.sampling.max_new_tokens, seed=r.seed + 1)
    k = max(2, r.judge.critiques_per_step, 4)
    critiques = run.map_chunks("samples", steps, r.judge.steps_per_chunk,
                               lambda chunk: {"critiques": judge.score_steps(chunk, k=k, sampling=sampled)[0]},
                               {"critiques": "critiques"})["critiques"]
    # A sampled critique can reach the label's verdict through a comparison its own lines contradict
    # (a wrong R line, then a differing digit pair marked `=`); pairs.sound_chosen_only never chooses one.
    sound_only, unsound = pairs.without_unsound_chosen(critiques, run.task.critique_is_sound)
    pair_input = sound_only if r.pairs.sound_chosen_only else critiques
    built = run.roles.pair_builder().critique_pairs.remote(pair_input)
    [critique_pairs] = waits.wait_each([built], waits.ray_wait, timeout_s=r.pairs.call_timeout_s, role="PairBuilder",
                                       names=[run.roles.name("pair-builder")], doing="building critique pairs")
    agree = pc.equal(critiques.column("verdict"), pc.if_else(critiques.column("label"), "Yes", "No"))
    return StageResult(
        metrics={"steps": steps.num_rows, "critiques": critiques.num_rows, "pairs": critique_pairs.num_rows,
                 "critiques_agreeing_with_label": int(pc.sum(pc.fill_null(agree, False)).as_py() or 0),
                 "agreeing_critiques_unsound": unsound,
                 "temperature": sampled.temperature, **own_counts},
        tables={"critiques": (critiques, "critiques"), "pairs": (critique_pairs, "preference_pairs"),
                "steps": (steps, "labeled_steps")},
    )


def own_solution_steps(run: Run) -> tuple[pa.Table, dict]:
    """M1's sampled solutions of the judge-DPO problems, labelled step by step by the world."""
    from rprm_ray.stages.own_mistakes import sample_own_steps

    train = data.problems(run, "train")
    problems = train.filter(pc.is_in(train.column("problem_id"), pa.array(judge_dpo_problem_ids(run), pa.string())))
    _, steps, counts = sample_own_steps(run, problems, "own_solutions", seed_offset=2)
    return steps, counts


def judge_dpo_stage(run: Run) -> StageResult:
    unsound = run.manifest.stage("iter_0/judge_samples")["metrics"].get("agreeing_critiques_unsound", 0)
    dropped = (f"; {unsound} agreeing critiques were not chosen as unsound (pairs.sound_chosen_only)"
               if run.recipe.pairs.sound_chosen_only and unsound else "")
    pairs_table = run.require_rows(
        run.table("iter_0/judge_samples", "pairs", "preference_pairs"),
        "no critique pairs to train on (the SFT judge's sampled critiques never both agreed and disagreed "
        f"with a step's label, see iter_0/judge_samples{dropped}): sample more critiques "
        "(judge.critiques_per_step) or more steps (loop.problems_per_iteration)")
    out_dir = run.model_dir("iter_0/judge_dpo")
    metrics, with_ref = train_dpo(run, Path(run.state["judge_sft_dir"]), pairs_table, out_dir, "judge-dpo")
    return StageResult(metrics={**metrics, "pairs": pairs_table.num_rows},
                       tables={"pairs_with_reference": (with_ref, "preference_pairs")},
                       state={"judge_dir": str(out_dir), "judge_dpo_dir": str(out_dir)})
