"""Property-based tests (hypothesis) over what judges' and policies' free text flows through:
verdict and pairwise parsing, step splitting, malformed critiques, and the evaluation scorers.
Any text must give an answer or an explicit invalid, never an exception."""

import math
from dataclasses import dataclass

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rprm_ray import batches
from rprm_ray.evaluation.bon import canonical_answer, select_best, select_majority, select_weighted
from rprm_ray.evaluation.prmbench import step_confusion
from rprm_ray.evaluation.processbench import harmonic_f1, predicted_first_error
from rprm_ray.judging import critique_counts, critique_rows, pairwise_requests, pairwise_rows
from rprm_ray.prompts import (
    PAIRWISE_VERDICTS,
    VERDICT_PREFIX,
    as_text,
    get_style,
    parse_pairwise,
    parse_verdict,
    verdict_line,
)
from rprm_ray.scoring import AGGREGATIONS, aggregate, p_yes_from_top_logprobs
from rprm_ray.tasks.solution_steps import gsm8k_steps, solution_steps

settings.register_profile("rprm", max_examples=200, deadline=None, derandomize=True)
settings.load_profile("rprm")

# Text that mixes the markers the parsers look for with arbitrary Unicode (lone surrogates included).
marker = st.sampled_from([VERDICT_PREFIX, " Yes", " No", "[[A]]", "[[B]]", "\n\n", "Step 2:", "\\boxed{",
                          "}", ".", " ", "\n", "####"])
messy = st.lists(st.one_of(marker, st.text(max_size=12)), max_size=12).map("".join)
clean = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(messy)
def test_parse_verdict_is_total_and_needs_exactly_one_final_verdict(text):
    verdict = parse_verdict(text)
    assert verdict in (None, "Yes", "No")
    if verdict is not None:
        assert text.count(VERDICT_PREFIX) == 1
        assert text.rstrip(" .\t\r\n").endswith(f"{VERDICT_PREFIX} {verdict}")


@given(clean.filter(lambda t: VERDICT_PREFIX not in t), st.sampled_from(["Yes", "No"]),
       st.sampled_from(["", ".", " \n", "..\n"]))
def test_a_critique_ending_in_one_verdict_line_parses(body, verdict, tail):
    assert parse_verdict(body + "\n" + verdict_line(verdict) + tail) == verdict
    assert parse_verdict(body + verdict_line(verdict) + " and more" ) is None  # talks on: not committed
    assert parse_verdict(body + verdict_line(verdict) + "\n" + verdict_line(verdict)) is None  # two verdicts


@given(messy)
def test_parse_pairwise_counts_markers(text):
    found = {k: text.count(m) for k, m in PAIRWISE_VERDICTS.items()}
    winner = parse_pairwise(text)
    if sum(found.values()) == 1:
        assert winner == ("A" if found["A"] else "B")
    else:
        assert winner is None


@given(st.one_of(messy, st.binary(max_size=40), st.none(), st.integers()))
def test_as_text_always_gives_storable_text(value):
    text, ok = as_text(value)
    text.encode("utf-8")  # never raises: Parquet can store it
    if isinstance(value, str):
        assert ok == (text == value)


@dataclass
class Out:
    text: object
    tokens: list
    top_logprobs: object = None
    token_ids: tuple = ()
    finish_reason: str = "length"


def _steps(n):
    return batches.from_rows([dict(problem_id="p", solution_id=f"s{i}", step_idx=0, question="q",
                                   previous_steps=[], now_step="x", label=None) for i in range(n)],
                             "labeled_steps")


@settings(max_examples=60)
@given(st.lists(st.one_of(messy, st.binary(max_size=30), st.text(min_size=5000, max_size=6000)),
                min_size=1, max_size=6))
def test_malformed_critiques_are_counted_invalid_never_a_crash(texts):
    outs = [[Out(t, tokens=[t] if isinstance(t, str) else [])] for t in texts]
    table = critique_rows(_steps(len(texts)), ["prompt"] * len(texts), outs)
    counts = critique_counts(table)
    expected_valid = sum(as_text(t)[1] and parse_verdict(as_text(t)[0]) is not None for t in texts)
    assert counts.invalid == len(texts) - expected_valid
    for row, t in zip(table.to_pylist(), texts, strict=True):
        if isinstance(t, bytes) and not as_text(t)[1]:
            assert row["valid"] is False and row["verdict"] is None


@settings(max_examples=60)
@given(st.lists(st.one_of(messy, st.binary(max_size=30)), min_size=2, max_size=2))
def test_malformed_pairwise_judgments_are_invalid_never_a_crash(texts):
    cands = batches.from_rows([dict(problem_id="p", prefix_id="x", candidate_id=i, question="q", prefix_steps=[],
                                    step=f"s{i}", finished=False, num_tokens=1, cumulative_logprob=None)
                               for i in range(2)], "candidates")
    requests = pairwise_requests(cands)
    table = pairwise_rows(requests, [[Out(t, [])] for t in texts[: len(requests)]] + [[]] * (len(requests) - 2))
    for row in table.to_pylist():
        assert row["valid"] == (row["winner"] is not None)


