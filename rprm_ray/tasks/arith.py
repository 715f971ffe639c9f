"""The embedded arithmetic world: seeded multi-step integer problems with exact step labels.

A problem is an expression such as `(37+25)*3-8`; its reference solution (compact style) is one
`a op b=c` step per operation in evaluation order (left to right, parentheses as written), then
`A:<answer>`. Because every step can be recomputed, the world provides what real benchmarks get
from humans: step labels, realistic wrong steps, and a programmatic teacher whose critiques and
pairwise judgments are always right (or, on request, deliberately wrong).

"Expected step" below always means the next step computed from the question and the previous
steps *as written*: after a wrong step, the expected continuation uses the wrong value. That keeps
each judgment local (is this step right given what came before?), which is what the tiny judge can
learn (ARCHITECTURE.md §2). `label_steps` compares with the reference solution instead; the two
agree on every step up to and including the first error, which is all a labeled solution contains.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import pyarrow as pa

from rprm_ray.batches import from_rows
from rprm_ray.config import TaskConfig
from rprm_ray.prompts import CompactStyle, verdict_line

STYLE = CompactStyle()
SOURCE = "arith"
_OPS = ("+", "-", "*")
_MAX_TRIES_PER_PROBLEM = 1000


@dataclass(frozen=True)
class ArithProblem:
    problem_id: str
    question: str
    steps: tuple[str, ...]  # reference solution, compact style, ending with the answer step
    answer: str


class InjectedError(NamedTuple):
    steps: list[str]  # a full solution whose first wrong step is `error_idx`
    error_idx: int
    kind: str  # off_by_one | wrong_operator | carried_error | digit_slip


# ---------------------------------------------------------------------------------------------
# Expressions


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}")


# An operand is ("lit", value) or ("ref", index of an earlier operation).
Operand = tuple[str, int]


@dataclass(frozen=True)
class Operation:
    op: str
    left: Operand
    right: Operand


@lru_cache(maxsize=65536)
def parse_expression(question: str) -> tuple[Operation, ...]:
    """The operations of an integer expression in evaluation order (post-order: left operand
    first; `*` binds tighter than `+`/`-`; parentheses as written). Raises ValueError."""
    tokens = re.findall(r"\d+|[+\-*()]|\S", question)
    ops: list[Operation] = []
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        return tok

    def factor() -> Operand:
        tok = peek()
        if tok is None:
            raise ValueError(f"expression {question!r}: unexpected end")
        if tok.isdigit():
            take()
            return ("lit", int(tok))
        if tok == "(":
            take()
            inner = expr()
            if peek() != ")":
                raise ValueError(f"expression {question!r}: missing ')'")
            take()
            return inner
        raise ValueError(f"expression {question!r}: unexpected {tok!r}")

    def binary(sub, allowed: tuple[str, ...]) -> Operand:
        left = sub()
        while peek() in allowed:
            op = take()
            right = sub()
            ops.append(Operation(op, left, right))
            left = ("ref", len(ops) - 1)
        return left

    def term() -> Operand:
        return binary(factor, ("*",))

    def expr() -> Operand:
        return binary(term, ("+", "-"))

    expr()
    if pos != len(tokens):
        raise ValueError(f"expression {question!r}: unexpected {tokens[pos]!r}")
    if not ops:
        raise ValueError(f"expression {question!r}: no operation")
    return tuple(ops)


_STEP_RE = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")
_ANSWER_RE = re.compile(r"^A:(-?\d+)$")


def format_op_step(a: int, op: str, b: int, c: int) -> str:
    return f"{a}{op}{b}={c}"


def _claimed_result(step: str) -> int | None:
    m = _STEP_RE.match(step.strip())
    return int(m.group(4)) if m else None


def _claimed_parts(step: str) -> tuple[str, str]:
    """(left operand, result) as the step states them, for the comparison line; "?" where the
    step does not say. The answer step's "left operand" is its marker `A`."""
    s = step.strip()
    m = _STEP_RE.match(s)
    if m:
        return m.group(1), m.group(4)
    m = _ANSWER_RE.match(s)
    if m:
        return "A", m.group(1)
    if s.startswith("A:"):
        return "A", "?"
    left = re.match(r"^-?\d+", s)
    result = re.search(r"=\s*(-?\d+)\s*$", s)
    return (left.group(0) if left else "?"), (result.group(1) if result else "?")


