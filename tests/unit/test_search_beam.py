"""Step-level beam search: batching across prompts, a perfect PRM finds the answer, duplicate
filtering, the depth cap, budget counts."""

from __future__ import annotations

import pytest
from test_search_world import STYLE, ConstantScorer, OracleScorer, first_error, search_cfg, world

from rprm_ray.search import RESULTS_SCHEMA, accuracy, run_beam


def test_perfect_scorer_reaches_every_answer_when_one_candidate_per_level_is_right():
    problems, table, gen = world(12, p_correct=0.2, guarantee_correct=True)
    cfg = search_cfg(samples_per_prompt=4, beam_width=2)
    out = run_beam(table, gen, OracleScorer(gen.problems), cfg, STYLE)
    assert out.schema.equals(RESULTS_SCHEMA)
    assert accuracy(out) == 1.0
    assert all(out.column("finished").to_pylist())
    assert out.column("answer").to_pylist() == [p.answer for p in problems]
    # control: the same generator under an inverted judge goes wrong, so the PRM is what helps
    _, _, gen2 = world(12, p_correct=0.2, guarantee_correct=True)
    assert accuracy(run_beam(table, gen2, OracleScorer(gen2.problems, invert=True), cfg, STYLE)) < 0.5


def test_one_generator_call_and_one_judge_call_per_level_for_the_whole_batch():
    problems, table, gen = world(6, p_correct=0.5, guarantee_correct=True)
    scorer = OracleScorer(gen.problems)
    cfg = search_cfg(samples_per_prompt=4, beam_width=2)
    out = run_beam(table, gen, scorer, cfg, STYLE)
    levels = max(out.column("depth").to_pylist())
    assert len(gen.expand_calls) == levels == len(scorer.calls)
    # level 0: the root of every prompt, expanded into all N first steps
    assert gen.expand_calls[0]["problem_ids"] == [p.problem_id for p in problems]
    assert gen.expand_calls[0]["w"] == 4
    # later levels: N/M beams per open prompt, M candidates each
    for call in gen.expand_calls[1:]:
        assert call["w"] == 2
        assert all(call["problem_ids"].count(pid) == 2 for pid in set(call["problem_ids"]))
    # every prompt still open at level 1 is in that level's single call
    open_at_1 = [r["problem_id"] for r in out.to_pylist() if r["depth"] >= 2]
    assert sorted(set(gen.expand_calls[1]["problem_ids"])) == sorted(open_at_1)


def test_batched_and_one_prompt_at_a_time_give_the_same_results():
    _, table, gen = world(6, p_correct=0.5)
    cfg = search_cfg(samples_per_prompt=4, beam_width=2)
    together = run_beam(table, gen, OracleScorer(gen.problems), cfg, STYLE)
    calls_together = len(gen.expand_calls)
    _, _, gen1 = world(6, p_correct=0.5)
    alone = run_beam(
        table, gen1, OracleScorer(gen1.problems), cfg.model_copy(update={"batch_prompts": 1}), STYLE
    )
    assert together.equals(alone)
    assert len(gen1.expand_calls) > calls_together


def test_duplicate_candidates_are_judged_once():
    # p_correct=1: every candidate of a prefix is the same step
    problems, table, gen = world(3, p_correct=1.0)
    scorer = OracleScorer(gen.problems)
    out = run_beam(table, gen, scorer, search_cfg(samples_per_prompt=4, beam_width=2), STYLE)
    assert accuracy(out) == 1.0
    # one unique step per prompt per level reaches the judge; the lone survivor is repeated to
    # fill the N/M slots, so the generator still made N steps per level
    assert [c["rows"] for c in scorer.calls] == [3] * len(scorer.calls)
    assert out.column("candidate_steps").to_pylist() == [4 * len(p.steps) for p in problems]
    assert out.column("num_completions").to_pylist() == [1, 1, 1]
    # without filtering, every duplicate is judged and kept
    _, _, gen2 = world(3, p_correct=1.0)
    scorer2 = OracleScorer(gen2.problems)
    out2 = run_beam(
        table, gen2, scorer2, search_cfg(samples_per_prompt=4, beam_width=2, filter_duplicates=False), STYLE
    )
    assert scorer2.calls[0]["rows"] == 3 * 4
    assert out2.column("num_completions").to_pylist() == [4, 4, 4]


def test_depth_cap_stops_the_search_with_unfinished_beams():
    _, table, gen = world(4, p_correct=0.7, never_finish=True)
    out = run_beam(
        table, gen, ConstantScorer(0.5), search_cfg(samples_per_prompt=4, beam_width=2, max_depth=3), STYLE
    )
    assert len(gen.expand_calls) == 3
    rows = out.to_pylist()
    assert all(r["depth"] == 3 and len(r["steps"]) == 3 for r in rows)
    assert not any(r["finished"] for r in rows)
    assert all(r["answer"] is None and r["correct"] is False for r in rows)
    # N first steps, then N/M beams x M candidates at each later level
    assert all(r["candidate_steps"] == 4 * 3 for r in rows)


def test_samples_must_be_a_multiple_of_the_beam_width():
    _, table, gen = world(1)
    cfg = search_cfg(samples_per_prompt=4, beam_width=3)
    with pytest.raises(ValueError, match="multiple of beam_width"):
        run_beam(table, gen, ConstantScorer(), cfg, STYLE)


def _expanded_prefixes(gen, problems) -> list[tuple[bool, bool]]:
    """Per (level >= 1, prompt): (some expanded prefix is right, some is wrong)."""
    by_id = {p.problem_id: p for p in problems}
    out = []
    for call in gen.expand_calls[1:]:
        prefixes: dict[str, set[tuple[str, ...]]] = {}
        for row in call["candidates"]:
            prefixes.setdefault(row["problem_id"], set()).add(tuple(row["prefix_steps"]))
        for pid, steps in prefixes.items():
            right = [first_error(by_id[pid], list(s)) == -1 for s in steps]
            out.append((any(right), not all(right)))
    return out


def test_pruning_expands_no_rejected_beam_while_an_accepted_one_exists():
    problems, table, gen = world(16, p_correct=0.4)
    plain = run_beam(table, gen, OracleScorer(gen.problems), search_cfg(samples_per_prompt=4, beam_width=2), STYLE)
    # plain top-N/M keeps a rejected prefix beside an accepted one when too few are accepted
    assert (True, True) in _expanded_prefixes(gen, problems)
    problems, table, gen = world(16, p_correct=0.4)
    cfg = search_cfg(samples_per_prompt=4, beam_width=2, beam_prune_below=0.5)
    pruned = run_beam(table, gen, OracleScorer(gen.problems), cfg, STYLE)
    assert (True, True) not in _expanded_prefixes(gen, problems)
    # the accepted prefixes get those samples: more prompts solved with the same budget
    assert accuracy(pruned) > accuracy(plain)
    assert sum(pruned.column("candidate_steps").to_pylist()) <= sum(plain.column("candidate_steps").to_pylist())
