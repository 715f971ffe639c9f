"""The programmatic teacher of the arithmetic world: critiques and pairwise judgments in the
compact judge's format, always right (or, on request, wrong the way a weak judge is).

Separate from `arith.py` because it is a judge's output format, not the world: it changes
whenever the judge is taught to write differently (the measured reasons are at `_critique`),
while the problems, labels and injected errors it judges stay put.
"""

from __future__ import annotations

import random

from rprm_ray.prompts import verdict_line
from rprm_ray.tasks.arith import (
    STEP_RE,
    STYLE,
    claimed_parts,
    expected_next,
    expected_step,
    format_op_step,
    off_by_one,
)


def aligned_pairs(expected: str, claimed: str) -> str:
    """Expected and claimed value digit by digit, right-aligned (`_` pads the shorter): each pair
    side by side, then `=` if its two characters agree, else `x`:
    `aligned_pairs("116", "611") == "16x 11= 61x"`."""
    width = max(len(expected), len(claimed))
    pairs = zip(expected.rjust(width, "_"), claimed.rjust(width, "_"), strict=True)
    return " ".join(f"{a}{b}{'=' if a == b else 'x'}" for a, b in pairs)


def comparison_line(expected: tuple[str, str], claimed: tuple[str, str]) -> str:
    """The `C:` line's body: left operands, then results, each as `aligned_pairs`, joined by `|`."""
    return f"{aligned_pairs(expected[0], claimed[0])}|{aligned_pairs(expected[1], claimed[1])}"


def worked_digits(a: int, op: str, b: int) -> str | None:
    """`a op b` worked from the units digit up: for each digit what it combines, `=`, then the
    result digit and the carry (or borrow) it passes on. A sum or difference states both digits
    and the incoming carry (borrow): `worked_digits(122, "-", 65) == "2-5-0=71 2-6-1=51 1-0-1=00"`
    (57); a product each digit's product and the carry it adds:
    `worked_digits(86, "*", 7) == "6*7=42+0=24 8*7=56+4=06"` (602: the last carry leads). A
    difference below zero is worked as `b - a`. None for negative operands or a product without
    a one-digit factor."""
    if a < 0 or b < 0:
        return None
    if op == "*":
        a, b = (b, a) if b > 9 else (a, b)
        if b > 9:
            return None
        out, carry = [], 0
        for digit in reversed(str(a)):
            product, carry_in = int(digit) * b, carry
            carry, d = divmod(product + carry_in, 10)
            out.append(f"{digit}*{b}={product:02d}+{carry_in}={d}{carry}")
        return " ".join(out)
    if op == "-" and a < b:
        a, b = b, a
    width = max(len(str(a)), len(str(b)))
    out, carry = [], 0
    for x, y in zip(str(a)[::-1].ljust(width, "0"), str(b)[::-1].ljust(width, "0"), strict=True):
        carry_in = carry
        if op == "+":
            carry, d = divmod(int(x) + int(y) + carry_in, 10)
        else:
            d = int(x) - int(y) - carry_in
            carry, d = (1, d + 10) if d < 0 else (0, d)
        out.append(f"{x}{op}{y}{op}{carry_in}={d}{carry}")
    return " ".join(out)


def worked_step(step: str) -> str:
    """The judge's R line for an operation step: operands, the digit-by-digit work, `>`, then the
    result (`122-65=2-5-0=71 2-6-1=51 1-0-1=00>57`); any other step as it is. The result is the
    one given, so a critique that miscomputes (agree=False) states its wrong result after the
    right work."""
    m = STEP_RE.match(step.strip())
    if not m:
        return step
    work = worked_digits(int(m.group(1)), m.group(2), int(m.group(3)))
    return step if work is None else f"{m.group(1)}{m.group(2)}{m.group(3)}={work}>{m.group(4)}"


def unworked_step(r_line: str) -> str:
    """The step an R line states, without its work: `unworked_step("122-65=2-5-0=71 2-6-1=51
    1-0-1=00>57") == "122-65=57"` (the inverse of `worked_step`; other lines unchanged)."""
    line = r_line.strip()
    if ">" not in line or "=" not in line:
        return line
    return f"{line.split('=', 1)[0]}={line.rsplit('>', 1)[1]}"


def critique_is_sound(critique: str) -> bool:
    """Whether a compact critique follows from its own lines: its `C:` line is exactly the
    digit-pair comparison of its `R:` line's step (unworked) with the `N:` step, `V:` says `N`
    iff that line has an `x`, and the verdict line repeats `V:`. Whether the R line itself is
    right is not asked. Every teacher critique is sound; a sampled one can reach the label's
    verdict through a wrong comparison (`R:...>328` `N:320+6=326` marked `86=`): right for the
    wrong reason, never DPO's chosen under `pairs.sound_chosen_only`."""
    lines = critique.strip().split("\n")
    if len(lines) != 5:
        return False
    r, n, c, v, last = lines
    if not (r.startswith("R:") and n.startswith("N:") and c.startswith("C:") and v.startswith("V:")):
        return False
    expected, claimed = claimed_parts(unworked_step(r[2:])), claimed_parts(n[2:])
    pairs = comparison_line(expected, claimed)
    decision = "N" if "x" in pairs else "Y"
    return c[2:] == pairs and v[2:] == decision and last == verdict_line("No" if decision == "N" else "Yes")


