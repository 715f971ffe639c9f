"""The process judge's core, without Ray: prompts from Arrow tables, engine completions to rows.

Pointwise (R-PRM): each labeled step gets K sampled critiques; a critique is valid only when
`parse_verdict` finds exactly one verdict line at its end, and its P(Yes) is the engine's top
log-probs at the verdict position, conditioned on the critique it wrote (`critiques_with_verdict`).
A step's score is the mean P(Yes) over its valid critiques (or their Yes fraction).

Pairwise (PSRLM): every unordered pair of candidates sharing a prefix is judged in both orders
(AB: `candidate_a` in slot A; BA: `candidate_b` in slot A) so position bias can be measured.

Invalid critiques and unparsable judgments become rows with `valid=False`; nothing here raises
on model output, only on malformed input tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from rprm_ray import batches
from rprm_ray.engines.base import Completion
from rprm_ray.prompts import VERDICT_PREFIX, as_text, parse_pairwise, parse_verdict
from rprm_ray.scoring import p_yes_from_top_logprobs, step_score

if TYPE_CHECKING:
    from rprm_ray.config import SamplingConfig

# Top-k log-probs to request at the verdict position: it needs both "Yes" and "No" among the
# candidates for P(Yes); k=5 keeps both for any judge that has learned the verdict line.
VERDICT_TOP_LOGPROBS = 5
# Tokens the verdict continuation may write after the verdict prefix: " Yes" and EOS take 5
# char-level tokens, 2 on Qwen; a longer tail makes the critique invalid anyway.
VERDICT_TAIL_TOKENS = 8

ScoreMode = Literal["p_yes", "yes_fraction"]
Order = Literal["AB", "BA"]


# ----------------------------------------------------------------------------------------------
# Pointwise R-PRM critiques


def judge_prompts(labeled_steps: pa.Table, style: Any, *, where: str = "judging") -> list[str]:
    """One judge prompt per `labeled_steps` row, in row order."""
    steps = batches.validate(labeled_steps, "labeled_steps", where=where)
    return [
        style.judge_prompt(row["question"], list(row["previous_steps"]), row["now_step"])
        for row in steps.to_pylist()
    ]


def critique_rows(
    labeled_steps: pa.Table,
    prompts: Sequence[str],
    completions_per_step: Sequence[Sequence[Any]],
    *,
    where: str = "judging",
) -> pa.Table:
    """`critiques` rows: for step row i, one row per completion in `completions_per_step[i]`
    (sample_idx = its position). Each completion needs `.text`, `.tokens` (decoded, one per
    generated token) and `.top_logprobs` (one `{token: logprob}` per generated token, or None
    when the engine was asked for no logprobs, in which case `p_yes` stays null)."""
    steps = batches.validate(labeled_steps, "labeled_steps", where=where).to_pylist()
    if not (len(steps) == len(prompts) == len(completions_per_step)):
        raise ValueError(
            f"{where}: {len(steps)} labeled_steps rows, {len(prompts)} prompts and "
            f"{len(completions_per_step)} completion lists must match one to one"
        )
    rows: list[dict[str, Any]] = []
    for step, prompt, completions in zip(steps, prompts, completions_per_step, strict=True):
        for sample_idx, completion in enumerate(completions):
            # Malformed text (not UTF-8) is kept, replaced, and counted invalid: never a crash.
            text, well_formed = as_text(completion.text)
            verdict = parse_verdict(text) if well_formed else None
            p_yes = None
            if verdict is not None and completion.top_logprobs is not None:
                p_yes = p_yes_from_top_logprobs(completion.tokens, completion.top_logprobs)
            rows.append(
                {
                    "problem_id": step["problem_id"],
                    "solution_id": step["solution_id"],
                    "step_idx": step["step_idx"],
                    "sample_idx": sample_idx,
                    "prompt": prompt,
                    "critique": text,
                    "verdict": verdict,
                    "valid": verdict is not None,
                    "p_yes": p_yes,
                    "label": step["label"],
                }
            )
    return batches.from_rows(rows, "critiques") if rows else batches.empty("critiques")


def critiques_with_verdict(
    engine: Any, prompts: Sequence[str], n: int, sampling: SamplingConfig
) -> list[list[Completion]]:
    """`n` critiques per prompt whose `top_logprobs` hold the verdict position only.

    Why two calls: asking vLLM for top-k log-probs at every generated token made decoding 2.5x
    slower (bench/logprobs_cost.py), and P(Yes) needs them at one position. So the
    critique is written without log-probs up to and including VERDICT_PREFIX, then continued for
    at most VERDICT_TAIL_TOKENS (within the same `max_new_tokens` budget) with them. The
    continuation's first tokens see the same text the single generation saw, so P(Yes) is the
    same distribution, read at the same place. A critique that never writes the prefix is left as
    it is: invalid."""
    heads = engine.generate(list(prompts), n=n, sampling=sampling, stop=[VERDICT_PREFIX], include_stop=True)
    flat = [(p, c) for p, outs in zip(prompts, heads, strict=True) for c in outs]
    # Continuations grouped by their remaining token budget: one engine call per budget.
    pending: dict[int, list[int]] = {}
    for i, (_, head) in enumerate(flat):
        left = sampling.max_new_tokens - len(head.token_ids)
        if head.finish_reason == "stop" and left > 0:
            pending.setdefault(min(left, VERDICT_TAIL_TOKENS), []).append(i)
    joined = [replace(head, top_logprobs=[{}] * len(head.tokens)) for _, head in flat]
    for budget, rows in pending.items():
        tail_sampling = sampling.model_copy(update={"max_new_tokens": budget})
        tails = engine.generate([flat[i][0] + flat[i][1].text for i in rows], n=1,
                                sampling=tail_sampling, logprobs=VERDICT_TOP_LOGPROBS)
        for i, (tail,) in zip(rows, tails, strict=True):
            head = flat[i][1]
            joined[i] = Completion(
                text=head.text + tail.text,
                token_ids=head.token_ids + tail.token_ids,
                cumulative_logprob=None,
                finish_reason=tail.finish_reason,
                tokens=head.tokens + tail.tokens,
                top_logprobs=[{}] * len(head.tokens) + list(tail.top_logprobs or []),
            )
    return [joined[i * n:(i + 1) * n] for i in range(len(prompts))]


def own_lines(engine: Any, prompts: Sequence[str], n: int, sampling: SamplingConfig) -> dict[str, list[Any]]:
    """A recompute-first judge's own first line, `n` samples per distinct context: shared by every
    step (or pair, in both orders) judged in that context."""
    contexts = list(dict.fromkeys(prompts))
    return dict(zip(contexts, engine.generate(contexts, n=n, sampling=sampling, stop=["\n"]), strict=True))


def greedy(sampling: SamplingConfig) -> SamplingConfig:
    """`sampling` at temperature 0: what follows the judge's own line is a deterministic check."""
    return sampling.model_copy(update={"temperature": 0.0, "top_p": 1.0})


