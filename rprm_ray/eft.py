"""PSRLM's pairwise judge (EFT) data for real datasets, written by the teacher (method_spec B3).

Candidate pairs come from the labeled training steps: two different next steps that follow the
same question and the same previous steps (every first step of a question shares the empty
prefix; deeper shared prefixes occur where solutions agree). A pair needs at least one step
labeled correct; pairs whose labels differ (one right, one wrong) come first, then pairs of two
correct steps, each kind in a seeded order.

The teacher judges every pair in both orders (A/B, then B/A) with the pairwise prompt. A pair
is kept only when both judgments carry exactly one verdict, pick the same step, and, where the
labels differ, pick the correct one (the paper keeps o1's verdicts that agree with its PRM and
survive a position swap). Each kept pair gives two SFT rows, one per order, whose completion is
the teacher's own judgment for that order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.prompts import PromptStyle, parse_pairwise


def candidate_pairs(steps: pa.Table, max_pairs: int, seed: int) -> list[dict[str, Any]]:
    """Up to `max_pairs` pairs of different next steps after one shared prefix (see module doc)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in steps.to_pylist():
        if r["label"] is None:
            continue
        key = (" ".join(r["question"].split()), tuple(r["previous_steps"]))
        g = groups.setdefault(key, {"problem_id": r["problem_id"], "question": r["question"],
                                    "prefix": list(r["previous_steps"]), "steps": {}})
        text = r["now_step"].strip()
        # A step labeled both ways by different solutions is ambiguous: leave it out.
        g["steps"][text] = r["label"] if g["steps"].get(text, r["label"]) == r["label"] else None
    mixed, agreeing = [], []
    for g in groups.values():
        labeled = sorted((t, lab) for t, lab in g["steps"].items() if lab is not None)
        for i, (a, la) in enumerate(labeled):
            for b, lb in labeled[i + 1:]:
                if not (la or lb):
                    continue  # two wrong steps: nothing worth judging
                pair = {"problem_id": g["problem_id"], "question": g["question"], "prefix": g["prefix"],
                        "step_a": a, "step_b": b, "label_a": la, "label_b": lb}
                (mixed if la != lb else agreeing).append(pair)
    rng = random.Random(seed)
    rng.shuffle(mixed)
    rng.shuffle(agreeing)
    return (mixed + agreeing)[:max_pairs]


def judged_examples(pairs: list[dict[str, Any]], style: PromptStyle,
                    judge: Callable[[list[str]], list[str]],
                    student_style: PromptStyle | None = None) -> tuple[pa.Table, dict[str, int]]:
    """Ask `judge` (prompts -> one judgment each, written in `style`: the teacher's) about every
    pair in both orders; keep the consistent, label-agreeing ones as `sft_examples` rows, whose
    prompts are written in `student_style` (the policy's chat template; default `style`).
    Returns the rows and counts."""
    if style.recompute_first:
        # Such a judge is shown the steps only after its own first line: a one-call judge cannot.
        raise ValueError(f"PSRLM pairwise examples from a teacher need a style that shows both steps in the "
                         f"prompt; {style.name!r} writes its own step first (its programmatic teacher writes them)")
    prompts = []
    for p in pairs:
        prompts.append(style.pairwise_prompt(p["question"], p["prefix"], p["step_a"], p["step_b"]))
        prompts.append(style.pairwise_prompt(p["question"], p["prefix"], p["step_b"], p["step_a"]))
    texts = judge(prompts) if prompts else []
    if len(texts) != len(prompts):
        raise ValueError(f"pairwise judge returned {len(texts)} judgments for {len(prompts)} prompts")
    rows: list[dict[str, Any]] = []
    counts = {"eft_pairs": len(pairs), "eft_unparsable": 0, "eft_inconsistent": 0, "eft_against_label": 0,
              "eft_kept_pairs": 0}
    for j, p in enumerate(pairs):
        ab, ba = texts[2 * j], texts[2 * j + 1]
        first, second = parse_pairwise(ab or ""), parse_pairwise(ba or "")
        if first is None or second is None:
            counts["eft_unparsable"] += 1
            continue
        winner_ab = p["step_a"] if first == "A" else p["step_b"]
        winner_ba = p["step_b"] if second == "A" else p["step_a"]
        if winner_ab != winner_ba:
            counts["eft_inconsistent"] += 1
            continue
        if p["label_a"] != p["label_b"]:
            right = p["step_a"] if p["label_a"] else p["step_b"]
            if winner_ab != right:
                counts["eft_against_label"] += 1
                continue
        counts["eft_kept_pairs"] += 1
        student = student_style or style
        for order, prompt, text in (
                ("AB", student.pairwise_prompt(p["question"], p["prefix"], p["step_a"], p["step_b"]), ab),
                ("BA", student.pairwise_prompt(p["question"], p["prefix"], p["step_b"], p["step_a"]), ba)):
            rows.append({"example_id": f"pairwise/{p['problem_id']}/{j}/{order}", "kind": "pairwise",
                         "prompt": prompt, "completion": text})
    table = batches.from_rows(rows, "sft_examples") if rows else batches.empty("sft_examples")
    return table, counts
