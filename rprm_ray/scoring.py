"""R-PRM step rewards (method_spec.md A6): P(Yes) at a critique's verdict position, step scores
over K critiques, and solution scores aggregated over steps.

Missing values: a critique without a usable P(Yes) and a step without a valid critique carry
`None`. Everywhere in scoring and evaluation a missing step score means "no evidence of an
error": `aggregate` skips it, ProcessBench never predicts it as the first error, PRMBench labels it
correct. Evaluation reports how many steps were missing so a judge that fails to answer cannot hide
behind this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pyarrow as pa

# Must equal rprm_ray.prompts.VERDICT_PREFIX (a unit test checks it); kept here so scoring does
# not depend on the prompt module.
VERDICT_PREFIX = "Verification: Is the step correct (Yes/No)?"

StepScoreMode = Literal["p_yes", "yes_fraction"]
Aggregation = Literal["min", "last", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("min", "last", "prod", "mean")
STEP_SCORE_MODES: tuple[str, ...] = ("p_yes", "yes_fraction")


def _verdict_position(tokens: Sequence[str]) -> tuple[int, str] | None:
    """Index of the first generated token after VERDICT_PREFIX + optional whitespace, and the part
    of that token which still belongs to the prefix (non-empty only if the token straddles it)."""
    text = "".join(tokens)
    found = text.find(VERDICT_PREFIX)
    if found < 0:
        return None
    prefix_end = found + len(VERDICT_PREFIX)
    start = 0
    for i, tok in enumerate(tokens):
        end = start + len(tok)
        if end > prefix_end:
            overlap = text[start:prefix_end] if start < prefix_end else ""
            # Whitespace-only tokens between the prefix and the word are skipped: the verdict is
            # decided at the token that carries the word (" Yes" on Qwen, "Y" char-level).
            if tok[len(overlap) :].strip():
                return i, overlap
        start = end
    return None


def _alternative_mass(candidates: dict[str, float], overlap: str, word: str) -> float:
    mass = 0.0
    for tok, logprob in candidates.items():
        # A NaN or positive-infinite log-prob (a broken engine) is no evidence; it must not turn
        # P(Yes) into NaN. A log-prob is at most 0 (rounding can push one just above).
        if logprob is None or math.isnan(logprob) or logprob == math.inf or not tok.startswith(overlap):
            continue
        stripped = tok[len(overlap) :].strip()
        if stripped and word.startswith(stripped):
            mass += math.exp(min(logprob, 0.0))
    return mass


def p_yes_from_top_logprobs(
    tokens: Sequence[str], top_logprobs: Sequence[dict[str, float] | None]
) -> float | None:
    """Two-way softmax P(Yes) / (P(Yes) + P(No)) at the verdict position of one critique.

    `tokens` are the decoded generated tokens; `top_logprobs[i]` maps decoded candidate tokens at
    position i to their log-probs. A candidate counts for Yes (No) when its stripped text is a
    non-empty prefix of "Yes" ("No"): " Yes" (Qwen) and "Y" (char-level) both do. Returns None when
    the critique has no verdict position or neither alternative is among the candidates there.
    """
    if len(top_logprobs) < len(tokens):
        raise ValueError(f"top_logprobs has {len(top_logprobs)} positions for {len(tokens)} tokens")
    pos = _verdict_position(tokens)
    if pos is None:
        return None
    index, overlap = pos
    candidates = dict(top_logprobs[index] or {})
    # The sampled token may be missing from the top-k dict on some engines; its own log-prob is
    # unknown then, so only the listed alternatives count.
    yes = _alternative_mass(candidates, overlap, "Yes")
    no = _alternative_mass(candidates, overlap, "No")
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


def step_score(
    p_yes_values: Sequence[float | None], verdicts: Sequence[str | None], mode: StepScoreMode = "p_yes"
) -> float | None:
    """Score of one step from its K critiques (verdict None = invalid critique, ignored).

    "p_yes": mean of the non-null P(Yes) of the valid critiques (R-PRM's reward).
    "yes_fraction": fraction of valid critiques whose verdict is Yes.
    None when no valid critique (or, for "p_yes", no valid critique with a P(Yes)).
    """
    if len(p_yes_values) != len(verdicts):
        raise ValueError(f"{len(p_yes_values)} P(Yes) values for {len(verdicts)} verdicts")
    valid = [(p, v) for p, v in zip(p_yes_values, verdicts, strict=True) if v is not None]
    if mode == "p_yes":
        values = [p for p, _ in valid if p is not None]
        return sum(values) / len(values) if values else None
    if mode == "yes_fraction":
        return sum(v == "Yes" for _, v in valid) / len(valid) if valid else None
    raise ValueError(f"step score mode must be one of {STEP_SCORE_MODES}, got {mode!r}")


def aggregate(step_scores: Sequence[float | None], how: Aggregation) -> float | None:
    """Solution score from its step scores: min / last / prod / mean over the steps that have a
    score (a missing step is no evidence of an error, so it is skipped; "last" is the last scored
    step). None when no step has a score."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    scores = [s for s in step_scores if s is not None]
    if not scores:
        return None
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "prod":
        return math.prod(scores)
    return sum(scores) / len(scores)


def scores_by_solution(step_scores: pa.Table) -> dict[str, list[float | None]]:
    """`step_scores` table -> {solution_id: [score of step 0, step 1, ...]}; a step absent from the
    table (never judged) is None."""
    from rprm_ray.batches import validate

    step_scores = validate(step_scores, "step_scores", where="scores_by_solution")
    by_solution: dict[str, dict[int, float | None]] = {}
    for row in step_scores.to_pylist():
        by_solution.setdefault(row["solution_id"], {})[row["step_idx"]] = row["score"]
    out: dict[str, list[float | None]] = {}
    for solution_id, steps in by_solution.items():
        out[solution_id] = [steps.get(i) for i in range(max(steps) + 1)]
    return out