def write_critiques(
    engine: Any,
    style: Any,
    labeled_steps: pa.Table,
    n: int,
    sampling: SamplingConfig,
    *,
    where: str = "judging",
) -> tuple[list[str], list[list[Any]]]:
    """(prompts, n critique completions per `labeled_steps` row), with the verdict position's top
    log-probs for P(Yes).

    One critique call when the style shows the step in the prompt. For `style.recompute_first`
    styles the judge first writes its own version of the step from the context alone (the first
    line, sampled with `sampling`; one call per distinct context, shared by every step judged in
    it), then is shown the step and writes the comparison and verdict greedily: the comparison is
    a deterministic check, so K critiques differ only in what the judge computed."""
    steps = batches.validate(labeled_steps, "labeled_steps", where=where)
    prompts = judge_prompts(steps, style, where=where)
    if not style.recompute_first:
        return prompts, critiques_with_verdict(engine, prompts, n, sampling)
    own = own_lines(engine, prompts, n, sampling)
    shown = [style.shown_step(row["now_step"]) for row in steps.to_pylist()]
    # Row-major: sample i of row r sits at r * n + i.
    heads = [(prompt, own[prompt][i].text + "\n" + step) for prompt, step in zip(prompts, shown, strict=True)
             for i in range(n)]
    tails = critiques_with_verdict(engine, [prompt + head for prompt, head in heads], 1, greedy(sampling))
    # The critique is the judge's line, the shown step and the rest; P(Yes) comes from the rest's
    # verdict continuation.
    joined = [replace(tail[0], text=head + tail[0].text) for (_, head), tail in zip(heads, tails, strict=True)]
    return prompts, [joined[i * n:(i + 1) * n] for i in range(len(prompts))]


def score_steps(
    engine: Any,
    style: Any,
    labeled_steps: pa.Table,
    k: int,
    sampling: SamplingConfig,
    score_mode: ScoreMode,
    *,
    where: str = "judging",
) -> tuple[pa.Table, pa.Table]:
    """Pointwise R-PRM on one engine: K critiques per `labeled_steps` row with their P(Yes),
    grouped into step scores. Returns (critiques, step_scores), both in row order. The one judging
    loop: the ProcessJudge replica and `rprm-ray eval --judge` call it."""
    steps = batches.validate(labeled_steps, "labeled_steps", where=where)
    # Greedy decoding gives K identical critiques: generate one and repeat it (vLLM also refuses
    # n > 1 without sampling).
    n = 1 if sampling.temperature == 0 else k
    prompts, completions = write_critiques(engine, style, steps, n, sampling, where=where)
    if n != k:
        completions = [outs * k for outs in completions]
    critiques = critique_rows(steps, prompts, completions, where=where)
    return critiques, step_score_rows(critiques, score_mode, where=where)