class _Expected(NamedTuple):
    step: str | None  # None: nothing may follow (the answer was given, or too many steps)
    left: str
    result: str
    kind: str  # "op" | "answer" | "none"
    values: list[int]  # the value of each earlier operation as written


def _expected(question: str, previous_steps: list[str]) -> _Expected:
    ops = parse_expression(question)
    values: list[int] = []

    def value(operand: Operand) -> int:
        kind, v = operand
        return v if kind == "lit" else values[v]

    for j, step in enumerate(previous_steps):
        if STYLE.is_final_step(step) or j >= len(ops):
            return _Expected(None, "-", "-", "none", values)
        o = ops[j]
        claimed = _claimed_result(step)
        # An unreadable earlier step carries no value; fall back to the right one so the
        # judgment of later steps stays local.
        values.append(claimed if claimed is not None else _apply(o.op, value(o.left), value(o.right)))
    k = len(previous_steps)
    if k == len(ops):
        final = values[-1]
        return _Expected(STYLE.answer_step(final), "A", str(final), "answer", values)
    o = ops[k]
    a, b = value(o.left), value(o.right)
    c = _apply(o.op, a, b)
    return _Expected(format_op_step(a, o.op, b, c), str(a), str(c), "op", values)


def expected_step(question: str, previous_steps: list[str]) -> str | None:
    """The correct next step given the previous steps as written; None when nothing may follow."""
    return _expected(question, list(previous_steps)).step


def solve(question: str) -> list[str]:
    """Reference solution of any expression this module can parse, answer step included."""
    values: list[int] = []
    steps: list[str] = []
    for o in parse_expression(question):
        a, b = (v if kind == "lit" else values[v] for kind, v in (o.left, o.right))
        values.append(_apply(o.op, a, b))
        steps.append(format_op_step(a, o.op, b, values[-1]))
    return [*steps, STYLE.answer_step(values[-1])]


# ---------------------------------------------------------------------------------------------
# Problem generation


def _render(start: int, chain: list[tuple[str, int]]) -> str:
    """`start op1 x1 op2 x2 ...` applied left to right, with parentheses only where `*` follows a
    top-level `+`/`-` (everything else already evaluates left to right)."""
    text, top = str(start), None
    for op, x in chain:
        if op == "*" and top in ("+", "-"):
            text = f"({text})"
        text = f"{text}{op}{x}"
        top = op
    return text