@given(messy)
def test_step_splitting_is_total_and_keeps_only_nonblank_steps(text):
    for name in ("paper", "compact"):
        steps = get_style(name).split_steps(text)
        assert all(isinstance(s, str) and s.strip() for s in steps)
    for steps in (solution_steps(text), gsm8k_steps(text)):
        assert steps is None or (steps and all(isinstance(s, str) for s in steps))


@given(st.lists(clean.filter(lambda t: t.strip() and "Step" not in t and "\n" not in t), min_size=1, max_size=6))
def test_paper_steps_round_trip_through_a_formatted_solution(steps):
    style = get_style("paper")
    steps = [s.strip() for s in steps]
    assert style.split_steps(style.format_solution(steps)) == [f"Step {i + 1}: {s}" for i, s in enumerate(steps)]


score = st.one_of(st.none(), st.floats(0.0, 1.0))


@given(st.lists(score, max_size=12), st.floats(0.0, 1.0))
def test_first_error_is_the_first_scored_step_below_threshold(scores, threshold):
    i = predicted_first_error(scores, threshold)
    below = [k for k, s in enumerate(scores) if s is not None and s < threshold]
    assert i == (below[0] if below else -1)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_harmonic_f1_is_bounded_by_its_inputs(a, b):
    f = harmonic_f1(a, b)
    assert min(a, b) - 1e-12 <= f <= max(a, b) + 1e-12


@given(st.lists(st.booleans(), max_size=15), st.sets(st.integers(1, 15)))
def test_step_confusion_counts_every_step_once(predicted, errors):
    c = step_confusion(sorted(errors), predicted)
    assert c.tp + c.fp + c.tn + c.fn == len(predicted)
    assert 0.0 <= c.prm_score() <= 100.0


@given(st.lists(score, max_size=10), st.sampled_from(AGGREGATIONS))
def test_aggregate_stays_within_the_scores(scores, how):
    value = aggregate(scores, how)
    present = [s for s in scores if s is not None]
    if not present:
        assert value is None
    else:
        assert min(present) * (0 if how == "prod" else 1) - 1e-12 <= value <= max(present) + 1e-12


@given(st.lists(st.tuples(score, st.one_of(st.none(), st.sampled_from(["1", " 1", "$2$", "3", ""]))),
                min_size=1, max_size=10))
def test_best_of_n_selectors_pick_a_valid_candidate(cands):
    scores = [s for s, _ in cands]
    answers = [a for _, a in cands]
    assert 0 <= select_best(scores) < len(cands)
    for pick in (select_weighted(scores, answers), select_majority(answers)):
        has_answer = any(canonical_answer(a) is not None for a in answers)
        assert (pick is None) == (not has_answer)
        if pick is not None:
            assert canonical_answer(answers[pick]) is not None


@given(st.lists(st.dictionaries(st.sampled_from([" Yes", " No", "Y", "N", " maybe"]),
                                st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
                                max_size=4), min_size=1, max_size=1))
def test_p_yes_is_a_probability_or_none(tops):
    tokens = [VERDICT_PREFIX, " Yes"]
    p = p_yes_from_top_logprobs(tokens, [{}, *tops])
    assert p is None or (math.isfinite(p) and 0.0 <= p <= 1.0)
    if p is not None:
        batches.from_rows([dict(problem_id="p", solution_id="s", step_idx=0, sample_idx=0, prompt="q",
                                critique="c", verdict="Yes", valid=True, p_yes=p, label=None)], "critiques")


def test_property_tests_see_the_pyarrow_schema():
    assert pa.types.is_floating(batches.schema("critiques").field("p_yes").type)


def test_named_malformed_critiques_are_each_invalid():
    good = "The step adds 2 and 3.\n" + verdict_line("Yes")
    texts = {
        "valid": good,
        "no verdict": "The step adds 2 and 3.",
        "two verdicts": verdict_line("No") + "\n" + good,
        "truncated": good[: len(good) - 5],
        "lone surrogate": good.replace("adds", "\ud800adds"),
        "not UTF-8 bytes": good.encode() + b"\xff",
        "very long": "x" * 200_000 + "\n" + verdict_line("Yes") + " But wait",
    }
    table = critique_rows(_steps(len(texts)), ["p"] * len(texts), [[Out(t, [])] for t in texts.values()])
    valid = dict(zip(texts, table.column("valid").to_pylist(), strict=True))
    assert valid == {name: name == "valid" for name in texts}
    assert critique_counts(table).invalid == len(texts) - 1
