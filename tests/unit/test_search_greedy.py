"""R-PRM greedy guided search: the best candidate each step, ties to the first, depth cap,
one generator and one judge call per level."""

from __future__ import annotations

import pyarrow as pa
from test_search_world import STYLE, ConstantScorer, OracleScorer, first_error, search_cfg, world

from rprm_ray import batches
from rprm_ray.search import RESULTS_SCHEMA, accuracy, greedy_search, run_greedy


def test_perfect_scorer_keeps_the_correct_step_every_level():
    problems, table, gen = world(10, p_correct=0.2, guarantee_correct=True)
    scorer = OracleScorer(gen.problems)
    out = run_greedy(table, gen, scorer, search_cfg(candidates_per_step=4), STYLE)
    assert out.schema.equals(RESULTS_SCHEMA)
    assert accuracy(out) == 1.0
    assert out.column("steps").to_pylist() == [list(p.steps) for p in problems]
    # w candidates generated per step; no votes for a single trajectory
    assert out.column("candidate_steps").to_pylist() == [4 * len(p.steps) for p in problems]
    assert out.column("majority_correct").to_pylist() == [None] * 10
    # one call per level, with every open prompt in it
    assert len(gen.expand_calls) == len(scorer.calls) == max(len(p.steps) for p in problems)
    assert gen.expand_calls[0]["problem_ids"] == [p.problem_id for p in problems]
    assert all(c["w"] == 4 for c in gen.expand_calls)


def test_ties_keep_the_first_candidate():
    _, table, gen = world(4, p_correct=0.3)
    out = run_greedy(
        table, gen, ConstantScorer(0.5), search_cfg(candidates_per_step=3, filter_duplicates=False), STYLE
    )
    chosen: dict[str, list[str]] = {}
    for call in gen.expand_calls:
        for row in call["candidates"]:
            if row["candidate_id"] == 0:
                chosen.setdefault(row["problem_id"], []).append(row["step"])
    assert out.column("steps").to_pylist() == [chosen[pid] for pid in out.column("problem_id").to_pylist()]
    # with a 0.3-accurate policy, first candidates are often wrong: the tie rule is what decided
    assert accuracy(out) < 1.0


def test_depth_cap_ends_unfinished():
    _, table, gen = world(3, p_correct=1.0, never_finish=True)
    out = run_greedy(table, gen, OracleScorer(gen.problems), search_cfg(max_depth=5), STYLE)
    assert len(gen.expand_calls) == 5
    rows = out.to_pylist()
    assert all(len(r["steps"]) == 5 and r["depth"] == 5 and not r["finished"] for r in rows)
    assert all(r["answer"] is None and r["correct"] is False for r in rows)


def test_duplicates_reach_the_judge_once():
    problems, table, gen = world(3, p_correct=1.0)
    scorer = OracleScorer(gen.problems)
    out = run_greedy(table, gen, scorer, search_cfg(candidates_per_step=4), STYLE)
    assert accuracy(out) == 1.0
    assert [c["rows"] for c in scorer.calls] == [3] * len(scorer.calls)
    assert out.column("judge_calls").to_pylist() == [len(p.steps) for p in problems]


class _TieAfter:
    """Oracle scores at the first step, the same score for every candidate after it."""

    def __init__(self, problems):
        self.oracle = OracleScorer(problems)

    def score_steps(self, labeled_steps):
        scored = self.oracle.score_steps(labeled_steps).to_pylist()
        for row, step in zip(scored, labeled_steps.to_pylist(), strict=True):
            if step["previous_steps"]:
                row["score"] = 0.5
        return batches.from_rows(scored, "step_scores")


