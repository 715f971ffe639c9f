"""Preference pairs (R-PRM critique pairs, PSRLM step pairs) and the SFT filter."""

from __future__ import annotations

import pytest

from rprm_ray import pairs
from rprm_ray.batches import from_rows, validate
from rprm_ray.prompts import VERDICT_PREFIX, get_style, parse_verdict

YES = f"{VERDICT_PREFIX} Yes"
NO = f"{VERDICT_PREFIX} No"


def crit(
    solution: str, step: int, sample: int, text: str, label: bool | None, prompt: str | None = None
) -> dict:
    verdict = parse_verdict(text)
    return {
        "problem_id": solution.split("/")[0],
        "solution_id": solution,
        "step_idx": step,
        "sample_idx": sample,
        "prompt": prompt or f"prompt {solution} {step}",
        "critique": text,
        "verdict": verdict,
        "valid": verdict is not None,
        "p_yes": None,
        "label": label,
    }


def table(rows: list[dict]):
    return from_rows(rows, "critiques")


def test_chosen_agree_rejected_disagree_invalid_in_neither() -> None:
    rows = [
        crit("p1/s", 0, 0, f"a\n{YES}", True),
        crit("p1/s", 0, 1, f"b\n{NO}", True),
        crit("p1/s", 0, 2, f"c\n{YES}\nthen more", True),  # target verdict not at the end: neither pool
        crit("p1/s", 0, 3, "no verdict", True),
        crit("p1/s", 0, 4, f"d\n{NO}", True),
    ]
    out = pairs.critique_pairs(table(rows), max_pairs_per_step=10, balance_verdicts=False, seed=0)
    validate(out, "preference_pairs")
    got = sorted((r["chosen"], r["rejected"]) for r in out.to_pylist())
    assert got == [(f"a\n{YES}", f"b\n{NO}"), (f"a\n{YES}", f"d\n{NO}")]
    r = out.to_pylist()[0]
    assert r["kind"] == "critique" and r["problem_id"] == "p1" and r["prompt"] == "prompt p1/s 0"
    assert r["pair_id"] == "critique/p1/s/0/0-1"
    assert r["ref_chosen_logp"] is None


def test_unsound_agreeing_critiques_are_never_chosen() -> None:
    rows = [
        crit("p1/s", 0, 0, f"sound a\n{YES}", True),
        crit("p1/s", 0, 1, f"unsound b\n{YES}", True),  # right verdict, contradicted by its own lines
        crit("p1/s", 0, 2, f"unsound c\n{NO}", True),  # a wrong verdict stays a rejected one
        crit("p1/s", 0, 3, f"sound d\n{NO}", True),
        crit("p2/s", 0, 0, f"unsound e\n{YES}", None),  # unlabeled: kept, makes no pair
    ]
    kept, dropped = pairs.without_unsound_chosen(table(rows), lambda text: text.startswith("sound"))
    assert dropped == 1 and kept.column("sample_idx").to_pylist() == [0, 2, 3, 0]
    out = pairs.critique_pairs(kept, max_pairs_per_step=10, balance_verdicts=False, seed=0)
    got = sorted((r["chosen"], r["rejected"]) for r in out.to_pylist())
    assert got == [(f"sound a\n{YES}", f"sound d\n{NO}"), (f"sound a\n{YES}", f"unsound c\n{NO}")]


def test_no_label_or_one_sided_steps_give_no_pairs() -> None:
    rows = [
        crit("p1/s", 0, 0, f"a\n{YES}", None),
        crit("p1/s", 0, 1, f"b\n{NO}", None),
        crit("p2/s", 0, 0, f"a\n{YES}", True),
        crit("p2/s", 0, 1, f"b\n{YES}", True),
    ]
    assert pairs.critique_pairs(table(rows), balance_verdicts=False).num_rows == 0


def _many(label: bool, n_agree: int, n_disagree: int, solution: str = "p/s", step: int = 0) -> list[dict]:
    agree, disagree = (YES, NO) if label else (NO, YES)
    rows = [crit(solution, step, i, f"agree {i}\n{agree}", label) for i in range(n_agree)]
    rows += [crit(solution, step, n_agree + i, f"disagree {i}\n{disagree}", label) for i in range(n_disagree)]
    return rows


def test_cap_per_step_and_determinism() -> None:
    t = table(_many(True, 4, 4))
    out = pairs.critique_pairs(t, max_pairs_per_step=3, balance_verdicts=False, seed=1)
    assert out.num_rows == 3
    assert pairs.critique_pairs(t, max_pairs_per_step=3, balance_verdicts=False, seed=1).equals(out)
    ids = {
        tuple(
            pairs.critique_pairs(t, max_pairs_per_step=3, balance_verdicts=False, seed=s)
            .column("pair_id")
            .to_pylist()
        )
        for s in range(6)
    }
    assert len(ids) > 1  # the seed picks which pairs
    assert pairs.critique_pairs(t, max_pairs_per_step=100, balance_verdicts=False).num_rows == 16


