"""Prompt formats: policy prompts, step splitting, R-PRM judge prompts, PSRLM pairwise prompts,
and the verdict parsers every role shares.

Two styles, selected by name with `get_style`:

- "compact": for the tiny char-level models (one token per byte, so every character costs a
  decoding step). A solution is one `a op b=c` line per step and a final `A:<answer>` line.
- "paper": for real instruction-tuned models: R-PRM's judge template (method_spec A2), PSRLM's
  policy instruction (B2) and its MT-Bench style pairwise judge prompt (B4).

Both styles end a pointwise critique with the same verdict line, so one parser serves both.
"""

from __future__ import annotations

import re

VERDICT_PREFIX = "Verification: Is the step correct (Yes/No)?"
VERDICTS = ("Yes", "No")
PAIRWISE_VERDICTS = {"A": "[[A]]", "B": "[[B]]"}
FIRST_STEP_SENTENCE = "Since the Now Step is the first step, there are no Previous Steps."


def verdict_line(verdict: str) -> str:
    """The exact line a critique ends with."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be 'Yes' or 'No', got {verdict!r}")
    return f"{VERDICT_PREFIX} {verdict}"


def as_text(value: object) -> tuple[str, bool]:
    """Engine or teacher output as text Parquet can store, and whether it was well-formed: bytes
    that are not UTF-8, strings with lone surrogates (a JSON "\\ud800") and non-strings are
    replaced and reported malformed, so the caller counts them invalid instead of crashing."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), True
        except UnicodeDecodeError:
            return value.decode("utf-8", errors="replace"), False
    if not isinstance(value, str):
        return ("" if value is None else repr(value)), False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", errors="replace").decode("utf-8"), False
    return value, True


def parse_verdict(critique: str) -> str | None:
    """The verdict ("Yes" / "No") of a valid critique, else None.

    Valid (method_spec A3): the verdict prefix occurs exactly once, and the text, after stripping
    trailing dots and whitespace, ends with the prefix followed by " Yes" or " No". A critique
    that states a verdict and then keeps talking is invalid: the judge did not commit to it.
    """
    if not isinstance(critique, str) or critique.count(VERDICT_PREFIX) != 1:
        return None
    tail = critique.rstrip(" .\t\r\n")
    for verdict in VERDICTS:
        if tail.endswith(f"{VERDICT_PREFIX} {verdict}"):
            return verdict
    return None


def parse_pairwise(text: str) -> str | None:
    """The winner ("A" / "B") when exactly one pairwise verdict marker occurs in `text`; None when
    there is none, or more than one (both letters, or one repeated: the judge did not commit)."""
    if not isinstance(text, str):
        return None
    found = {letter: text.count(marker) for letter, marker in PAIRWISE_VERDICTS.items()}
    if sum(found.values()) != 1:
        return None
    return "A" if found["A"] else "B"