def _choose_operand(rng: random.Random, op: str, acc: int, cfg: TaskConfig, bound: int) -> int | None:
    """A right operand for `acc op x` keeping every value in [1, bound]; None if impossible."""
    if op == "+":
        hi = min(cfg.max_operand, bound - acc)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "-":
        hi = min(cfg.max_operand, acc - 1)
        return rng.randint(1, hi) if hi >= 1 else None
    hi = min(cfg.max_multiplier, bound // max(acc, 1))
    return rng.randint(2, hi) if hi >= 2 else None


def value_bound(cfg: TaskConfig) -> int:
    """Largest intermediate value: short numbers keep the char-level sequences short."""
    return cfg.max_operand * cfg.max_multiplier


def generate_question(rng: random.Random, cfg: TaskConfig) -> str:
    """One random chain expression with min_steps..max_steps operations, all values >= 1."""
    bound = value_bound(cfg)
    for _ in range(_MAX_TRIES_PER_PROBLEM):
        n_ops = rng.randint(cfg.min_steps, cfg.max_steps)
        acc = rng.randint(1, cfg.max_operand)
        start, chain = acc, []
        for _ in range(n_ops):
            ops = list(cfg.operators)
            rng.shuffle(ops)
            for op in ops:
                x = _choose_operand(rng, op, acc, cfg, bound)
                if x is not None:
                    chain.append((op, x))
                    acc = _apply(op, acc, x)
                    break
            else:
                break  # no operator fits this value: draw a new problem
        if len(chain) == n_ops:
            return _render(start, chain)
    raise ValueError(
        f"task: could not generate a problem with operators {cfg.operators}, max_operand "
        f"{cfg.max_operand}, max_multiplier {cfg.max_multiplier} in {_MAX_TRIES_PER_PROBLEM} tries"
    )


def make_problem(problem_id: str, question: str) -> ArithProblem:
    steps = solve(question)
    return ArithProblem(problem_id, question, tuple(steps), STYLE.extract_answer(steps) or "")


def _draw(
    rng: random.Random, cfg: TaskConfig, count: int, split: str, exclude: set[str]
) -> list[ArithProblem]:
    problems: list[ArithProblem] = []
    seen = set(exclude)
    tries = 0
    max_tries = 50 * count + 1000
    while len(problems) < count:
        tries += 1
        if tries > max_tries:
            raise ValueError(
                f"task: found only {len(problems)} distinct {split} problems (wanted {count}, "
                f"{len(exclude)} reserved for other splits); raise max_operand, max_steps or "
                f"the operators, or lower task.{split}_problems"
            )
        question = generate_question(rng, cfg)
        if question in seen:
            continue
        seen.add(question)
        problems.append(make_problem(f"arith-{split}-{len(problems):06d}", question))
    return problems


def make_splits(task_cfg: TaskConfig) -> tuple[list[ArithProblem], list[ArithProblem]]:
    """(train, eval), deterministic given task.seed, disjoint and de-duplicated by expression.

    Eval is drawn first from its own stream, so the eval set does not change when
    train_problems does."""
    eval_rng = random.Random(f"arith-eval-{task_cfg.seed}")
    train_rng = random.Random(f"arith-train-{task_cfg.seed}")
    eval_set = _draw(eval_rng, task_cfg, task_cfg.eval_problems, "eval", set())
    train = _draw(train_rng, task_cfg, task_cfg.train_problems, "train", {p.question for p in eval_set})
    return train, eval_set


def problems_table(problems: list[ArithProblem]) -> pa.Table:
    return from_rows(
        [
            {"problem_id": p.problem_id, "question": p.question, "answer": p.answer, "source": SOURCE}
            for p in problems
        ],
        "problems",
    )


# ---------------------------------------------------------------------------------------------
# Labels


def label_steps(problem: ArithProblem, steps: list[str]) -> int:
    """0-based index of the first wrong step, -1 if none is wrong (ProcessBench convention).

    A step is wrong if its text differs from the reference step at that position (the correct
    next step given correct previous steps); a step after the answer step is wrong. An
    unfinished solution whose steps are all right has no wrong step (-1); `is_correct_answer`
    is what rejects it."""
    for i, step in enumerate(steps):
        if i >= len(problem.steps) or step.strip() != problem.steps[i]:
            return i
    return -1


def _as_int(text: str | None) -> int | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(-?\d+)\s*", text)
    return int(m.group(1)) if m else None


def is_correct_answer(problem: ArithProblem, answer: str | None) -> bool:
    got = _as_int(answer)
    return got is not None and got == _as_int(problem.answer)


# ---------------------------------------------------------------------------------------------
# Error injection


def _digit_slip(rng: random.Random, n: int) -> int:
    """`n` with one digit replaced (never a new leading zero)."""
    digits = list(str(abs(n)))
    i = rng.randrange(len(digits))
    choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1)]
    digits[i] = rng.choice(choices)
    return int("".join(digits)) * (-1 if n < 0 else 1)


def _off_by_one(rng: random.Random, n: int) -> int:
    # Stay non-negative where possible; a value already negative (a model's wrong prefix) may move either way.
    options = [v for v in (n - 1, n + 1) if v >= 0] or [n - 1, n + 1]
    return rng.choice(options)