def step_score_rows(critiques: pa.Table, mode: ScoreMode, *, where: str = "judging") -> pa.Table:
    """Group `critiques` by (solution_id, step_idx) into a `step_scores` table, the one place
    that does so (the judge, its clients, evaluation stages).

    Rows come in order of first appearance, so they follow the caller's labeled_steps (the
    order does not change a score: `scoring.step_score` only averages). The score is
    `scoring.step_score` over the valid critiques, null when no critique of the step was valid
    (num_valid / num_invalid say why)."""
    table = batches.validate(critiques, "critiques", where=where)
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for row in table.to_pylist():
        key = (row["solution_id"], row["step_idx"])
        group = groups.setdefault(
            key, {"problem_id": row["problem_id"], "p_yes": [], "verdicts": [], "invalid": 0}
        )
        if row["valid"]:
            group["p_yes"].append(row["p_yes"])
            group["verdicts"].append(row["verdict"])
        else:
            group["invalid"] += 1
    rows = []
    for (solution_id, step_idx), group in groups.items():
        num_valid = len(group["verdicts"])
        score = step_score(group["p_yes"], group["verdicts"], mode) if num_valid else None
        rows.append(
            {
                "problem_id": group["problem_id"],
                "solution_id": solution_id,
                "step_idx": step_idx,
                "score": score,
                "num_valid": num_valid,
                "num_invalid": group["invalid"],
            }
        )
    return batches.from_rows(rows, "step_scores") if rows else batches.empty("step_scores")


@dataclass(frozen=True)
class CritiqueCounts:
    total: int
    valid: int

    @property
    def invalid(self) -> int:
        return self.total - self.valid


def critique_counts(critiques: pa.Table) -> CritiqueCounts:
    valid = sum(1 for v in critiques.column("valid").to_pylist() if v)
    return CritiqueCounts(total=critiques.num_rows, valid=valid)


# ----------------------------------------------------------------------------------------------
# Pairwise PSRLM judgments


@dataclass(frozen=True)
class PairwiseRequest:
    """One judge call: `candidate_a < candidate_b` name the unordered pair; `order` says which of
    them sits in slot A of the prompt."""

    problem_id: str
    prefix_id: str
    candidate_a: int
    candidate_b: int
    order: Order
    question: str
    prefix_steps: tuple[str, ...]
    slot_a_step: str
    slot_b_step: str

    def winner(self, verdict: str | None) -> int | None:
        """The candidate_id behind a parsed `[[A]]`/`[[B]]` verdict (None stays None)."""
        if verdict is None:
            return None
        in_slot_a = self.candidate_a if self.order == "AB" else self.candidate_b
        in_slot_b = self.candidate_b if self.order == "AB" else self.candidate_a
        return in_slot_a if verdict == "A" else in_slot_b


def pairwise_requests(candidates: pa.Table, *, where: str = "judging") -> list[PairwiseRequest]:
    """Every unordered pair of candidates with the same prefix_id, in both orders AB and BA.
    Prefixes keep their first-appearance order; pairs follow candidate_id order."""
    table = batches.validate(candidates, "candidates", where=where)
    by_prefix: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_prefix.setdefault(row["prefix_id"], []).append(row)
    requests: list[PairwiseRequest] = []
    for prefix_id, rows in by_prefix.items():
        _check_same_prefix(prefix_id, rows, where)
        rows = sorted(rows, key=lambda r: r["candidate_id"])
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                for order in ("AB", "BA"):
                    first, second = (a, b) if order == "AB" else (b, a)
                    requests.append(
                        PairwiseRequest(
                            problem_id=a["problem_id"],
                            prefix_id=prefix_id,
                            candidate_a=a["candidate_id"],
                            candidate_b=b["candidate_id"],
                            order=order,
                            question=a["question"],
                            prefix_steps=tuple(a["prefix_steps"]),
                            slot_a_step=first["step"],
                            slot_b_step=second["step"],
                        )
                    )
    return requests


def _check_same_prefix(prefix_id: str, rows: list[dict[str, Any]], where: str) -> None:
    # Candidates of one prefix are compared against one context; a mismatch means the caller
    # reused a prefix_id for two different prefixes, which would judge steps out of context.
    first = rows[0]
    for row in rows[1:]:
        for column in ("problem_id", "question", "prefix_steps"):
            if row[column] != first[column]:
                raise batches.BatchError(
                    f"{where}: candidates: column {column!r} differs between candidates "
                    f"{first['candidate_id']} and {row['candidate_id']} of prefix_id {prefix_id!r}"
                )