def _critique(r_step: str, now_step: str, exp_left: str, exp_result: str, claimed: tuple[str, str],
              verdict: str) -> str:
    # Why this shape (measured with 0.5M-parameter judges): with `C:124|124 116|611` and the
    # verdict line right after it, a judge wrote R and C correctly yet P(Yes) stayed ~0.5 — it
    # must compare multi-digit numbers ~50 characters before the verdict. With digit pairs and a
    # `V:` line (no marks) it still decided V wrongly on 3/4 of correct answer steps. Here every
    # comparison is two adjacent characters followed by its mark (`=` / `x`), `V:<Y|N>` only
    # asks "is there an x", and the verdict line copies V.
    # The `N:` line is not written by the judge: the judging loop inserts it after the judge's R
    # line (STYLE.recompute_first), so R is computed without the claimed step in view.
    # The R line works an operation digit by digit (`worked_step`): written in one go, the judge's
    # results were right at 43% of the states where the policy's greedy step was wrong (the policy
    # and the judge fail on the same sums); worked, at 98% (measured on 1,024 training problems).
    # A product's digits also state `digit*multiplier=product+carry_in=`: with only each digit and
    # its carry, the judge rejected 58 of 189 right one-digit-multiplier products of the policy's
    # (its own tens digit was off); spelled out, 1 of 189, and greedy F1 rose from 81.0 to 92.4.
    # Sums and differences spell out each digit pair and carry the same way: with only each
    # digit and its carry (`106+51=70 50 10`), the demo's judge after its 1,500 SFT steps on one
    # host wrote 27 of 135 multi-digit sums and differences right (every product right, F1 25.3);
    # spelled out, all 300 of its R lines at held-out contexts (F1 99.75).
    pairs = comparison_line((exp_left, exp_result), claimed)
    return (f"R:{worked_step(r_step)}\n{STYLE.shown_step(now_step)}C:{pairs}\nV:{verdict[0]}\n"
            f"{verdict_line(verdict)}")


def teacher_verdict(question: str, previous_steps: list[str], now_step: str) -> str:
    """Yes iff `now_step` is the expected step given the previous steps as written."""
    return "Yes" if now_step.strip() == expected_step(question, list(previous_steps)) else "No"


def teacher_critique(
    question: str,
    previous_steps: list[str],
    now_step: str,
    *,
    agree: bool = True,
    rng: random.Random | None = None,
) -> str:
    """The compact critique: expected step, the step under judgment (`N:`), comparison line
    (expected|claimed left operand and result), the local decision `V:Y` / `V:N`, verdict line. With agree=False the critique reaches the wrong verdict the way a weak
    judge does: for a right step it miscomputes the expected result; for a wrong step it copies
    the claimed step instead of recomputing. `rng` picks the miscomputation (default: +1)."""
    exp = expected_next(question, list(previous_steps))
    claimed = claimed_parts(now_step)
    right = teacher_verdict(question, previous_steps, now_step)
    if agree:
        return _critique(exp.step or "-", now_step, exp.left, exp.result, claimed, right)
    if right == "No":
        # Copying the claimed step makes every comparison match: a confident, wrong Yes.
        return _critique(now_step.strip(), now_step, claimed[0], claimed[1], claimed, "Yes")
    result = int(exp.result)
    wrong = off_by_one(rng, result) if rng is not None else result + 1
    if exp.kind == "answer":
        r_step = STYLE.answer_step(wrong)
    else:
        m = STEP_RE.match(exp.step or "")
        assert m is not None
        r_step = format_op_step(int(m.group(1)), m.group(2), int(m.group(3)), wrong)
    return _critique(r_step, now_step, exp.left, str(wrong), claimed, "No")


def teacher_pairwise(
    question: str, previous_steps: list[str], step_a: str, step_b: str, *, agree: bool = True
) -> str | None:
    """Compact pairwise judgment, the pointwise critique's worked comparison made for two steps:
    the expected step worked digit by digit (`R:`), the two steps as the judging loop shows them
    (`a:` / `b:`, STYLE.shown_pair), then per step its marked comparison line and local decision
    (`Ca:` `Va:`, `Cb:` `Vb:`), then [[A]] or [[B]]: the step whose line has no `x`.

    Only a pair with exactly one right step has a teacher winner, and only when the comparison
    lines expose the wrong one (its left operand or result differs); otherwise None.
    agree=False names the wrong step the way a weak judge does: it copies that step into its R
    line, so every comparison of that step matches."""
    exp = expected_next(question, list(previous_steps))
    ok_a = step_a.strip() == exp.step
    ok_b = step_b.strip() == exp.step
    if ok_a == ok_b:
        return None
    winner = "A" if ok_a else "B"
    r_step, left, result = exp.step or "-", exp.left, exp.result
    if not agree:
        winner = "B" if winner == "A" else "A"
        r_step = (step_a if winner == "A" else step_b).strip()
        left, result = claimed_parts(r_step)
    # Why this shape (mirrors `_critique`): written with both steps in the prompt and its R line
    # in one go, the tiny self-judge picked the right step of its own pairs at chance (41% of
    # chosen steps right, 39% of rejected ones); the pointwise judge had copied the claimed step
    # into R the same way until it was shown the step only after R, with R worked digit by digit.
    lines, decisions = [], {}
    for letter, step in (("a", step_a), ("b", step_b)):
        claimed = claimed_parts(step)
        pairs = comparison_line((left, result), claimed)
        decisions[letter.upper()] = "N" if "x" in pairs else "Y"
        lines.append(f"C{letter}:{pairs}\nV{letter}:{decisions[letter.upper()]}")
    if decisions[winner] != "Y" or "N" not in decisions.values():
        return None
    return f"R:{worked_step(r_step)}\n{STYLE.shown_pair(step_a, step_b)}{lines[0]}\n{lines[1]}\n[[{winner}]]"

