"""The judge's HTTP protocol, without Ray: request validation, requests to `labeled_steps` rows,
judged rows back to response bodies. `actors/judge_http.py` serves it; `rprm_ray.client` calls it.

Routes:
- `POST /v1/score` {"question": str, "steps": [str], "k": int (optional)} ->
  {"step_scores": [float | null], "critiques": [[str]], "verdicts": [[str | null]]}: one score per
  step (mean P(Yes) of its valid critiques; null when none was valid), and each step's K critiques
  and their parsed verdicts ("Yes" / "No", null for an invalid critique).
- `POST /get_reward` {"query": [full text, ...]} -> {"rewards": [float | null]} (OpenRLHF's remote
  reward model): each text is a policy prompt followed by its solution, split back into question
  and steps by the prompt style, and its step scores are aggregated by `search.aggregation`.
- `GET /healthz` -> {"status": "ok", ...}.

Every bad request is answered with a 4xx and {"error": one line}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

    from rprm_ray.prompts import PromptStyle

# Bounds that keep one request from occupying a replica for minutes; larger jobs belong to
# `rprm-ray eval --judge` or the pipeline.
MAX_STEPS_PER_REQUEST = 256
MAX_TEXTS_PER_REQUEST = 256
MAX_K = 64


class RequestError(ValueError):
    """A request the judge cannot serve; the message is the one line the client sees."""


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    steps: list[str] = Field(min_length=1, max_length=MAX_STEPS_PER_REQUEST)
    k: int | None = Field(None, ge=1, le=MAX_K)


class RewardRequest(BaseModel):
    # OpenRLHF also sends "prompts" and "labels"; the full texts carry everything the judge reads.
    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1, max_length=MAX_TEXTS_PER_REQUEST)


def parse_body(body: bytes, model: type[BaseModel]) -> Any:
    """The request body as `model`, or RequestError naming the first bad field."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(data, dict):
        raise RequestError(f"request body must be a JSON object, got {type(data).__name__}")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        raise RequestError(_one_line(exc)) from None
    if isinstance(request, ScoreRequest):
        for i, step in enumerate(request.steps):
            if not step.strip():
                raise RequestError(f"field 'steps'[{i}]: a step must not be empty")
    return request


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(err["loc"]))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "missing field"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"field '{where}': {msg}{more}"


# --------------------------------------------------------------------------------------------
# Requests -> labeled_steps


def labeled_step_rows(solution_id: str, question: str, steps: Sequence[str]) -> list[dict[str, Any]]:
    """One `labeled_steps` row per step of one solution (no label: the judge is asked, not tested)."""
    return [
        {
            "problem_id": solution_id,
            "solution_id": solution_id,
            "step_idx": i,
            "question": question,
            "previous_steps": list(steps[:i]),
            "now_step": step,
            "label": None,
        }
        for i, step in enumerate(steps)
    ]


# Chat-template markers (`<|im_start|>assistant`, `<|start_header_id|>user<|end_header_id|>`,
# `<|eot_id|>`, `</s>`, ...): a full text from an RL trainer may carry them around the prompt and
# after the solution; neither they nor the role name they open are part of the question or a step.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>(?:(?:system|user|assistant)(?=\s|<))?|</s>|<s>")
_PAPER_QUESTION = re.compile(r"Problem:[ \t]*")
_STEP_START = re.compile(r"(?m)^[ \t]*Step\s+1\s*:")


def split_full_text(style: PromptStyle, text: str) -> tuple[str, list[str]]:
    """(question, steps) of a policy prompt followed by its solution, in `style`'s format.

    compact: `Q:<question>\\n<step>\\n<step>\\n...`; paper: the R-PRM policy prompt, whose
    `Problem: <question>` runs up to the solution's `Step 1:` line. Raises RequestError when the
    text does not have that shape or has no step."""
    clean = _SPECIAL_TOKEN.sub("\n", text)
    if style.name == "compact":
        start = clean.find("Q:")
        if start < 0:
            raise RequestError("no 'Q:' line (the compact style's prompt)")
        question, _, solution = clean[start + 2 :].partition("\n")
    elif style.name == "paper":
        found = _PAPER_QUESTION.search(clean)
        if found is None:
            raise RequestError("no 'Problem:' line (the paper style's policy prompt)")
        rest = clean[found.end() :]
        first_step = _STEP_START.search(rest)
        if first_step is None:
            raise RequestError("no 'Step 1:' line after the problem")
        question, solution = rest[: first_step.start()], rest[first_step.start() :]
    else:
        raise RequestError(f"prompt style {style.name!r} has no full-text format")
    question = question.strip()
    steps = style.split_steps(solution)
    if not question:
        raise RequestError("empty question")
    if not steps:
        raise RequestError("no steps after the question")
    if len(steps) > MAX_STEPS_PER_REQUEST:
        raise RequestError(f"{len(steps)} steps; at most {MAX_STEPS_PER_REQUEST} per text")
    return question, steps


# --------------------------------------------------------------------------------------------
# Judged rows -> responses


def score_response(critiques: pa.Table, step_scores: pa.Table, num_steps: int) -> dict[str, Any]:
    """`/v1/score`'s body from one solution's judged tables (rows in step order)."""
    scores: list[float | None] = [None] * num_steps
    for row in step_scores.select(["step_idx", "score"]).to_pylist():
        scores[row["step_idx"]] = row["score"]
    texts: list[list[str]] = [[] for _ in range(num_steps)]
    verdicts: list[list[str | None]] = [[] for _ in range(num_steps)]
    for row in critiques.select(["step_idx", "sample_idx", "critique", "verdict", "valid"]).to_pylist():
        texts[row["step_idx"]].append(row["critique"])
        verdicts[row["step_idx"]].append(row["verdict"] if row["valid"] else None)
    return {"step_scores": scores, "critiques": texts, "verdicts": verdicts}


def rewards(step_scores: pa.Table, solution_ids: Sequence[str], aggregation: str) -> list[float | None]:
    """One reward per solution: its step scores aggregated (scoring.aggregate); null when no step
    got a valid critique."""
    from rprm_ray.scoring import aggregate, scores_by_solution

    by_solution = scores_by_solution(step_scores) if step_scores.num_rows else {}
    return [aggregate(by_solution.get(sid, []), aggregation) for sid in solution_ids]