def pairwise_prompts(requests: Sequence[PairwiseRequest], style: Any) -> list[str]:
    return [
        style.pairwise_prompt(r.question, list(r.prefix_steps), r.slot_a_step, r.slot_b_step)
        for r in requests
    ]


def write_pairwise(
    engine: Any, style: Any, requests: Sequence[PairwiseRequest], sampling: SamplingConfig
) -> list[list[Any]]:
    """One judgment completion per request (a one-element list each, as `pairwise_rows` takes).

    One call when the style shows both steps in the prompt. For `style.recompute_first` styles
    the judge first writes its own version of the next step from the context alone (sampled with
    `sampling`; one line per distinct context, shared by every pair and both orders judged in
    it), then is shown the two steps (`style.shown_pair`) and writes its comparison and verdict
    greedily, as `write_critiques` does for one step. The judgment text is the judge's line, the
    shown steps and the rest."""
    prompts = pairwise_prompts(requests, style)
    if not prompts:
        return []
    if not style.recompute_first:
        return engine.generate(prompts, n=1, sampling=sampling)
    own = own_lines(engine, prompts, 1, sampling)
    heads = [own[prompt][0].text + "\n" + style.shown_pair(r.slot_a_step, r.slot_b_step)
             for prompt, r in zip(prompts, requests, strict=True)]
    tails = engine.generate([prompt + head for prompt, head in zip(prompts, heads, strict=True)], n=1,
                            sampling=greedy(sampling))
    return [[replace(tail[0], text=head + tail[0].text)] for head, tail in zip(heads, tails, strict=True)]


def pairwise_rows(
    requests: Sequence[PairwiseRequest], completions: Sequence[Sequence[Any]], *, where: str = "judging"
) -> pa.Table:
    """`pairwise_judgments` rows, one per request; `completions[i]` is the engine's list for
    request i (its first completion is the judgment)."""
    if len(requests) != len(completions):
        raise ValueError(
            f"{where}: {len(requests)} pairwise requests but {len(completions)} completion lists"
        )
    rows = []
    for request, outs in zip(requests, completions, strict=True):
        text, well_formed = as_text(outs[0].text) if outs else ("", False)
        verdict = parse_pairwise(text) if well_formed else None
        rows.append(
            {
                "problem_id": request.problem_id,
                "prefix_id": request.prefix_id,
                "candidate_a": request.candidate_a,
                "candidate_b": request.candidate_b,
                "order": request.order,
                "judgment": text,
                "winner": request.winner(verdict),
                "valid": verdict is not None,
            }
        )
    return batches.from_rows(rows, "pairwise_judgments") if rows else batches.empty("pairwise_judgments")


@dataclass(frozen=True)
class PairwiseCounts:
    judgments: int
    invalid: int
    # Pairs judged validly in both orders whose winner flipped with the order: position bias.
    position_inconsistent: int
    # Pairs judged validly in both orders (the denominator of the consistency rate).
    consistent_checked: int


def pairwise_counts(judgments: pa.Table) -> PairwiseCounts:
    table = batches.validate(judgments, "pairwise_judgments", where="pairwise_counts")
    winners: dict[tuple[str, int, int], dict[str, int | None]] = {}
    invalid = 0
    for row in table.to_pylist():
        if not row["valid"]:
            invalid += 1
        key = (row["prefix_id"], row["candidate_a"], row["candidate_b"])
        winners.setdefault(key, {})[row["order"]] = row["winner"] if row["valid"] else None
    checked = inconsistent = 0
    for by_order in winners.values():
        ab, ba = by_order.get("AB"), by_order.get("BA")
        if ab is None or ba is None:
            continue
        checked += 1
        inconsistent += ab != ba
    return PairwiseCounts(
        judgments=table.num_rows,
        invalid=invalid,
        position_inconsistent=inconsistent,
        consistent_checked=checked,
    )


def prefix_chunks(candidates: pa.Table, max_rows: int) -> list[pa.Table]:
    """Split `candidates` into chunks of about `max_rows` rows that never split a prefix (its
    candidates are compared with each other); a prefix larger than `max_rows` gets a chunk of its
    own. Rows keep their order within each prefix; prefixes keep first-appearance order."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    rows_by_prefix: dict[str, list[int]] = {}
    for i, prefix_id in enumerate(candidates.column("prefix_id").to_pylist()):
        rows_by_prefix.setdefault(prefix_id, []).append(i)
    chunks: list[list[int]] = [[]]
    for rows in rows_by_prefix.values():
        if chunks[-1] and len(chunks[-1]) + len(rows) > max_rows:
            chunks.append([])
        chunks[-1].extend(rows)
    return [candidates.take(pa.array(rows, pa.int64())) for rows in chunks if rows]