def test_identical_critiques_are_deduplicated() -> None:
    rows = [crit("p/s", 0, i, f"same\n{YES}", True) for i in range(3)]
    rows += [crit("p/s", 0, 3 + i, f"bad\n{NO}", True) for i in range(3)]
    # The same step in another solution with the same prompt: the pair is not repeated.
    rows += [
        crit("p/t", 0, 0, f"same\n{YES}", True, prompt="prompt p/s 0"),
        crit("p/t", 0, 1, f"bad\n{NO}", True, prompt="prompt p/s 0"),
    ]
    out = pairs.critique_pairs(table(rows), max_pairs_per_step=10, balance_verdicts=False)
    assert out.num_rows == 1
    assert out.column("pair_id").to_pylist() == ["critique/p/s/0/0-3"]


def test_balance_yes_and_no_chosen_one_to_one() -> None:
    rows = []
    for k in range(5):
        rows += _many(True, 1, 1, solution=f"y{k}/s")
    for k in range(2):
        rows += _many(False, 1, 1, solution=f"n{k}/s")
    out = pairs.critique_pairs(table(rows), balance_verdicts=True, seed=0).to_pylist()
    chosen = [parse_verdict(r["chosen"]) for r in out]
    assert chosen.count("Yes") == chosen.count("No") == 2
    # Only Yes-chosen pairs: truncating to 1:1 leaves none (R-PRM's balancing rule).
    only_yes = [r for r in rows if r["solution_id"].startswith("y")]
    assert pairs.critique_pairs(table(only_yes), balance_verdicts=True).num_rows == 0


def test_paper_filter() -> None:
    # chosen fraction 2/4 > 1/3: keep the first two pairs of the product.
    keep = pairs.critique_pairs(
        table(_many(True, 2, 2)), max_pairs_per_step=10, balance_verdicts=False, paper_filter=True
    )
    assert keep.column("pair_id").to_pylist() == ["critique/p/s/0/0-2", "critique/p/s/0/0-3"]
    # chosen fraction 1/4 <= 1/3: the step is dropped.
    drop = pairs.critique_pairs(
        table(_many(True, 1, 3)), max_pairs_per_step=10, balance_verdicts=False, paper_filter=True
    )
    assert drop.num_rows == 0


def test_sft_filter_keeps_the_last_consistent_critique_balanced() -> None:
    rows = [
        crit("a/s", 0, 0, f"first\n{YES}", True),
        crit("a/s", 0, 1, f"second\n{YES}", True),
        crit("a/s", 0, 2, f"wrong\n{NO}", True),
        crit("a/s", 0, 3, f"late\n{YES} trailing", True),  # invalid
        crit("b/s", 1, 0, f"x\n{NO}", False),
        crit("c/s", 0, 0, f"y\n{YES}", True),
        crit("d/s", 0, 0, f"none\n{YES}", False),  # no consistent critique: dropped
    ]
    unbalanced = pairs.sft_filter(table(rows), balance=False).to_pylist()
    assert [(r["example_id"], r["completion"]) for r in unbalanced] == [
        ("judge/a/s/0", f"second\n{YES}"),
        ("judge/b/s/1", f"x\n{NO}"),
        ("judge/c/s/0", f"y\n{YES}"),
    ]
    assert all(r["kind"] == "judge" for r in unbalanced)
    balanced = pairs.sft_filter(table(rows), seed=0).to_pylist()
    verdicts = [parse_verdict(r["completion"]) for r in balanced]
    assert sorted(verdicts) == ["No", "Yes"]
    picks = set()
    for s in range(20):
        kept = pairs.sft_filter(table(rows), seed=s).column("example_id").to_pylist()
        picks.update(k for k in kept if k != "judge/b/s/1")
    assert picks == {"judge/a/s/0", "judge/c/s/0"}  # the seed decides which Yes survives


# ---------------------------------------------------------------------------------------------
# PSRLM step pairs


def cands(
    prefix_id: str, steps: list[str], prefix_steps: list[str] | None = None, finished=None
) -> list[dict]:
    return [
        {
            "problem_id": "p",
            "prefix_id": prefix_id,
            "candidate_id": i,
            "question": "(37+25)*3-8",
            "prefix_steps": prefix_steps if prefix_steps is not None else ["37+25=62"],
            "step": s,
            "finished": bool(finished and finished[i]),
            "num_tokens": len(s),
            "cumulative_logprob": None,
        }
        for i, s in enumerate(steps)
    ]


def judge_all(prefix_id: str, n: int, winner_of) -> list[dict]:
    """Both orders of every unordered pair; winner_of(a, b, order) -> candidate id or None."""
    rows = []
    for a in range(n):
        for b in range(a + 1, n):
            for order in ("AB", "BA"):
                w = winner_of(a, b, order)
                rows.append(
                    {
                        "problem_id": "p",
                        "prefix_id": prefix_id,
                        "candidate_a": a,
                        "candidate_b": b,
                        "order": order,
                        "judgment": "...",
                        "winner": w,
                        "valid": w is not None,
                    }
                )
    return rows