def _carried_values(rng: random.Random, n: int, others: list[int]) -> int | None:
    """A wrong copy of `n`: another value already on the page, its digits swapped, or +-10."""
    swapped = int(str(n)[::-1]) if n >= 10 else None
    options = sorted({v for v in [*others, swapped, n + 10, n - 10] if v is not None and v >= 0 and v != n})
    return rng.choice(options) if options else None


def corrupt_step(rng: random.Random, question: str, previous_steps: list[str]) -> tuple[str, str]:
    """A realistic wrong next step and its kind. The error always changes the left operand or
    the result, so the compact comparison line exposes it."""
    exp = _expected(question, list(previous_steps))
    if exp.kind == "none":
        raise ValueError(f"corrupt_step: no step may follow {previous_steps!r} for {question!r}")
    if exp.kind == "answer":
        final = int(exp.result)
        kinds = ["off_by_one", "digit_slip", "carried_error"]
        rng.shuffle(kinds)
        for kind in kinds:
            if kind == "off_by_one":
                v = _off_by_one(rng, final)
            elif kind == "digit_slip":
                v = _digit_slip(rng, final)
            else:
                v = _carried_values(rng, final, exp.values[:-1])
            if v is not None and v != final:
                return STYLE.answer_step(v), kind
        raise AssertionError("unreachable: off_by_one always yields a different value")
    ops = parse_expression(question)
    o = ops[len(previous_steps)]
    m = _STEP_RE.match(exp.step or "")
    assert m is not None
    a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
    literals = [v for op in ops for kind, v in (op.left, op.right) if kind == "lit"]
    kinds = ["off_by_one", "wrong_operator", "carried_error", "digit_slip"]
    rng.shuffle(kinds)
    for kind in kinds:
        a2, op2, c2 = a, o.op, None
        if kind == "off_by_one":
            c2 = _off_by_one(rng, c)
        elif kind == "digit_slip":
            c2 = _digit_slip(rng, c)
        elif kind == "wrong_operator":
            # Confusing + with - or with * by a small factor; `93*84` is not a slip anyone makes.
            alts = [
                p
                for p in _OPS
                if p != o.op and _apply(p, a, b) >= 0 and _apply(p, a, b) != c and (p != "*" or b <= 12)
            ]
            if alts:
                op2 = rng.choice(alts)
                c2 = _apply(op2, a, b)
        else:
            wrong = _carried_values(rng, a, exp.values + literals)
            if wrong is not None and _apply(o.op, wrong, b) >= 0:
                a2, c2 = wrong, _apply(o.op, wrong, b)
        if c2 is not None and (a2 != a or c2 != c):
            return format_op_step(a2, op2, b, c2), kind
    raise AssertionError("unreachable: off_by_one always yields a different value")


def continue_solution(question: str, steps: list[str]) -> list[str]:
    """`steps` completed consistently: every later step is the expected step as written."""
    out = list(steps)
    while not out or not STYLE.is_final_step(out[-1]):
        nxt = expected_step(question, out)
        if nxt is None:
            break
        out.append(nxt)
    return out


def inject_error(problem: ArithProblem, rng: random.Random) -> InjectedError:
    """A full solution with one realistic error at a random step (the answer step included),
    continued consistently after it. Prefers continuations whose values stay non-negative."""
    best: InjectedError | None = None
    for _ in range(10):
        idx = rng.randrange(len(problem.steps))
        wrong, kind = corrupt_step(rng, problem.question, list(problem.steps[:idx]))
        steps = continue_solution(problem.question, [*problem.steps[:idx], wrong])
        best = InjectedError(steps, idx, kind)
        if "=-" not in "".join(steps) and "A:-" not in "".join(steps):
            break
    assert best is not None
    return best


# ---------------------------------------------------------------------------------------------
# The programmatic teacher


