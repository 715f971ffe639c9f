"""The embedded arithmetic world: seeded multi-step integer problems with exact step labels.

A problem is an expression such as `(37+25)*3-8`; its reference solution (compact style) is one
`a op b=c` step per operation in evaluation order (left to right, parentheses as written), then
`A:<answer>`. Because every step can be recomputed, the world provides what real benchmarks get
from humans: step labels, realistic wrong steps, and a programmatic teacher whose critiques and
pairwise judgments are always right (or, on request, deliberately wrong).

This module is the world itself: problems, parsing, solving, splits, labels, grading and error
injection. Built on it: the teacher's judgment formats (`arith_teacher.py`) and the SFT / labeled
tables drawn from the world and the teacher (`arith_tables.py`).

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
from rprm_ray.prompts import CompactStyle

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


# An operation step `a op b=c` (groups: a, op, b, c); the teacher reads steps with it too.
STEP_RE = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")
_ANSWER_RE = re.compile(r"^A:(-?\d+)$")


def format_op_step(a: int, op: str, b: int, c: int) -> str:
    return f"{a}{op}{b}={c}"


def _claimed_result(step: str) -> int | None:
    m = STEP_RE.match(step.strip())
    return int(m.group(4)) if m else None


def claimed_parts(step: str) -> tuple[str, str]:
    """(left operand, result) as the step states them, for the comparison line; "?" where the
    step does not say. The answer step's "left operand" is its marker `A`."""
    s = step.strip()
    m = STEP_RE.match(s)
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


class ExpectedStep(NamedTuple):
    """The expected next step and the parts a comparison line shows (see `expected_next`)."""

    step: str | None  # None: nothing may follow (the answer was given, or too many steps)
    left: str
    result: str
    kind: str  # "op" | "answer" | "none"
    values: list[int]  # the value of each earlier operation as written


def expected_next(question: str, previous_steps: list[str]) -> ExpectedStep:
    """The expected next step given the previous steps as written, with its left operand and
    result (what the teacher's comparison lines check) and the values written so far."""
    ops = parse_expression(question)
    values: list[int] = []

    def value(operand: Operand) -> int:
        kind, v = operand
        return v if kind == "lit" else values[v]

    for j, step in enumerate(previous_steps):
        if STYLE.is_final_step(step) or j >= len(ops):
            return ExpectedStep(None, "-", "-", "none", values)
        o = ops[j]
        claimed = _claimed_result(step)
        # An unreadable earlier step carries no value; fall back to the right one so the
        # judgment of later steps stays local.
        values.append(claimed if claimed is not None else _apply(o.op, value(o.left), value(o.right)))
    k = len(previous_steps)
    if k == len(ops):
        final = values[-1]
        return ExpectedStep(STYLE.answer_step(final), "A", str(final), "answer", values)
    o = ops[k]
    a, b = value(o.left), value(o.right)
    c = _apply(o.op, a, b)
    return ExpectedStep(format_op_step(a, o.op, b, c), str(a), str(c), "op", values)


def expected_step(question: str, previous_steps: list[str]) -> str | None:
    """The correct next step given the previous steps as written; None when nothing may follow."""
    return expected_next(question, list(previous_steps)).step


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


def off_by_one(rng: random.Random, n: int) -> int:
    """`n` plus or minus one: the injected error, and the teacher's deliberate miscomputation."""
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
    exp = expected_next(question, list(previous_steps))
    if exp.kind == "none":
        raise ValueError(f"corrupt_step: no step may follow {previous_steps!r} for {question!r}")
    if exp.kind == "answer":
        final = int(exp.result)
        kinds = ["off_by_one", "digit_slip", "carried_error"]
        rng.shuffle(kinds)
        for kind in kinds:
            if kind == "off_by_one":
                v = off_by_one(rng, final)
            elif kind == "digit_slip":
                v = _digit_slip(rng, final)
            else:
                v = _carried_values(rng, final, exp.values[:-1])
            if v is not None and v != final:
                return STYLE.answer_step(v), kind
        raise AssertionError("unreachable: off_by_one always yields a different value")
    ops = parse_expression(question)
    o = ops[len(previous_steps)]
    m = STEP_RE.match(exp.step or "")
    assert m is not None
    a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
    literals = [v for op in ops for kind, v in (op.left, op.right) if kind == "lit"]
    kinds = ["off_by_one", "wrong_operator", "carried_error", "digit_slip"]
    rng.shuffle(kinds)
    for kind in kinds:
        a2, op2, c2 = a, o.op, None
        if kind == "off_by_one":
            c2 = off_by_one(rng, c)
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