class PromptStyle:
    """The prompt and step format of one model family. Subclasses fill in every method."""

    name: str = ""
    step_separator: str = "\n"
    step_stop: list[str] = ["\n"]
    # True: the judge writes its own version of the step (the critique's first line) from the
    # context alone and is shown the step only after it (`shown_step`), so the judging loop makes
    # two generation calls. False: the step is part of `judge_prompt` (one call).
    recompute_first: bool = False

    def policy_prompt(self, question: str) -> str:
        raise NotImplementedError

    def format_step(self, step: str, index: int) -> str:
        """The step as it appears in a solution (`index` is 0-based)."""
        raise NotImplementedError

    def render_prefix(self, question: str, steps: list[str]) -> str:
        """Policy prompt + the steps, each followed by the separator: continuing it yields the
        next step."""
        body = "".join(self.format_step(s, i) + self.step_separator for i, s in enumerate(steps))
        return self.policy_prompt(question) + body

    def format_solution(self, steps: list[str]) -> str:
        """The completion a policy writes after `policy_prompt`: every step + separator. The
        trainer appends the tokenizer's EOS after it, which is how a solution ends."""
        return "".join(self.format_step(s, i) + self.step_separator for i, s in enumerate(steps))

    def split_steps(self, text: str) -> list[str]:
        raise NotImplementedError

    def is_final_step(self, step: str) -> bool:
        raise NotImplementedError

    def extract_answer(self, steps_or_text: str | list[str]) -> str | None:
        raise NotImplementedError

    def judge_prompt(self, question: str, previous_steps: list[str], now_step: str) -> str:
        """What the judge reads before it writes. With `recompute_first` that is the context only:
        `now_step` enters the critique after the judge's first line, as `shown_step(now_step)`."""
        raise NotImplementedError

    def shown_step(self, now_step: str) -> str:
        """The line that shows a recompute-first judge the step (after its own first line)."""
        raise NotImplementedError(f"prompt style {self.name!r} shows the step in judge_prompt")

    def pairwise_prompt(self, question: str, previous_steps: list[str], step_a: str, step_b: str) -> str:
        """What the pairwise judge reads before it writes. With `recompute_first` that is the
        context only: the two steps enter the judgment after the judge's first line, as
        `shown_pair(step_a, step_b)`."""
        raise NotImplementedError

    def shown_pair(self, step_a: str, step_b: str) -> str:
        """The lines that show a recompute-first pairwise judge both steps (after its own line)."""
        raise NotImplementedError(f"prompt style {self.name!r} shows the steps in pairwise_prompt")


class CompactStyle(PromptStyle):
    """Char-level format for the tiny world; see the module docstring and ARCHITECTURE.md §2.

    policy:    `Q:(37+25)*3-8\\n` then `37+25=62\\n62*3=186\\n186-8=178\\nA:178\\n`
    pointwise: `Q:<q>\\nP:<step>\\n...` (the context only); the critique that follows is
               `R:<expected step>\\nN:<now step>\\nC:<digit pairs with =/x marks>\\nV:<Y|N>\\n
               <verdict line>` (e.g. `R:A:116\\nN:A:611\\nC:AA=|16x 11= 61x\\nV:N\\n...`;
               arith_teacher.aligned_pairs; an operation's R works its result digit by digit first,
               `R:62*3=2*3=06+0=60 6*3=18+0=81>186`, arith_teacher.worked_step). The judge writes R
               before it is shown N (`recompute_first`): with N in the prompt, 0.5M-parameter
               judges copied the claimed step into R for 304 of 326 wrong steps of the policy's
               own (ARCHITECTURE.md §2, README).
               With `distinct_judge_prompts` every judge prompt opens `J:` instead of `Q:`.
    pairwise:  the same context (`Q:<q>\\nP:<step>\\n...`); the judgment that follows is
               `R:<worked expected step>\\na:<step A>\\nb:<step B>\\nCa:<A's marked pairs>\\nVa:<Y|N>\\n
               Cb:<B's marked pairs>\\nVb:<Y|N>\\n[[A]]` (arith_teacher.teacher_pairwise): as in a
               critique, the judge writes R before it is shown the steps (`shown_pair`), then
               compares each step with it digit pair by digit pair.
    """

    name = "compact"
    step_separator = "\n"
    step_stop = ["\n"]
    answer_marker = "A:"
    recompute_first = True

    def __init__(self, distinct_judge_prompts: bool = False) -> None:
        # Judge prompts (pointwise and pairwise) open with `J:` instead of the policy's `Q:`, so
        # they differ from a policy prompt from the first byte. Needed where one model does both
        # jobs: otherwise the pointwise judge's prompt for a first step is byte for byte the
        # policy's, and a model trained on both cannot tell which job it is given (a mixed SFT
        # judged at first-error F1 17.1 with `Q:`, 90.7 with `J:`, after 3,000 steps).
        self.distinct_judge_prompts = distinct_judge_prompts
        self.judge_marker = "J:" if distinct_judge_prompts else "Q:"

    def policy_prompt(self, question: str) -> str:
        return f"Q:{question}\n"

    def format_step(self, step: str, index: int) -> str:
        return step.strip()

    def answer_step(self, answer: str | int) -> str:
        return f"{self.answer_marker}{answer}"

    def split_steps(self, text: str) -> list[str]:
        return [line.strip() for line in text.split("\n") if line.strip()]

    def is_final_step(self, step: str) -> bool:
        return step.strip().startswith(self.answer_marker)

    def extract_answer(self, steps_or_text: str | list[str]) -> str | None:
        steps = self.split_steps(steps_or_text) if isinstance(steps_or_text, str) else steps_or_text
        for step in reversed(steps):
            if self.is_final_step(step):
                return step.strip()[len(self.answer_marker) :].strip() or None
        return None

    def judge_context(self, question: str, previous_steps: list[str]) -> str:
        """What every compact judge prompt starts with: the question and the previous steps."""
        prev = "".join(f"P:{s.strip()}\n" for s in previous_steps)
        return f"{self.judge_marker}{question}\n{prev}"

    def judge_prompt(self, question: str, previous_steps: list[str], now_step: str) -> str:
        return self.judge_context(question, previous_steps)

    def shown_step(self, now_step: str) -> str:
        return f"N:{now_step.strip()}\n"

    def pairwise_prompt(self, question: str, previous_steps: list[str], step_a: str, step_b: str) -> str:
        return self.judge_context(question, previous_steps)

    def shown_pair(self, step_a: str, step_b: str) -> str:
        return f"a:{step_a.strip()}\nb:{step_b.strip()}\n"