def test_greedy_search_records_best_worst_pairs_by_score():
    problems, table, gen = world(6, p_correct=0.3, guarantee_correct=True)
    out, pairs = greedy_search(
        table, gen, OracleScorer(gen.problems), search_cfg(candidates_per_step=4), STYLE
    )
    assert accuracy(out) == 1.0
    batches.validate(pairs, "preference_pairs")
    by_id = {p.problem_id: p for p in problems}
    assert pairs.num_rows > 0
    for pair in pairs.to_pylist():
        p, prefix = by_id[pair["problem_id"]], STYLE.split_steps(pair["prompt"])[1:]
        assert first_error(p, [*prefix, pair["chosen"].strip()]) == -1
        assert first_error(p, [*prefix, pair["rejected"].strip()]) == len(prefix)


class _Squashed:
    """Oracle scores squashed into [0.4, 0.6]: wrong steps 0.4, right ones 0.6, except that a
    right step after the first one scores 0.45 (a gap too small to trust)."""

    def __init__(self, problems):
        self.oracle = OracleScorer(problems)

    def score_steps(self, labeled_steps):
        scored = self.oracle.score_steps(labeled_steps).to_pylist()
        for row, step in zip(scored, labeled_steps.to_pylist(), strict=True):
            row["score"] = 0.4 if row["score"] == 0.0 else (0.45 if step["previous_steps"] else 0.6)
        return batches.from_rows(scored, "step_scores")


def test_step_pairs_need_the_minimum_score_gap():
    _, table, gen = world(6, p_correct=0.3, guarantee_correct=True)
    _, every = greedy_search(table, gen, _Squashed(gen.problems), search_cfg(candidates_per_step=4), STYLE)
    _, table, gen = world(6, p_correct=0.3, guarantee_correct=True)
    _, wide = greedy_search(table, gen, _Squashed(gen.problems), search_cfg(candidates_per_step=4), STYLE,
                            min_pair_margin=0.1)
    # Gaps of 0.2 (first steps) pass a 0.1 margin; gaps of 0.05 (later steps) do not.
    assert wide.num_rows > 0
    assert all(STYLE.split_steps(p["prompt"])[1:] == [] for p in wide.to_pylist())
    assert every.num_rows > wide.num_rows


def test_greedy_search_rolls_back_on_ties_within_max_depth():
    problems, table, gen = world(3, p_correct=0.3, guarantee_correct=True)
    out, pairs = greedy_search(
        table,
        gen,
        _TieAfter(gen.problems),
        search_cfg(candidates_per_step=4, max_depth=5),
        STYLE,
        rollback_on_tie=True,
    )
    # take, tie -> rollback, take, tie -> rollback, take
    assert out.column("rollbacks").to_pylist() == [2, 2, 2]
    assert all(len(s) == 1 for s in out.column("steps").to_pylist())
    assert sorted(pairs.column("problem_id").to_pylist()) == sorted(p.problem_id for p in problems)
    # run_greedy (test time) never rolls back: the tie goes to the first candidate
    _, _, gen2 = world(3, p_correct=0.3, guarantee_correct=True)
    assert run_greedy(table, gen2, _TieAfter(gen2.problems), search_cfg(max_depth=5), STYLE).column(
        "rollbacks"
    ).to_pylist() == [0, 0, 0]


def test_judge_client_shape_and_custom_grader():
    """The ProcessJudge client answers (critiques, step_scores); graders get Task.grade's args."""

    class ClientLike:
        def __init__(self, problems):
            self.oracle = OracleScorer(problems)

        def score_steps(self, labeled_steps):
            return batches.empty("critiques"), self.oracle.score_steps(labeled_steps)

    problems, table, gen = world(4, p_correct=0.3, guarantee_correct=True)
    seen = []

    def grade(question, reference, answer):
        seen.append((question, reference, answer))
        return False  # a strict grader: the results must report what it said

    hidden = table.set_column(table.column_names.index("answer"), "answer", pa.array([None, "1", None, "2"]))
    out = run_greedy(hidden, gen, ClientLike(gen.problems), search_cfg(), STYLE, grade=grade)
    assert out.column("correct").to_pylist() == [None, False, None, False]
    assert [s[1] for s in seen] == ["1", "2"]
    assert seen[0][0] == problems[1].question and seen[0][2] == problems[1].answer


