"""Final-answer accuracy with `math-verify` on `\\boxed{}` answers: pass@1, maj@k, pass@k.

- pass@1: the first completion is correct;
- maj@k: the most frequent answer among the first k completions is correct (answers are grouped
  by math-verify equivalence; ties -> the answer that appeared first);
- pass@k: any of the first k completions is correct.

math-verify parses with sympy under a signal-based timeout; one pathological answer must not end a
run, so every parse / verify call is guarded: an error or timeout counts the answer as wrong and is
tallied (`num_parse_failures`, `num_grader_errors`). signal alarms only work on the main thread;
elsewhere (a threaded actor) timeouts are off and only the exception guard remains.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

_BOX_COMMANDS = re.compile(r"\\(?:boxed|fbox|framebox)\s*\{")
TIMEOUT_SECONDS = 5


def extract_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{...}` (or `\\fbox` / `\\framebox`), braces balanced; None if
    there is none or it is unterminated."""
    starts = [m.end() for m in _BOX_COMMANDS.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    content = text[start:i].strip()
                    if content:
                        return content
                    break
    return None


def _timeout() -> int | None:
    return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


class AnswerGrader:
    """Parses and compares answers with math-verify, never raising; counts what went wrong."""

    def __init__(self) -> None:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException

        self._parse_fn = parse
        self._verify_fn = verify
        self._errors: tuple[type[BaseException], ...] = (Exception, TimeoutException)
        self.num_parse_failures = 0
        self.num_grader_errors = 0

    def parse(self, answer: str) -> list[Any] | None:
        """Parsed answer, or None (counted) when math-verify cannot read it."""
        try:
            parsed = self._parse_fn(f"\\boxed{{{answer}}}", parsing_timeout=_timeout(), raise_on_error=True)
        except self._errors as exc:
            logger.debug("math-verify could not parse %r: %s", answer, exc)
            parsed = []
        if not parsed:
            self.num_parse_failures += 1
            return None
        return parsed

    def equal(self, gold: list[Any], predicted: list[Any]) -> bool:
        try:
            return bool(self._verify_fn(gold, predicted, timeout_seconds=_timeout(), raise_on_error=True))
        except self._errors as exc:
            logger.debug("math-verify failed to compare: %s", exc)
            self.num_grader_errors += 1
            return False


@dataclass(frozen=True)
class MathAccuracy:
    k: int
    num_problems: int
    pass_at_1: float  # percent
    maj_at_k: float
    pass_at_k: float
    num_no_answer: int  # completions without a \boxed{} answer
    num_parse_failures: int  # boxed answers (or references) math-verify could not parse
    num_grader_errors: int  # comparisons that raised or timed out

    def as_dict(self) -> dict:
        out = asdict(self)
        out["pass@1"] = out.pop("pass_at_1")
        out["maj@k"] = out.pop("maj_at_k")
        out["pass@k"] = out.pop("pass_at_k")
        return out


def _majority_answer(grader: AnswerGrader, parsed: Sequence[list[Any] | None]) -> list[Any] | None:
    clusters: list[tuple[list[Any], int]] = []  # representative, count; in order of appearance
    for answer in parsed:
        if answer is None:
            continue
        for j, (rep, count) in enumerate(clusters):
            if grader.equal(rep, answer):
                clusters[j] = (rep, count + 1)
                break
        else:
            clusters.append((answer, 1))
    if not clusters:
        return None
    return max(clusters, key=lambda c: c[1])[0]  # max keeps the earliest of equal counts


def math_accuracy(
    completions: Sequence[Sequence[str]], golds: Sequence[str], k: int | None = None
) -> MathAccuracy:
    """`completions[i]` are problem i's sampled completions (in order), `golds[i]` its reference
    answer. k defaults to the smallest number of completions any problem has."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completion lists for {len(golds)} reference answers")
    if not golds:
        raise ValueError("math accuracy: no problems")
    fewest = min(len(c) for c in completions)
    if fewest == 0:
        empty = next(i for i, c in enumerate(completions) if not c)
        raise ValueError(f"math accuracy: problem {empty} has no completions")
    k = fewest if k is None else k
    if not 1 <= k <= fewest:
        raise ValueError(f"math accuracy: k={k} but some problem has only {fewest} completions")
    grader = AnswerGrader()
    no_answer = 0
    pass1 = majk = passk = 0
    for problem_completions, gold_text in zip(completions, golds, strict=True):
        gold = grader.parse(gold_text)
        parsed = []
        for text in problem_completions[:k]:
            boxed = extract_boxed(text)
            if boxed is None:
                no_answer += 1
                parsed.append(None)
            else:
                parsed.append(grader.parse(boxed))
        if gold is None:
            continue  # an unreadable reference scores the problem wrong; counted as a parse failure
        correct = [p is not None and grader.equal(gold, p) for p in parsed]
        pass1 += correct[0]
        passk += any(correct)
        majority = _majority_answer(grader, parsed)
        majk += majority is not None and grader.equal(gold, majority)
    n = len(golds)
    return MathAccuracy(
        k=k,
        num_problems=n,
        pass_at_1=100.0 * pass1 / n,
        maj_at_k=100.0 * majk / n,
        pass_at_k=100.0 * passk / n,
        num_no_answer=no_answer,
        num_parse_failures=grader.num_parse_failures,
        num_grader_errors=grader.num_grader_errors,
    )