_STEP_LABEL = re.compile(r"^\s*Step\s+\d+\s*:\s*")
_STEP_START = re.compile(r"(?m)(?=^[ \t]*Step\s+\d+\s*:)")

PAPER_POLICY_TEMPLATE = (
    "Let's think step by step and solve the following problem. "
    'Use "Step n: " before each step to indicate the step number, and separate steps with a blank line. '
    "Put your final answer in \\boxed{{}}.\n"
    "Problem: {problem}\n"
)

# R-PRM's zero-shot judge template (src/prompts/GenPRM/GenPRM-evaluate-new-for-train3.txt,
# RPRM-EMNLP Table 6). The critique the judge writes follows "Reply:" directly.
RPRM_JUDGE_TEMPLATE = """You are an excellent math teacher. Please verify the correctness of the Now Step.

You first need to analyze the Now Step and the Previous Steps and then summarize based on your analysis.
Analysis:
You need to analyze the following aspects.
**Previous Steps Analysis**: You need to analyze the Previous Steps step by step. For each step, you need to first explain what the current step is doing, then you try to find any error in the current step.
**Now Step Analysis**: You first need to explain what the Now Step is doing, and then point out which part of the Question it is trying to solve or which part of the information it states.
**Data Source Analysis**: First you need to find out what data are used in the Now Step, and then you need to determine whether the source of the data is reasonable and correct. When you judge whether the source of a data is reasonable and correct, you need to specify the specific source of this data: such as which part of the question, or which content of the previous step; and then determine the source and current use is consistent, the Now Step is used correctly.
**Consistency Analysis**: You need to check that the Now Step is consistent with the contents of the Previous Steps, and then you need to check that all the information inside the Now Step is consistent.
**Calculation Analysis**: If the Now Step involves any calculations, such as addition, subtraction, multiplication, division, equations, modulo operations, etc., you will first need to perform a check on the calculation, such as a reverse operation, to see if the calculation was done correctly, and then analyze the results of your check to see if there was an error in the calculation.
Conclusion:
Please verify the correctness of the Now Step based on your analysis, if there is any error in the Now Step then the Now Step is wrong and vice versa the Now Step is correct. At the end of the Conclusion, when you give your final answer, write it in the form "Verification: Is the step correct (Yes/No)? X", where X is either Yes or No.

Question: {question}
Previous Steps: {previous_steps}
Now Step: {now_step}
Please carefully analyze the correctness of the Now Step.
Reply:"""