def test_rollback_redraws_the_candidates_of_a_prefix_it_expands_again():
    # Engines seed a prompt's samples from its text: without a seed per level, a tie at the bare
    # question (every candidate wrong) would draw the same wrong candidates at every level.
    # Without duplicate filtering a level with one right and one wrong candidate is the only one
    # that advances (the right step is kept), so every finished solution is right.
    problems, table, gen = world(8, p_correct=0.3)
    cfg = search_cfg(candidates_per_step=3, max_depth=60, filter_duplicates=False)
    out, _ = greedy_search(table, gen, OracleScorer(gen.problems), cfg, STYLE, rollback_on_tie=True)
    roots: dict[str, set[tuple[str, ...]]] = {}
    for call in gen.expand_calls:
        drawn: dict[str, list[str]] = {}
        for row in call["candidates"]:
            if not row["prefix_steps"]:
                drawn.setdefault(row["problem_id"], []).append(row["step"])
        for pid, steps in drawn.items():
            roots.setdefault(pid, set()).add(tuple(steps))
    assert any(len(draws) > 1 for draws in roots.values())  # the bare question was expanded anew
    assert all(out.column("finished").to_pylist()) and accuracy(out) == 1.0


def test_concurrent_chunks_give_the_results_and_pairs_of_one_chunk_in_order():
    _, table, gen = world(12, p_correct=0.5)
    scorer = OracleScorer(gen.problems)
    one, one_pairs = greedy_search(table, gen, scorer, search_cfg(candidates_per_step=3, batch_prompts=12), STYLE)
    many, many_pairs = greedy_search(table, gen, scorer, search_cfg(candidates_per_step=3, batch_prompts=5,
                                                                    concurrent_chunks=3), STYLE)
    assert many.to_pylist() == one.to_pylist()
    key = ["problem_id", "chosen", "rejected"]
    assert many_pairs.select(key).to_pylist() == one_pairs.select(key).to_pylist()


def test_trace_records_every_judged_candidate_with_the_kept_and_rejected_step():
    problems, table, gen = world(5, p_correct=0.3, guarantee_correct=True)
    trace: list[dict] = []
    out, pairs = greedy_search(table, gen, OracleScorer(gen.problems), search_cfg(candidates_per_step=4), STYLE,
                               trace=trace)
    rows = batches.from_rows(trace, "search_trace").to_pylist()
    kept = {}
    for r in rows:
        if r["outcome"] == "kept":
            kept.setdefault(r["problem_id"], []).append((r["level"], r["step"]))
    # The kept steps, level by level, are the solution the search returned.
    assert {pid: [s for _, s in sorted(v)] for pid, v in kept.items()} == dict(
        zip(out.column("problem_id").to_pylist(), out.column("steps").to_pylist(), strict=True))
    # One kept step per (problem, level); every rejected step is a pair's rejected side, scored lower.
    levels = {(r["problem_id"], r["level"]) for r in rows}
    assert len(levels) == sum(len(v) for v in kept.values())
    rejected = [r for r in rows if r["outcome"] == "rejected"]
    assert len(rejected) == pairs.num_rows > 0
    assert sorted(r["step"] for r in rejected) == sorted(p["rejected"].strip() for p in pairs.to_pylist())
    assert all(r["score"] == 0.0 for r in rejected)  # the oracle scores wrong steps 0, right ones 1
    assert all(r["score"] == 1.0 for r in rows if r["outcome"] == "kept")


def test_trace_marks_tied_levels():
    _, table, gen = world(3, p_correct=0.3, guarantee_correct=True)
    trace: list[dict] = []
    greedy_search(table, gen, _TieAfter(gen.problems), search_cfg(candidates_per_step=4, max_depth=5), STYLE,
                  rollback_on_tie=True, trace=trace)
    tied_levels = {(r["problem_id"], r["level"]) for r in trace if r["outcome"] == "tied"}
    assert len(tied_levels) == 3 * 2  # two ties per problem, each rolled back
    assert all(r["outcome"] != "kept" for r in trace if (r["problem_id"], r["level"]) in tied_levels)
