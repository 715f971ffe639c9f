"""Prompt styles and the verdict parsers every role relies on."""

from __future__ import annotations

import pytest

from rprm_ray.prompts import (
    FIRST_STEP_SENTENCE,
    VERDICT_PREFIX,
    get_style,
    parse_pairwise,
    parse_verdict,
    verdict_line,
)

YES = f"{VERDICT_PREFIX} Yes"
NO = f"{VERDICT_PREFIX} No"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"R:1+2=3\nC:1|1 3|3\n{YES}", "Yes"),
        (f"analysis...\n{NO}", "No"),
        (f"analysis...\n{YES}.", "Yes"),  # trailing dot and whitespace are stripped
        (f"analysis...\n{NO} .\n\n", "No"),
        (f"{YES}\nmore text {NO}", None),  # two verdicts
        (f"{YES}\n{YES}", None),  # the same verdict twice is still two
        ("R:1+2=3\nC:1|1 3|3\n", None),  # no verdict
        (f"{YES}\nand then I kept talking", None),  # verdict not at the end
        (f"{VERDICT_PREFIX} Maybe", None),  # garbage after the prefix
        (f"{VERDICT_PREFIX} Yesterday", None),
        (f"{VERDICT_PREFIX}  Yes", None),  # not the exact line
        ("Verification: Is the step correct (yes/no)? yes", None),
        ("", None),
        ("\x00\xff garbage", None),
    ],
)
def test_parse_verdict(text: str, expected: str | None) -> None:
    assert parse_verdict(text) == expected


def test_verdict_line_round_trips_and_rejects_other_words() -> None:
    assert parse_verdict("x\n" + verdict_line("Yes")) == "Yes"
    assert parse_verdict("x\n" + verdict_line("No")) == "No"
    with pytest.raises(ValueError, match="Yes' or 'No"):
        verdict_line("yes")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("R:1+2=3\nC:...\n[[A]]", "A"),
        ("Assistant B is right. [[B]]", "B"),
        ("[[A]] ... [[B]]", None),  # both
        ("[[A]] and again [[A]]", None),  # repeated: not a single commitment
        ("no verdict at all", None),
        ("[A] [[C]] [[a]]", None),
    ],
)
def test_parse_pairwise(text: str, expected: str | None) -> None:
    assert parse_pairwise(text) == expected


def test_get_style_rejects_unknown_names() -> None:
    assert get_style("compact").name == "compact"
    assert get_style("paper").name == "paper"
    with pytest.raises(ValueError, match="unknown prompt style 'fancy'.*compact"):
        get_style("fancy")


def test_compact_policy_format() -> None:
    s = get_style("compact")
    steps = ["37+25=62", "62*3=186", "186-8=178", "A:178"]
    assert s.policy_prompt("(37+25)*3-8") == "Q:(37+25)*3-8\n"
    assert s.render_prefix("(37+25)*3-8", steps[:2]) == "Q:(37+25)*3-8\n37+25=62\n62*3=186\n"
    completion = s.format_solution(steps)
    assert completion == "37+25=62\n62*3=186\n186-8=178\nA:178\n"
    assert s.split_steps(completion) == steps
    assert s.split_steps(" 1+1=2 \n\nA:2") == ["1+1=2", "A:2"]
    assert s.step_stop == ["\n"] and s.step_separator == "\n"
    assert s.is_final_step("A:178") and not s.is_final_step("186-8=178")
    assert s.extract_answer(steps) == "178"
    assert s.extract_answer(completion) == "178"
    assert s.extract_answer(steps[:3]) is None  # unfinished
    assert s.extract_answer(["A:"]) is None


def test_compact_judge_prompts() -> None:
    s = get_style("compact")
    # The judge reads the context only; the step is shown after its own first line.
    assert s.recompute_first
    assert s.judge_prompt("(37+25)*3-8", [], "37+25=62") == "Q:(37+25)*3-8\n"
    assert s.judge_prompt("(37+25)*3-8", ["37+25=62"], "62*3=186") == "Q:(37+25)*3-8\nP:37+25=62\n"
    assert s.shown_step(" 62*3=186 ") == "N:62*3=186\n"
    assert not get_style("paper").recompute_first
    # The pairwise judge too: the two steps are shown after its own first line.
    assert s.pairwise_prompt("(37+25)*3-8", ["37+25=62"], "62*3=186", "62*3=187") == "Q:(37+25)*3-8\nP:37+25=62\n"
    assert s.shown_pair(" 62*3=186", "62*3=187 ") == "a:62*3=186\nb:62*3=187\n"
    with pytest.raises(NotImplementedError, match="paper"):
        get_style("paper").shown_pair("a", "b")