def aligned_pairs(expected: str, claimed: str) -> str:
    """Expected and claimed value digit by digit, right-aligned (`_` pads the shorter): each pair
    side by side, then `=` if its two characters agree, else `x`:
    `aligned_pairs("116", "611") == "16x 11= 61x"`."""
    width = max(len(expected), len(claimed))
    pairs = zip(expected.rjust(width, "_"), claimed.rjust(width, "_"), strict=True)
    return " ".join(f"{a}{b}{'=' if a == b else 'x'}" for a, b in pairs)


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
    m = _STEP_RE.match(step.strip())
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
    pairs = f"{aligned_pairs(exp_left, claimed[0])}|{aligned_pairs(exp_result, claimed[1])}"
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
    exp = _expected(question, list(previous_steps))
    claimed = _claimed_parts(now_step)
    right = teacher_verdict(question, previous_steps, now_step)
    if agree:
        return _critique(exp.step or "-", now_step, exp.left, exp.result, claimed, right)
    if right == "No":
        # Copying the claimed step makes every comparison match: a confident, wrong Yes.
        return _critique(now_step.strip(), now_step, claimed[0], claimed[1], claimed, "Yes")
    result = int(exp.result)
    wrong = _off_by_one(rng, result) if rng is not None else result + 1
    if exp.kind == "answer":
        r_step = STYLE.answer_step(wrong)
    else:
        m = _STEP_RE.match(exp.step or "")
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
    exp = _expected(question, list(previous_steps))
    ok_a = step_a.strip() == exp.step
    ok_b = step_b.strip() == exp.step
    if ok_a == ok_b:
        return None
    winner = "A" if ok_a else "B"
    r_step, left, result = exp.step or "-", exp.left, exp.result
    if not agree:
        winner = "B" if winner == "A" else "A"
        r_step = (step_a if winner == "A" else step_b).strip()
        left, result = _claimed_parts(r_step)
    # Why this shape (mirrors `_critique`): written with both steps in the prompt and its R line
    # in one go, the tiny self-judge picked the right step of its own pairs at chance (41% of
    # chosen steps right, 39% of rejected ones); the pointwise judge had copied the claimed step
    # into R the same way until it was shown the step only after R, with R worked digit by digit.
    lines, decisions = [], {}
    for letter, step in (("a", step_a), ("b", step_b)):
        claimed = _claimed_parts(step)
        pairs = f"{aligned_pairs(left, claimed[0])}|{aligned_pairs(result, claimed[1])}"
        decisions[letter.upper()] = "N" if "x" in pairs else "Y"
        lines.append(f"C{letter}:{pairs}\nV{letter}:{decisions[letter.upper()]}")
    if decisions[winner] != "Y" or "N" not in decisions.values():
        return None
    return f"R:{worked_step(r_step)}\n{STYLE.shown_pair(step_a, step_b)}{lines[0]}\n{lines[1]}\n[[{winner}]]"


# ---------------------------------------------------------------------------------------------
# Tables


def policy_sft_table(problems: list[ArithProblem]) -> pa.Table:
    """PSRLM IFT-style examples: prompt = policy prompt, completion = every reference step + "\\n"
    (the trainer appends EOS, which ends a solution)."""
    rows = [
        {
            "example_id": f"policy/{p.problem_id}",
            "kind": "policy",
            "prompt": STYLE.policy_prompt(p.question),
            "completion": STYLE.format_solution(list(p.steps)),
        }
        for p in problems
    ]
    return from_rows(rows, "sft_examples")


def _problem_rng(seed: int, purpose: str, problem_id: str) -> random.Random:
    """One stream per problem: a problem's rows do not change when other problems are added."""
    return random.Random(f"{purpose}-{seed}-{problem_id}")


def labeled_solutions(problems: list[ArithProblem], seed: int, error_rate: float) -> list[dict]:
    """One solution per problem: with probability `error_rate` an injected error, else the
    reference. Each: problem, solution_id, steps, first_error (-1 when correct), kind."""
    out = []
    for p in problems:
        rng = _problem_rng(seed, "labeled", p.problem_id)
        if rng.random() < error_rate:
            inj = inject_error(p, rng)
            out.append(
                {
                    "problem": p,
                    "solution_id": f"{p.problem_id}/err",
                    "steps": inj.steps,
                    "first_error": inj.error_idx,
                    "kind": inj.kind,
                }
            )
        else:
            out.append(
                {
                    "problem": p,
                    "solution_id": f"{p.problem_id}/ref",
                    "steps": list(p.steps),
                    "first_error": -1,
                    "kind": "correct",
                }
            )
    return out