def run(c: list[dict], j: list[dict], style: str = "compact"):
    return pairs.step_pairs(from_rows(c, "candidates"), from_rows(j, "pairwise_judgments"), style=style)


def test_best_and_worst_by_wins() -> None:
    steps = ["62*3=187", "62*3=186", "26*3=78"]
    quality = {0: 1, 1: 2, 2: 0}
    c = cands("x", steps)
    j = judge_all("x", 3, lambda a, b, order: a if quality[a] > quality[b] else b)
    out, outcomes = run(c, j)
    validate(out, "preference_pairs")
    (pair,) = out.to_pylist()
    assert pair["kind"] == "step" and pair["pair_id"] == "step/x/1-2"
    assert pair["prompt"] == "Q:(37+25)*3-8\n37+25=62\n"
    assert pair["chosen"] == "62*3=186\n" and pair["rejected"] == "26*3=78\n"
    (o,) = outcomes.to_pylist()
    assert o["wins"] == [2, 4, 0] and o["candidate_ids"] == [0, 1, 2]
    assert (o["best_candidate"], o["worst_candidate"], o["best_step"]) == (1, 2, "62*3=186")
    assert not o["all_tied"] and o["pair_id"] == "step/x/1-2"
    assert o["num_judgments"] == 6 and o["num_invalid"] == 0 and o["num_position_inconsistent"] == 0


def test_all_tied_gives_no_pair_and_flags_rollback() -> None:
    # A judge that always says "A": every candidate wins once per pair, a position-biased tie.
    c = cands("x", ["1", "2", "3"])
    j = judge_all("x", 3, lambda a, b, order: a if order == "AB" else b)
    out, outcomes = run(c, j)
    assert out.num_rows == 0
    (o,) = outcomes.to_pylist()
    assert o["all_tied"] and o["pair_id"] is None and o["wins"] == [2, 2, 2]
    assert o["num_position_inconsistent"] == 3
    assert o["best_candidate"] == 0  # lowest id among equals


def test_invalid_judgments_count_nothing_and_no_judgments_is_a_tie() -> None:
    c = cands("x", ["62*3=186", "62*3=187"]) + cands("y", ["a", "b"])
    j = judge_all("x", 2, lambda a, b, order: 0 if order == "AB" else None)
    out, outcomes = run(c, j)
    by = {o["prefix_id"]: o for o in outcomes.to_pylist()}
    assert by["x"]["wins"] == [1, 0] and by["x"]["num_invalid"] == 1 and not by["x"]["all_tied"]
    assert by["y"]["all_tied"] and by["y"]["num_judgments"] == 0
    assert out.column("pair_id").to_pylist() == ["step/x/0-1"]


def test_identical_best_and_worst_text_gives_no_pair() -> None:
    c = cands("x", ["62*3=186", "62*3=186"])
    out, outcomes = run(c, judge_all("x", 2, lambda a, b, order: 0))
    assert out.num_rows == 0 and not outcomes.to_pylist()[0]["all_tied"]


def test_duplicate_pairs_across_prefixes_are_kept_once() -> None:
    c = cands("x", ["62*3=186", "62*3=187"]) + cands("y", ["62*3=186", "62*3=187"])
    j = judge_all("x", 2, lambda a, b, o: 0) + judge_all("y", 2, lambda a, b, o: 0)
    out, outcomes = run(c, j)
    assert out.column("pair_id").to_pylist() == ["step/x/0-1"]
    assert [o["pair_id"] for o in outcomes.to_pylist()] == ["step/x/0-1", None]


def test_paper_style_renders_step_labels() -> None:
    c = cands("x", ["Step 2: good", "bad"], prefix_steps=["Step 1: first"])
    out, _ = run(c, judge_all("x", 2, lambda a, b, o: 0), style="paper")
    (pair,) = out.to_pylist()
    paper = get_style("paper")
    assert pair["prompt"] == paper.policy_prompt("(37+25)*3-8") + "Step 1: first\n\n"
    assert pair["chosen"] == "Step 2: good\n\n" and pair["rejected"] == "Step 2: bad\n\n"


def test_unknown_winner_or_prefix_is_an_error() -> None:
    c = cands("x", ["a", "b"])
    with pytest.raises(ValueError, match="winner 7 is not one of its candidates"):
        run(c, judge_all("x", 2, lambda a, b, o: 7))
    with pytest.raises(ValueError, match="prefix_id 'zz'"):
        run(c, judge_all("zz", 2, lambda a, b, o: 0))


def test_step_pairs_are_deterministic_and_order_independent() -> None:
    c = cands("x", ["62*3=187", "62*3=186", "26*3=78"]) + cands("y", ["62*3=186", "1"])
    j = judge_all("x", 3, lambda a, b, o: min(a, b)) + judge_all("y", 2, lambda a, b, o: 0)
    out1, oc1 = run(c, j)
    out2, oc2 = run(list(reversed(c)), list(reversed(j)))
    assert out1.equals(out2) and oc1.equals(oc2)
