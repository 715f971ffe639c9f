"""Reference solutions of real datasets cut into steps, for paper-style policy SFT ("Step n: ...").

The rules, kept simple on purpose:
- MATH / NuminaMath `solution`: one step per paragraph (blank-line separated). A solution written
  as a single paragraph (70% of MATH-500) is cut into sentences instead: after `.`, `!` or `?`
  followed by whitespace and a capital letter. Neither cut is made inside math or a figure
  (`$...$`, `$$...$$`, `\\[...\\]`, `\\(...\\)`, `\\begin{..}...\\end{..}`, `[asy]...[/asy]`), so a
  display equation or an Asymptote block stays in one step.
- Everything from the first step holding `\\boxed{` to the end becomes the last step: the search
  stops a solution at its first boxed step (PaperStyle.is_final_step), so SFT solutions must end
  there too, and nothing written after it is dropped.
- Blank lines inside a step become single newlines: a blank line is the paper style's step
  separator (and the search's stop string), so a step must not contain one.
- A solution without `\\boxed{` has no final step the search would recognise: it yields None.
- GSM8K `answer` ("...\\n#### 18"): one step per line, calculator annotations `<<16-3=13>>`
  removed, and the last step ends with "The answer is \\boxed{18}." (no `$`: GSM8K writes
  dollar amounts with bare `$`, which would pair with a math delimiter).
"""

from __future__ import annotations

import re

_MATH_OPEN = re.compile(r"\$\$|\$|\\\[|\\\(|\[asy\]|\\begin\{([^}]*)\}")
_CLOSERS = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)", "[asy]": "[/asy]"}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_BREAK = re.compile(r"[.!?]\s+(?=[A-Z])")
_BLANK_LINES = re.compile(r"\n\s*\n")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
BOXED = "\\boxed{"


def _find_closer(text: str, closer: str, start: int) -> int:
    """Index just past `closer` (a `$` preceded by a backslash is a literal dollar); len(text)
    when the span is never closed, so an unbalanced formula protects the rest of the text."""
    pos = start
    while True:
        found = text.find(closer, pos)
        if found < 0:
            return len(text)
        if closer.startswith("$") and found > 0 and text[found - 1] == "\\":
            pos = found + 1
            continue
        return found + len(closer)


def math_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of every formula, environment and figure, outermost only."""
    spans = []
    i = 0
    while i < len(text):
        if text.startswith("\\$", i):  # an escaped dollar opens nothing
            i += 2
            continue
        m = _MATH_OPEN.match(text, i)
        if m is None:
            i += 1
            continue
        opener = m.group(0)
        closer = f"\\end{{{m.group(1)}}}" if m.group(1) is not None else _CLOSERS[opener]
        end = _find_closer(text, closer, m.end())
        spans.append((i, end))
        i = end
    return spans


def _cuts(text: str, pattern: re.Pattern[str], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(end of the piece before, start of the piece after) for each match outside every span."""
    cuts = []
    for m in pattern.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        # A sentence break keeps its punctuation in the sentence before.
        before = m.start() + (1 if pattern is _SENTENCE_BREAK else 0)
        cuts.append((before, m.end()))
    return cuts


def _pieces(text: str, cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for end, nxt in cuts:
        bounds.append((start, end))
        start = nxt
    bounds.append((start, len(text)))
    return [(a, b) for a, b in bounds if text[a:b].strip()]


def _clean(step: str) -> str:
    return _BLANK_LINES.sub("\n", step.strip())


def solution_steps(solution: str) -> list[str] | None:
    """A MATH-style solution as steps (see the module docstring); None without a \\boxed answer."""
    spans = math_spans(solution)
    pieces = _pieces(solution, _cuts(solution, _PARAGRAPH_BREAK, spans))
    if len(pieces) == 1:
        pieces = _pieces(solution, _cuts(solution, _SENTENCE_BREAK, spans))
    first_final = next((k for k, (a, b) in enumerate(pieces) if BOXED in solution[a:b]), None)
    if first_final is None:
        return None
    kept = pieces[:first_final] + [(pieces[first_final][0], len(solution))]
    return [_clean(solution[a:b]) for a, b in kept]


def gsm8k_steps(answer_text: str) -> list[str] | None:
    """GSM8K's `answer` field (worked lines, then `#### <answer>`) as steps; None without `####`
    or without any worked line."""
    if "####" not in answer_text:
        return None
    body, final = answer_text.rsplit("####", 1)
    final = final.strip()
    lines = [_CALCULATOR.sub("", line).strip() for line in body.splitlines()]
    lines = [line for line in lines if line]
    if not lines or not final:
        return None
    lines[-1] = f"{lines[-1]} The answer is {BOXED}{final}}}."
    return lines
