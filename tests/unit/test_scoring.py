import math

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.judging import step_score_rows
from rprm_ray.scoring import (
    VERDICT_PREFIX,
    aggregate,
    p_yes_from_top_logprobs,
    scores_by_solution,
    step_score,
)

ln = math.log


def _tokens_with_top(tokens, top_at):
    """Top-logprob dicts: the given dict at the given token index, the sampled token elsewhere."""
    return [top_at[i] if i in top_at else {tok: -0.01} for i, tok in enumerate(tokens)]


def test_qwen_style_space_and_word_in_one_token():
    tokens = ["The step adds 2 and 3.\n", "Verification", ":", " Is", " the", " step", " correct", " (", "Yes", "/",
              "No", ")?", " Yes"]
    assert "".join(tokens).endswith(VERDICT_PREFIX + " Yes")
    top = _tokens_with_top(tokens, {12: {" Yes": ln(0.6), " No": ln(0.2), " yes": ln(0.1), " The": ln(0.05)}})
    assert p_yes_from_top_logprobs(tokens, top) == pytest.approx(0.75)


def test_char_level_skips_whitespace_token_and_reads_the_letter():
    tokens = [*"C:3|3 5|6\n", *VERDICT_PREFIX, " ", "N"]
    verdict_idx = len(tokens) - 1
    # the whitespace position holds other alternatives: it must not be read as the verdict
    top = _tokens_with_top(tokens, {verdict_idx - 1: {" ": ln(0.99), "Y": ln(0.01)},
                                    verdict_idx: {"N": ln(0.8), "Y": ln(0.1), "\n": ln(0.1)}})
    assert p_yes_from_top_logprobs(tokens, top) == pytest.approx(0.1 / 0.9)


def test_all_prefixes_of_the_word_count_for_that_side():
    tokens = [VERDICT_PREFIX, " Y"]
    top = [{VERDICT_PREFIX: 0.0}, {" Y": ln(0.3), "Yes": ln(0.3), " Ye": ln(0.1), " N": ln(0.2), "Nope": ln(0.1)}]
    # "Nope" is not a prefix of "No", so it counts for neither side
    assert p_yes_from_top_logprobs(tokens, top) == pytest.approx(0.7 / 0.9)


def test_token_straddling_the_prefix_end():
    tokens = ["Verification: Is the step correct (Yes/No", ")? No"]
    top = [{tokens[0]: 0.0}, {")? No": ln(0.6), ")? Yes": ln(0.3), "). No": ln(0.1)}]
    assert p_yes_from_top_logprobs(tokens, top) == pytest.approx(1 / 3)


def test_only_one_alternative_present_gives_certainty():
    tokens = [VERDICT_PREFIX, " Yes"]
    assert p_yes_from_top_logprobs(tokens, [{}, {" Yes": ln(0.9), " Maybe": ln(0.1)}]) == 1.0
    assert p_yes_from_top_logprobs(tokens, [{}, {" No": ln(0.5)}]) == 0.0


def test_first_verdict_line_is_used():
    tokens = [VERDICT_PREFIX, " No", "\n", VERDICT_PREFIX, " Yes"]
    top = [{}, {" No": ln(0.9), " Yes": ln(0.1)}, {}, {}, {" Yes": ln(0.99), " No": ln(0.01)}]
    assert p_yes_from_top_logprobs(tokens, top) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "tokens, top",
    [
        (["No verdict line here", " Yes"], [{}, {" Yes": -0.1}]),  # no prefix
        ([VERDICT_PREFIX], [{}]),  # prefix is the last token
        ([VERDICT_PREFIX, " ", "\n"], [{}, {}, {}]),  # only whitespace after it
        ([VERDICT_PREFIX, " Maybe"], [{}, {" Maybe": -0.1, " Perhaps": -2.0}]),  # neither alternative
        ([VERDICT_PREFIX, " Yes"], [{}, None]),  # engine gave no top-k there
    ],
)
def test_no_verdict_position_or_alternatives_gives_none(tokens, top):
    assert p_yes_from_top_logprobs(tokens, top) is None


def test_fewer_logprob_positions_than_tokens_is_an_error():
    with pytest.raises(ValueError, match="2 tokens"):
        p_yes_from_top_logprobs([VERDICT_PREFIX, " Yes"], [{}])


def test_verdict_prefix_matches_the_prompt_module():
    from rprm_ray import prompts

    assert prompts.VERDICT_PREFIX == VERDICT_PREFIX


def test_step_score_modes_ignore_invalid_critiques():
    p_yes = [0.9, 0.2, None, 0.7, 0.4]
    verdicts = ["Yes", "No", "Yes", None, "Yes"]  # index 3 invalid: its 0.7 must not count
    assert step_score(p_yes, verdicts, "p_yes") == pytest.approx((0.9 + 0.2 + 0.4) / 3)
    assert step_score(p_yes, verdicts, "yes_fraction") == pytest.approx(3 / 4)


def test_step_score_none_without_valid_critique():
    assert step_score([0.8, 0.1], [None, None], "p_yes") is None
    assert step_score([0.8], [None], "yes_fraction") is None
    assert step_score([None], ["Yes"], "p_yes") is None  # valid but no probability
    assert step_score([None], ["Yes"], "yes_fraction") == 1.0
    with pytest.raises(ValueError, match="mode"):
        step_score([0.5], ["Yes"], "median")
    with pytest.raises(ValueError, match="2 P\\(Yes\\) values for 1"):
        step_score([0.5, 0.5], ["Yes"])


def test_aggregate_each_way_and_missing_steps():
    scores = [0.9, None, 0.5, 0.8]
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([0.4, None], "last") == 0.4  # last scored step
    assert aggregate([None, None], "min") is None
    assert aggregate([], "mean") is None
    with pytest.raises(ValueError, match="aggregation"):
        aggregate([0.5], "max")


def _critique(solution_id, step_idx, sample_idx, verdict, p_yes):
    return {
        "problem_id": "p", "solution_id": solution_id, "step_idx": step_idx, "sample_idx": sample_idx,
        "prompt": "q", "critique": "c", "verdict": verdict, "valid": verdict is not None, "p_yes": p_yes,
        "label": None,
    }


def test_step_scores_table_from_critiques_and_back_to_lists():
    critiques = from_rows(
        [
            _critique("s1", 1, 0, "No", 0.2),
            _critique("s1", 0, 0, "Yes", 0.9),
            _critique("s1", 0, 1, "Yes", 0.7),
            _critique("s1", 1, 1, None, None),
            _critique("s2", 2, 0, None, None),
        ],
        "critiques",
    )
    table = step_score_rows(critiques, "p_yes")
    rows = {(r["solution_id"], r["step_idx"]): r for r in table.to_pylist()}
    assert rows[("s1", 0)]["score"] == pytest.approx(0.8)
    assert (rows[("s1", 1)]["score"], rows[("s1", 1)]["num_valid"], rows[("s1", 1)]["num_invalid"]) == (0.2, 1, 1)
    assert (rows[("s2", 2)]["score"], rows[("s2", 2)]["num_valid"], rows[("s2", 2)]["num_invalid"]) == (None, 0, 1)
    lists = scores_by_solution(table)
    assert lists["s1"] == [pytest.approx(0.8), 0.2]
    assert lists["s2"] == [None, None, None]  # steps 0 and 1 never judged
