"""Preference pairs and the judge's SFT filter: pure logic behind the PairBuilder actor.

- `critique_pairs` (R-PRM, method_spec A5): per labeled step, critiques whose verdict agrees with
  the label are chosen, valid critiques with the opposite verdict are rejected.
- `step_pairs` (PSRLM, B6): per prefix, candidate steps ranked by pairwise wins; (best, worst)
  becomes a step-level pair; an all-tied prefix gives no pair and asks for a rollback.
- `without_unsound_chosen`: drops agreeing critiques that reach the label's verdict through a
  comparison their own lines contradict, so they are never chosen.
- `sft_filter` (R-PRM seed data, A3): the last consistent critique per step, Yes/No 1:1.

Everything is deterministic given the seed, and pair ids are built from row ids, so a retried
stage produces the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from itertools import product

import pyarrow as pa

from rprm_ray.batches import from_rows, validate
from rprm_ray.prompts import PromptStyle, get_style, parse_verdict

# One row per prefix judged by `step_pairs`. `candidate_ids` and `wins` are aligned.
# `best_candidate`/`worst_candidate`: most/fewest wins, lowest candidate_id first among equals
# (like R-PRM's strict `>` argmax). `all_tied`: every candidate has the same wins (no pair; PSRLM
# rolls back). `num_position_inconsistent`: unordered pairs judged validly in both orders whose
# winner flipped with the order. `pair_id` is null when the prefix gave no pair.
STEP_OUTCOMES_SCHEMA = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("prefix_id", pa.string(), nullable=False),
        pa.field("candidate_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("wins", pa.list_(pa.int32()), nullable=False),
        pa.field("best_candidate", pa.int32(), nullable=False),
        pa.field("worst_candidate", pa.int32(), nullable=False),
        pa.field("best_step", pa.string(), nullable=False),
        pa.field("best_finished", pa.bool_(), nullable=False),
        pa.field("all_tied", pa.bool_(), nullable=False),
        pa.field("num_judgments", pa.int32(), nullable=False),
        pa.field("num_invalid", pa.int32(), nullable=False),
        pa.field("num_position_inconsistent", pa.int32(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=True),
    ]
)


def _style(style: str | PromptStyle) -> PromptStyle:
    return get_style(style) if isinstance(style, str) else style


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def _dedup(rows: Iterable[dict]) -> list[dict]:
    """Drop pairs whose (prompt, chosen, rejected) was already seen; rows are visited by pair_id
    so which copy survives does not depend on input order."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in sorted(rows, key=lambda r: r["pair_id"]):
        key = (r["prompt"], r["chosen"], r["rejected"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _balance(rows: list[dict], key: str, rng: random.Random) -> list[dict]:
    """Shuffle each group of `key` and truncate the groups to the same length (1:1). A missing
    group therefore empties the result, as in R-PRM's balancing scripts."""
    groups: dict[str, list[dict]] = {"Yes": [], "No": []}
    for r in rows:
        groups[r[key]].append(r)
    n = min(len(g) for g in groups.values())
    kept = []
    for value in ("Yes", "No"):
        g = sorted(groups[value], key=lambda r: r["_id"])
        rng.shuffle(g)
        kept.extend(g[:n])
    return kept


def _steps_of(critiques: pa.Table) -> dict[tuple[str, int], list[dict]]:
    """Labeled critique rows grouped by (solution_id, step_idx), each group by sample_idx."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in critiques.to_pylist():
        if r["label"] is None:
            continue
        groups.setdefault((r["solution_id"], r["step_idx"]), []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r["sample_idx"])
    return groups


def critique_pairs(
    critiques: pa.Table,
    max_pairs_per_step: int = 4,
    balance_verdicts: bool = True,
    paper_filter: bool = False,
    seed: int = 42,
) -> pa.Table:
    """R-PRM DPO pairs (kind "critique") from K critiques per labeled step.

    Per step: chosen = valid critiques with the label's verdict (Yes for a correct step),
    rejected = valid critiques with the other verdict (validity and the verdict are re-read from
    the critique text with `parse_verdict`); pairs = chosen x rejected, de-duplicated.
    paper_filter (R-PRM's --filter): keep the first 2 pairs when valid < 3 * |chosen|, else drop
    the step. Then at most `max_pairs_per_step` pairs, sampled with the seed. balance_verdicts:
    Yes-chosen and No-chosen pairs truncated to 1:1 (seeded shuffle). Unlabeled rows are ignored.
    """
    critiques = validate(critiques, "critiques", where="critique_pairs")
    rows: list[dict] = []
    for (solution_id, step_idx), group in sorted(_steps_of(critiques).items()):
        target = "Yes" if group[0]["label"] else "No"
        valid = [(r, parse_verdict(r["critique"])) for r in group]
        valid = [(r, v) for r, v in valid if v is not None]
        chosen = _unique_texts(r for r, v in valid if v == target)
        rejected = _unique_texts(r for r, v in valid if v != target)
        combos = list(product(chosen, rejected))
        if paper_filter:
            combos = combos[:2] if len(valid) < 3 * len(chosen) else []
        if len(combos) > max_pairs_per_step:
            combos = _rng(seed, solution_id, step_idx).sample(combos, max_pairs_per_step)
        for c, r in combos:
            rows.append(
                {
                    "pair_id": f"critique/{solution_id}/{step_idx}/{c['sample_idx']}-{r['sample_idx']}",
                    "kind": "critique",
                    "problem_id": c["problem_id"],
                    "prompt": c["prompt"],
                    "chosen": c["critique"],
                    "rejected": r["critique"],
                    "verdict": target,
                }
            )
    rows = _dedup(rows)
    if balance_verdicts:
        for r in rows:
            r["_id"] = r["pair_id"]
        rows = _balance(rows, "verdict", _rng(seed, "balance-pairs"))
    rows.sort(key=lambda r: r["pair_id"])
    return from_rows([_drop_private(r, "verdict", "_id") for r in rows], "preference_pairs")


def without_unsound_chosen(critiques: pa.Table, is_sound: Callable[[str], bool]) -> tuple[pa.Table, int]:
    """`critiques` less those whose verdict agrees with their step's label but that are not sound
    (`is_sound`: the critique reaches its verdict by its own stated comparison, e.g.
    `arith_teacher.critique_is_sound`), and how many were dropped. `critique_pairs` on the result
    takes chosen critiques only among sound ones; a disagreeing critique stays a rejected one
    whatever its lines say. Unlabeled rows are kept (they make no pairs)."""
    critiques = validate(critiques, "critiques", where="without_unsound_chosen")
    keep = []
    for label, text in zip(critiques.column("label").to_pylist(), critiques.column("critique").to_pylist(),
                           strict=True):
        agrees = label is not None and parse_verdict(text) == ("Yes" if label else "No")
        keep.append(not agrees or is_sound(text))
    kept = critiques.filter(pa.array(keep, pa.bool_()))
    return kept, critiques.num_rows - kept.num_rows


def _unique_texts(rows: Iterable[dict]) -> list[dict]:
    """First critique (lowest sample_idx) of each distinct text: identical samples would only
    repeat the same pair."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["critique"] not in seen:
            seen.add(r["critique"])
            out.append(r)
    return out


def _drop_private(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def sft_filter(critiques: pa.Table, seed: int = 42, balance: bool = True) -> pa.Table:
    """R-PRM seed SFT data (method_spec A3) as `sft_examples` (kind "judge"): per labeled step the
    last consistent critique (valid, verdict = label's; highest sample_idx); steps without one
    are dropped; balance=True truncates Yes- and No-target examples to 1:1 (seeded shuffle)."""
    critiques = validate(critiques, "critiques", where="sft_filter")
    rows = []
    for (solution_id, step_idx), group in sorted(_steps_of(critiques).items()):
        target = "Yes" if group[0]["label"] else "No"
        consistent = [r for r in group if parse_verdict(r["critique"]) == target]
        if not consistent:
            continue
        last = consistent[-1]
        rows.append(
            {
                "example_id": f"judge/{solution_id}/{step_idx}",
                "kind": "judge",
                "prompt": last["prompt"],
                "completion": last["critique"],
                "verdict": target,
                "_id": f"{solution_id}/{step_idx}",
            }
        )
    if balance:
        rows = _balance(rows, "verdict", _rng(seed, "balance-sft"))
    rows.sort(key=lambda r: r["example_id"])
    return from_rows([_drop_private(r, "verdict", "_id") for r in rows], "sft_examples")


def step_pairs(
    candidates: pa.Table, pairwise_judgments: pa.Table, style: str | PromptStyle = "compact"
) -> tuple[pa.Table, pa.Table]:
    """PSRLM step-level pairs (kind "step") and one outcome row per prefix (STEP_OUTCOMES_SCHEMA).

    Score of a candidate = its wins over valid pairwise judgments, both orders counted
    (method_spec B6 eq. 2 read literally). (best, worst) becomes a pair: prompt = the shared
    prefix rendered by `style`, chosen/rejected = the single step + the step separator. No pair
    when all candidates tie (the driver may roll back) or when best and worst are the same text.
    """
    candidates = validate(candidates, "candidates", where="step_pairs")
    pairwise_judgments = validate(pairwise_judgments, "pairwise_judgments", where="step_pairs")
    st = _style(style)
    by_prefix: dict[str, list[dict]] = {}
    for r in candidates.to_pylist():
        by_prefix.setdefault(r["prefix_id"], []).append(r)
    judged: dict[str, list[dict]] = {}
    for r in pairwise_judgments.to_pylist():
        judged.setdefault(r["prefix_id"], []).append(r)
    unknown = sorted(set(judged) - set(by_prefix))
    if unknown:
        raise ValueError(
            f"step_pairs: pairwise_judgments name prefix_id {unknown[0]!r}, absent from candidates"
        )

    pairs, outcomes = [], []
    for prefix_id in sorted(by_prefix):
        cands = sorted(by_prefix[prefix_id], key=lambda r: r["candidate_id"])
        ids = [c["candidate_id"] for c in cands]
        judgments = judged.get(prefix_id, [])
        wins = dict.fromkeys(ids, 0)
        invalid = 0
        by_pair: dict[frozenset[int], list[int]] = {}
        for j in judgments:
            if not j["valid"] or j["winner"] is None:
                invalid += 1
                continue
            if j["winner"] not in wins:
                raise ValueError(
                    f"step_pairs: prefix_id {prefix_id!r}: winner {j['winner']} is not one of its "
                    f"candidates {ids}"
                )
            wins[j["winner"]] += 1
            by_pair.setdefault(frozenset((j["candidate_a"], j["candidate_b"])), []).append(j["winner"])
        inconsistent = sum(1 for w in by_pair.values() if len(w) >= 2 and len(set(w)) > 1)
        best = min(ids, key=lambda i: (-wins[i], i))
        worst = min(ids, key=lambda i: (wins[i], i))
        all_tied = wins[best] == wins[worst]
        best_row = cands[ids.index(best)]
        worst_row = cands[ids.index(worst)]
        k = len(best_row["prefix_steps"])
        pair_id = None
        chosen = st.format_step(best_row["step"], k) + st.step_separator
        rejected = st.format_step(worst_row["step"], k) + st.step_separator
        if not all_tied and chosen != rejected:
            pair_id = f"step/{prefix_id}/{best}-{worst}"
            pairs.append(
                {
                    "pair_id": pair_id,
                    "kind": "step",
                    "problem_id": best_row["problem_id"],
                    "prompt": st.render_prefix(best_row["question"], list(best_row["prefix_steps"])),
                    "chosen": chosen,
                    "rejected": rejected,
                }
            )
        outcomes.append(
            {
                "problem_id": best_row["problem_id"],
                "prefix_id": prefix_id,
                "candidate_ids": ids,
                "wins": [wins[i] for i in ids],
                "best_candidate": best,
                "worst_candidate": worst,
                "best_step": best_row["step"],
                "best_finished": best_row["finished"],
                "all_tied": all_tied,
                "num_judgments": len(judgments),
                "num_invalid": invalid,
                "num_position_inconsistent": inconsistent,
                "pair_id": pair_id,
            }
        )
    kept = _dedup(pairs)
    kept_ids = {p["pair_id"] for p in kept}
    for o in outcomes:
        if o["pair_id"] is not None and o["pair_id"] not in kept_ids:
            o["pair_id"] = None  # an identical pair from another prefix was kept instead
    pairs_table = from_rows(kept, "preference_pairs")
    return pairs_table, pa.Table.from_pylist(outcomes, schema=STEP_OUTCOMES_SCHEMA)