def labeled_steps_table(problems: list[ArithProblem], seed: int, error_rate: float) -> pa.Table:
    """R-PRM step instances, ProcessBench expansion: a correct solution contributes every step
    (all labeled True); an erroneous one its steps up to and including the first error."""
    from rprm_ray.evaluation.processbench import step_rows

    rows = []
    for sol in labeled_solutions(problems, seed, error_rate):
        p = sol["problem"]
        rows += step_rows(p.problem_id, sol["solution_id"], p.question, sol["steps"], sol["first_error"])
    return from_rows(rows, "labeled_steps")


def _judged_prefix(problem: ArithProblem, rng: random.Random) -> list[str]:
    """A prefix of the reference solution, or half the time of an injected-error one, so a
    judgment stays local to the prefix as written."""
    steps = inject_error(problem, rng).steps if rng.random() < 0.5 else list(problem.steps)
    return steps[:rng.randrange(len(steps))]


def worked_step_table(problems: list[ArithProblem], seed: int, num_examples: int,
                      style: CompactStyle = STYLE) -> pa.Table:
    """The judge's first line alone: its own worked step (`R:`), written from the context only, as
    both the pairwise judgment and the pointwise critique open. Extra practice for the one line a
    self-judge's verdicts hang on: psrlm's M1 wrote it right less often than its own greedy step
    at the prefixes it had to judge (72% against 82%), having learned it from the pairwise rows
    alone. Prefixes as in `pairwise_sft_table`; `num_examples` rows, cycling over the problems."""
    if not problems:
        raise ValueError("worked_step_table: no problems")
    rows = []
    for j in range(num_examples):
        p = problems[j % len(problems)]
        prefix = _judged_prefix(p, _problem_rng(seed, f"worked-{j}", p.problem_id))
        rows.append({"example_id": f"worked_step/{p.problem_id}/{j}", "kind": "worked_step",
                     "prompt": style.judge_context(p.question, prefix),
                     "completion": f"R:{worked_step(_expected(p.question, prefix).step or '-')}\n"})
    return from_rows(rows, "sft_examples")


def pairwise_sft_table(problems: list[ArithProblem], seed: int, num_examples: int,
                       style: CompactStyle = STYLE) -> pa.Table:
    """PSRLM EFT-style examples: a prefix (the reference, or half the time an injected-error
    solution, so judgments stay local to the prefix as written), the right next step and a
    realistic wrong one; each pair appears in both A/B orders (2 rows), `num_examples` rows in
    all (rounded down to even), cycling over the problems. Prompts are written in `style` (the
    run's: its judge prompts may open with `J:`)."""
    if not problems:
        raise ValueError("pairwise_sft_table: no problems")
    rows = []
    n_pairs = num_examples // 2
    for j in range(n_pairs):
        p = problems[j % len(problems)]
        rng = _problem_rng(seed, f"pairwise-{j}", p.problem_id)
        prefix = _judged_prefix(p, rng)
        right = expected_step(p.question, prefix)
        wrong, _ = corrupt_step(rng, p.question, prefix)
        assert right is not None
        for order, (a, b) in (("AB", (right, wrong)), ("BA", (wrong, right))):
            judgment = teacher_pairwise(p.question, prefix, a, b)
            assert judgment is not None  # corrupt_step's errors always show in the comparison
            rows.append(
                {
                    "example_id": f"pairwise/{p.problem_id}/{j}/{order}",
                    "kind": "pairwise",
                    "prompt": style.pairwise_prompt(p.question, prefix, a, b),
                    "completion": judgment,
                }
            )
    return from_rows(rows, "sft_examples")
