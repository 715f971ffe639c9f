"""PSRLM self-judged step search: wins over both orders, best kept, rollback on ties bounded by
max_depth, step pairs for step-DPO (win counting itself is rprm_ray.pairs.step_pairs')."""

from __future__ import annotations

from test_search_world import STYLE, OracleJudge, first_error, search_cfg, world

from rprm_ray import batches
from rprm_ray.search import RESULTS_SCHEMA, accuracy, run_self_judged, self_judged_search


def _prefix(pair: dict) -> list[str]:
    """The steps in a compact-style pair prompt (`Q:<question>` line first)."""
    return STYLE.split_steps(pair["prompt"])[1:]


def test_judge_that_prefers_correct_steps_solves_every_problem_and_records_pairs():
    problems, table, gen = world(8, p_correct=0.3, guarantee_correct=True)
    judge = OracleJudge(gen.problems)
    out, pairs = self_judged_search(table, gen, judge, search_cfg(candidates_per_step=4), STYLE)
    assert out.schema.equals(RESULTS_SCHEMA)
    assert accuracy(out) == 1.0
    assert out.column("rollbacks").to_pylist() == [0] * 8
    # one compare call per level for the whole batch
    assert len(judge.calls) == len(gen.expand_calls)
    assert len(set(judge.calls[0]["problem_ids"])) == 8
    # each step pair: chosen continues the reference solution, rejected departs from it
    batches.validate(pairs, "preference_pairs")
    by_id = {p.problem_id: p for p in problems}
    assert pairs.num_rows > 0
    for pair in pairs.to_pylist():
        p, prefix = by_id[pair["problem_id"]], _prefix(pair)
        assert pair["kind"] == "step"
        assert first_error(p, [*prefix, pair["chosen"].strip()]) == -1
        assert first_error(p, [*prefix, pair["rejected"].strip()]) == len(prefix)


def test_both_orders_are_judged_for_every_pair():
    _, table, gen = world(2, p_correct=0.0)  # wrong candidates, offsets 1..3: some repeat
    judge = OracleJudge(gen.problems)
    out = run_self_judged(table, gen, judge, search_cfg(candidates_per_step=4, max_depth=1), STYLE)
    unique = {}
    for row in gen.expand_calls[0]["candidates"]:
        unique.setdefault(row["problem_id"], set()).add(row["step"])
    # k unique candidates -> k*(k-1) ordered judgments
    ids = out.column("problem_id").to_pylist()
    assert out.column("judge_calls").to_pylist() == [len(unique[p]) * (len(unique[p]) - 1) for p in ids]
    assert all(len(unique[p]) >= 2 for p in ids)


def test_ties_roll_back_the_previous_step_and_max_depth_bounds_the_loop():
    # discriminates at the first step, never after: step 1 is taken, step 2 ties and discards it
    problems, table, gen = world(3, p_correct=0.3, guarantee_correct=True)
    judge = OracleJudge(gen.problems, tie_after_steps=1)
    out, pairs = self_judged_search(table, gen, judge, search_cfg(candidates_per_step=4, max_depth=5), STYLE)
    rows = out.to_pylist()
    assert len(gen.expand_calls) == 5
    # iterations: take, tie->rollback, take, tie->rollback, take
    assert all(r["rollbacks"] == 2 and len(r["steps"]) == 1 and not r["finished"] for r in rows)
    assert all(r["depth"] == 5 for r in rows)
    # the rolled-back steps' pairs were discarded with them: one first-step pair per problem
    assert sorted(pairs.column("problem_id").to_pylist()) == sorted(p.problem_id for p in problems)
    assert all(_prefix(pair) == [] for pair in pairs.to_pylist())


def test_without_rollback_a_tie_keeps_the_first_candidate_and_records_no_pair():
    problems, table, gen = world(3, p_correct=0.3, guarantee_correct=True)
    judge = OracleJudge(gen.problems, tie_after_steps=0)
    out, pairs = self_judged_search(
        table,
        gen,
        judge,
        search_cfg(candidates_per_step=3, filter_duplicates=False),
        STYLE,
        rollback_on_tie=False,
    )
    assert pairs.num_rows == 0
    assert all(out.column("finished").to_pylist())
    first = {}
    for call in gen.expand_calls:
        for row in call["candidates"]:
            if row["candidate_id"] == 0:
                first.setdefault(row["problem_id"], []).append(row["step"])
    assert out.column("steps").to_pylist() == [first[p.problem_id] for p in problems]


def test_trace_scores_candidates_by_wins_and_marks_the_kept_step():
    _, table, gen = world(4, p_correct=0.3, guarantee_correct=True)
    trace: list[dict] = []
    out, pairs = self_judged_search(table, gen, OracleJudge(gen.problems), search_cfg(candidates_per_step=4),
                                    STYLE, trace=trace)
    rows = batches.from_rows(trace, "search_trace").to_pylist()
    kept = sorted((r["problem_id"], r["level"], r["step"]) for r in rows if r["outcome"] == "kept")
    by_problem: dict[str, list[str]] = {}
    for pid, _, step in kept:
        by_problem.setdefault(pid, []).append(step)
    assert by_problem == dict(zip(out.column("problem_id").to_pylist(), out.column("steps").to_pylist(), strict=True))
    for (pid, level) in {(r["problem_id"], r["level"]) for r in rows}:
        level_rows = [r for r in rows if (r["problem_id"], r["level"]) == (pid, level)]
        if len(level_rows) > 1:  # the kept step has the most wins
            best = next(r for r in level_rows if r["outcome"] == "kept")
            assert best["score"] == max(r["score"] for r in level_rows)
    assert sum(r["outcome"] == "rejected" for r in rows) == pairs.num_rows
