"""R-PRM greedy guided search: the best candidate each step, ties to the first, depth cap,
one generator and one judge call per level."""

from __future__ import annotations

from test_search_world import STYLE, ConstantScorer, OracleScorer, search_cfg, world

from rprm_ray.search import RESULTS_SCHEMA, accuracy, run_greedy


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