# PSRLM Fig. 5, adapted from MT-Bench's pairwise prompt: two candidate next steps, no tie option.
PSRLM_PAIRWISE_TEMPLATE = """Please act as an impartial judge and evaluate the quality of two next reasoning steps provided by two AI assistants to the question and partial reasoning steps displayed below. You should choose the step that better continues the partial reasoning. Your evaluation should consider the correctness and the helpfulness of each step. Begin your evaluation by comparing the two steps and provide a detailed explanation. Avoid any position biases and ensure that the order in which the steps were presented does not influence your decision. Do not allow the length of the steps to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A's step is better, "[[B]]" if assistant B's step is better.

[Question and Partial Reasoning Steps]
{context}

[The Start of Assistant A's Next Step]
{step_a}
[The End of Assistant A's Next Step]

[The Start of Assistant B's Next Step]
{step_b}
[The End of Assistant B's Next Step]
"""


def _strip_step_label(step: str) -> str:
    return _STEP_LABEL.sub("", step.strip(), count=1)


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None when absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


class PaperStyle(PromptStyle):
    """Real-model format: `Step n: ...` steps separated by a blank line, answer in \\boxed{}."""

    name = "paper"
    step_separator = "\n\n"
    step_stop = ["\n\n"]  # R-PRM's guided search stops a candidate step at a blank line (A10)

    def policy_prompt(self, question: str) -> str:
        return PAPER_POLICY_TEMPLATE.format(problem=question)

    def format_step(self, step: str, index: int) -> str:
        return f"Step {index + 1}: {_strip_step_label(step)}"

    def split_steps(self, text: str) -> list[str]:
        # Models that follow the instruction label every step; split there, so a step that
        # contains a blank line stays whole. Otherwise fall back to blank lines.
        if _STEP_START.search(text):
            parts = _STEP_START.split(text)
        else:
            parts = re.split(r"\n\s*\n", text)
        return [p.strip() for p in parts if p.strip()]

    def is_final_step(self, step: str) -> bool:
        return "\\boxed{" in step

    def extract_answer(self, steps_or_text: str | list[str]) -> str | None:
        text = steps_or_text if isinstance(steps_or_text, str) else "\n".join(steps_or_text)
        return _last_boxed(text)

    def judge_prompt(self, question: str, previous_steps: list[str], now_step: str) -> str:
        if previous_steps:
            prev = "\n".join(f"Step {i + 1}: {_strip_step_label(s)}" for i, s in enumerate(previous_steps))
        else:
            prev = FIRST_STEP_SENTENCE
        now = f"Step {len(previous_steps) + 1}: {_strip_step_label(now_step)}"
        return RPRM_JUDGE_TEMPLATE.format(question=question, previous_steps=prev, now_step=now)

    def pairwise_prompt(self, question: str, previous_steps: list[str], step_a: str, step_b: str) -> str:
        k = len(previous_steps) + 1
        context = f"Question: {question}\n" + "".join(
            f"Step {i + 1}: {_strip_step_label(s)}\n" for i, s in enumerate(previous_steps)
        )
        return PSRLM_PAIRWISE_TEMPLATE.format(
            context=context.rstrip("\n"),
            step_a=f"Step {k}: {_strip_step_label(step_a)}",
            step_b=f"Step {k}: {_strip_step_label(step_b)}",
        )


STYLES: dict[str, PromptStyle] = {"compact": CompactStyle(), "paper": PaperStyle()}


def get_style(name: str | PromptStyle, *, distinct_judge_prompts: bool = False) -> PromptStyle:
    """The style called `name`; a style object (e.g. `chat.ChatStyle`) is returned as is, so roles
    can be handed either. `distinct_judge_prompts`: the compact style whose judge prompts open
    with `J:` (CompactStyle); the paper style's judge prompts already differ from its policy
    prompt from the first byte, so it is the same style either way."""
    if isinstance(name, PromptStyle):
        return name
    if name == "compact" and distinct_judge_prompts:
        return CompactStyle(distinct_judge_prompts=True)
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown prompt style {name!r}; known: {', '.join(STYLES)}") from None