def test_distinct_judge_prompts_differ_from_the_policy_prompt_from_the_first_byte() -> None:
    plain, distinct = get_style("compact"), get_style("compact", distinct_judge_prompts=True)
    assert plain.judge_prompt("1+2", [], "1+2=3") == plain.policy_prompt("1+2")  # the ambiguity
    assert distinct.policy_prompt("1+2") == plain.policy_prompt("1+2") == "Q:1+2\n"
    assert distinct.judge_prompt("1+2*3", ["2*3=6"], "1+6=7") == "J:1+2*3\nP:2*3=6\n"
    for q in ("1+2", "(37+25)*3-8"):
        policy = distinct.policy_prompt(q)
        for judge in (distinct.judge_prompt(q, [], "x"), distinct.pairwise_prompt(q, [], "a", "b")):
            assert judge[0] != policy[0]
    assert distinct.name == "compact" and distinct.recompute_first
    # The paper style's judge prompts already differ: one style either way.
    assert get_style("paper", distinct_judge_prompts=True) is get_style("paper")
    paper = get_style("paper")
    assert paper.judge_prompt("Q", [], "s")[0] != paper.policy_prompt("Q")[0]
    assert paper.pairwise_prompt("Q", [], "a", "b")[0] != paper.policy_prompt("Q")[0]


def test_paper_judge_prompt_follows_rprm_template() -> None:
    s = get_style("paper")
    first = s.judge_prompt("What is 2+3*4?", [], "3*4 = 12.")
    assert first.startswith(
        "You are an excellent math teacher. Please verify the correctness of the Now Step."
    )
    for header in (
        "**Previous Steps Analysis**",
        "**Now Step Analysis**",
        "**Data Source Analysis**",
        "**Consistency Analysis**",
        "**Calculation Analysis**",
        "Conclusion:",
        VERDICT_PREFIX.split("?")[0],
    ):
        assert header in first
    assert f"Previous Steps: {FIRST_STEP_SENTENCE}\nNow Step: Step 1: 3*4 = 12.\n" in first
    assert first.endswith("Please carefully analyze the correctness of the Now Step.\nReply:")

    later = s.judge_prompt("Q?", ["Step 1: a", "b"], "Step 3: c")
    assert "Previous Steps: Step 1: a\nStep 2: b\nNow Step: Step 3: c\n" in later


def test_paper_policy_and_steps() -> None:
    s = get_style("paper")
    prompt = s.policy_prompt("What is 1+1?")
    assert 'Use "Step n: " before each step' in prompt and "\\boxed{}" in prompt
    assert prompt.endswith("Problem: What is 1+1?\n")
    text = "Step 1: add.\nstill step one\n\nStep 2: So the answer is \\boxed{\\frac{1}{2}}."
    steps = s.split_steps(text)
    assert steps == ["Step 1: add.\nstill step one", "Step 2: So the answer is \\boxed{\\frac{1}{2}}."]
    assert s.extract_answer(steps) == "\\frac{1}{2}"
    assert s.extract_answer("no box") is None
    assert s.extract_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert s.is_final_step(steps[1]) and not s.is_final_step(steps[0])
    assert s.split_steps("first para\n\nsecond para") == ["first para", "second para"]
    assert s.render_prefix("Q", ["a", "Step 2: b"]) == s.policy_prompt("Q") + "Step 1: a\n\nStep 2: b\n\n"


def test_paper_pairwise_prompt_has_both_steps_and_the_verdict_format() -> None:
    s = get_style("paper")
    p = s.pairwise_prompt("Q?", ["x"], "y", "z")
    assert "impartial judge" in p and '"[[A]]"' in p and '"[[B]]"' in p
    assert "Question: Q?\nStep 1: x" in p
    assert "[The Start of Assistant A's Next Step]\nStep 2: y\n" in p
    assert "[The Start of Assistant B's Next Step]\nStep 2: z\n" in p
    assert "[[C]]" not in p  # PSRLM has no tie option
    # The template mentions both markers, so the judgment (not prompt + judgment) is what is parsed.
    assert parse_pairwise(p) is None


def test_compact_texts_are_ascii() -> None:
    s = get_style("compact")
    for text in (
        s.render_prefix("(1+2)*3", ["1+2=3"]),
        s.judge_prompt("(1+2)*3", ["1+2=3"], "3*3=9"),
        s.pairwise_prompt("(1+2)*3", [], "1+2=3", "1+2=4"),
        verdict_line("Yes"),
    ):
        assert text.isascii()


def test_paper_texts_are_ascii() -> None:
    s = get_style("paper")
    for text in (s.policy_prompt("Q"), s.judge_prompt("Q", ["a"], "b"), s.pairwise_prompt("Q", [], "a", "b")):
        assert text.isascii()
