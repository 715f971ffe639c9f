"""The judge's core on hand-written judge outputs: validity, P(Yes) at the verdict position, step
scores, pairwise requests in both orders, winners and position consistency."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from rprm_ray import batches, judging
from rprm_ray.engines.base import Completion
from rprm_ray.prompts import get_style, verdict_line

STYLE = get_style("compact")


def _completion(text: str, p_yes_at_verdict: float | None = None) -> Completion:
    """A char-level completion: one token per character; where the verdict word starts, the top
    log-probs hold Y and N with the given P(Yes), elsewhere only the sampled character."""
    tokens = list(text)
    top = [{t: 0.0} for t in tokens]
    if p_yes_at_verdict is not None:
        at = text.index("(Yes/No)? ") + len("(Yes/No)? ")
        top[at] = {"Y": math.log(p_yes_at_verdict), "N": math.log(1 - p_yes_at_verdict)}
    return Completion(
        text=text, token_ids=[ord(c) + 3 for c in text], cumulative_logprob=None,
        finish_reason="eos", tokens=tokens, top_logprobs=top,
    )


def _labeled_steps(n: int) -> pa.Table:
    rows = [
        {
            "problem_id": f"p{i}",
            "solution_id": f"s{i}",
            "step_idx": i,
            "question": "(3+4)*2",
            "previous_steps": ["3+4=7"] * i,
            "now_step": "7*2=14",
            "label": i % 2 == 0,
        }
        for i in range(n)
    ]
    return batches.from_rows(rows, "labeled_steps")


YES = "R:7*2=14\nC:7|7 14|14\n" + verdict_line("Yes")
NO = "R:7*2=14\nC:7|7 14|15\n" + verdict_line("No")
NO_VERDICT = "R:7*2=14\nC:7|7 14|14\n"
TWO_VERDICTS = verdict_line("Yes") + "\n" + verdict_line("No")
GARBAGE = "x9#\n\u00e9(("
VERDICT_NOT_AT_END = verdict_line("Yes") + "\nR:7*2=14"


def test_critique_rows_validity_and_p_yes_from_the_same_generation() -> None:
    steps = _labeled_steps(2)
    prompts = judging.judge_prompts(steps, STYLE)
    assert prompts[1] == "Q:(3+4)*2\nP:3+4=7\n"
    outs = [
        [_completion(YES, 0.8), _completion(NO, 0.3), _completion(NO_VERDICT)],
        [_completion(TWO_VERDICTS), _completion(GARBAGE), _completion(VERDICT_NOT_AT_END)],
    ]
    table = judging.critique_rows(steps, prompts, outs)
    rows = table.to_pylist()
    assert [(r["solution_id"], r["sample_idx"]) for r in rows] == [
        ("s0", 0), ("s0", 1), ("s0", 2), ("s1", 0), ("s1", 1), ("s1", 2)
    ]
    assert [r["verdict"] for r in rows] == ["Yes", "No", None, None, None, None]
    assert [r["valid"] for r in rows] == [True, True, False, False, False, False]
    assert rows[0]["p_yes"] == pytest.approx(0.8)
    assert rows[1]["p_yes"] == pytest.approx(0.3)
    assert all(r["p_yes"] is None for r in rows[2:])
    assert rows[3]["prompt"] == prompts[1] and rows[3]["critique"] == TWO_VERDICTS
    assert [r["label"] for r in rows] == [True] * 3 + [False] * 3
    counts = judging.critique_counts(table)
    assert (counts.total, counts.valid, counts.invalid) == (6, 2, 4)


class ContinuingJudge:
    """An engine that writes one fixed critique per prompt, one token per character: it stops at
    a stop string (keeping it when asked) and continues a prompt that ends inside the critique,
    giving top log-probs (Y: 0.7, N: 0.3) where the verdict word starts. Records each call."""

    backend = "fake"
    model_dir = "fake"

    def __init__(self, critique_of):
        self.critique_of = critique_of
        self.calls = []

    def generate(self, prompts, n, sampling, stop=None, logprobs=None, include_stop=False):
        self.calls.append({"prompts": list(prompts), "n": n, "stop": stop, "logprobs": logprobs,
                           "max_new_tokens": sampling.max_new_tokens})
        return [[self._one(p, sampling.max_new_tokens, stop, logprobs, include_stop)] * n for p in prompts]

    def _one(self, prompt, budget, stop, logprobs, include_stop):
        context = next(c for c in self.critique_of if prompt.startswith(c))
        written = prompt[len(context):]
        text, finish = self.critique_of[context][len(written):][:budget], "length"
        if len(text) < budget:
            finish = "eos"
        for s in stop or []:
            if s in text:
                text, finish = text[: text.index(s) + (len(s) if include_stop else 0)], "stop"
        top = None
        if logprobs is not None:
            top = [{c: 0.0} for c in text]
            full = written + text
            at = full.find("(Yes/No)? ") + len("(Yes/No)? ") - len(written)
            if 0 <= at < len(text):
                top[at] = {"Y": math.log(0.7), "N": math.log(0.3)}
        return Completion(text=text, token_ids=[ord(c) for c in text], cumulative_logprob=None,
                          finish_reason=finish, tokens=list(text), top_logprobs=top)


def test_critiques_read_p_yes_from_a_verdict_continuation_within_the_token_budget() -> None:
    from rprm_ray.config import SamplingConfig

    critique_of = {"A\n": YES, "B\n": NO_VERDICT, "C\n": YES}
    engine = ContinuingJudge(critique_of)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=len(YES) - 2, seed=0)
    out = judging.critiques_with_verdict(engine, ["A\n", "B\n"], 2, sampling)
    # The critique up to the verdict prefix without log-probs; the rest with them, in the budget
    # left (2 tokens: " Y", so the word is cut and the critique is invalid, yet P(Yes) is read).
    first, rest = engine.calls
    assert (first["stop"], first["logprobs"], first["n"]) == ([judging.VERDICT_PREFIX], None, 2)
    assert rest["prompts"] == ["A\n" + YES[: YES.index("?") + 1]] * 2 and rest["n"] == 1
    assert (rest["logprobs"], rest["max_new_tokens"]) == (judging.VERDICT_TOP_LOGPROBS, 2)
    a, b = out
    assert len(a) == len(b) == 2
    assert a[0].text == YES[: len(YES) - 2] and a[0].tokens == list(a[0].text)
    assert len(a[0].top_logprobs) == len(a[0].tokens)
    assert b[0].text == NO_VERDICT and b[0].finish_reason == "eos"  # never wrote the prefix: as it was

    engine = ContinuingJudge(critique_of)
    roomy = SamplingConfig(temperature=0.0, max_new_tokens=200, seed=0)
    (c,), = judging.critiques_with_verdict(engine, ["C\n"], 1, roomy)
    assert engine.calls[1]["max_new_tokens"] == judging.VERDICT_TAIL_TOKENS
    assert c.text == YES and c.finish_reason == "eos"
    table = judging.critique_rows(_labeled_steps(1), ["C\n"], [[c]])
    assert table.column("p_yes").to_pylist() == [pytest.approx(0.7)]


def test_critique_without_logprobs_is_valid_with_null_p_yes() -> None:
    steps = _labeled_steps(1)
    comp = _completion(YES)
    comp.top_logprobs = None
    table = judging.critique_rows(steps, judging.judge_prompts(steps, STYLE), [[comp]])
    row = table.to_pylist()[0]
    assert row["valid"] and row["verdict"] == "Yes" and row["p_yes"] is None


def test_step_scores_mean_p_yes_yes_fraction_and_no_valid_critique() -> None:
    steps = _labeled_steps(2)
    outs = [
        [_completion(YES, 0.9), _completion(NO, 0.2), _completion(GARBAGE)],
        [_completion(GARBAGE), _completion(NO_VERDICT), _completion(TWO_VERDICTS)],
    ]
    critiques = judging.critique_rows(steps, judging.judge_prompts(steps, STYLE), outs)

    p_yes = judging.step_score_rows(critiques, "p_yes").to_pylist()
    assert [(r["solution_id"], r["num_valid"], r["num_invalid"]) for r in p_yes] == [
        ("s0", 2, 1), ("s1", 0, 3)
    ]
    assert p_yes[0]["score"] == pytest.approx((0.9 + 0.2) / 2)
    assert p_yes[1]["score"] is None

    fraction = judging.step_score_rows(critiques, "yes_fraction").to_pylist()
    assert fraction[0]["score"] == pytest.approx(0.5)
    assert fraction[1]["score"] is None


def test_step_scores_keep_input_order() -> None:
    steps = batches.from_rows(
        [
            {"problem_id": "p", "solution_id": sid, "step_idx": 0, "question": "1+1",
             "previous_steps": [], "now_step": "1+1=2", "label": None}
            for sid in ("z", "a", "m")
        ],
        "labeled_steps",
    )
    outs = [[_completion(YES, 0.6)] for _ in range(3)]
    critiques = judging.critique_rows(steps, judging.judge_prompts(steps, STYLE), outs)
    scores = judging.step_score_rows(critiques, "p_yes")
    assert scores.column("solution_id").to_pylist() == ["z", "a", "m"]


def test_critique_rows_rejects_mismatched_lengths_and_bad_tables() -> None:
    steps = _labeled_steps(2)
    with pytest.raises(ValueError, match="2 labeled_steps rows, 2 prompts and 1 completion lists"):
        judging.critique_rows(steps, ["a", "b"], [[_completion(YES)]])
    with pytest.raises(batches.BatchError, match=r"ProcessJudge.score_steps: labeled_steps: missing column 'now_step'"):
        judging.judge_prompts(steps.drop(["now_step"]), STYLE, where="ProcessJudge.score_steps")


def _candidates(spec: dict[str, list[str]]) -> pa.Table:
    rows = []
    for prefix_id, steps in spec.items():
        for cid, step in enumerate(steps):
            rows.append(
                {"problem_id": f"prob-{prefix_id}", "prefix_id": prefix_id, "candidate_id": cid,
                 "question": "(3+4)*2", "prefix_steps": ["3+4=7"], "step": step, "finished": False,
                 "num_tokens": len(step), "cumulative_logprob": None}
            )
    return batches.from_rows(rows, "candidates")


def test_pairwise_requests_every_pair_in_both_orders() -> None:
    table = _candidates({"x": ["7*2=14", "7*2=15", "7*2=16"], "lonely": ["7*2=14"], "y": ["a", "b"]})
    requests = judging.pairwise_requests(table)
    keys = [(r.prefix_id, r.candidate_a, r.candidate_b, r.order) for r in requests]
    assert keys == [
        ("x", 0, 1, "AB"), ("x", 0, 1, "BA"), ("x", 0, 2, "AB"), ("x", 0, 2, "BA"),
        ("x", 1, 2, "AB"), ("x", 1, 2, "BA"), ("y", 0, 1, "AB"), ("y", 0, 1, "BA"),
    ]
    ab, ba = requests[2], requests[3]
    assert (ab.slot_a_step, ab.slot_b_step) == ("7*2=14", "7*2=16")
    assert (ba.slot_a_step, ba.slot_b_step) == ("7*2=16", "7*2=14")
    prompts = judging.pairwise_prompts(requests[2:4], STYLE)
    assert prompts == ["Q:(3+4)*2\nP:3+4=7\n"] * 2  # recompute-first: the steps come after the judge's line
    paper = judging.pairwise_prompts(requests[2:4], get_style("paper"))
    assert "Step 2: 7*2=14\n[The End of Assistant A" in paper[0]
    assert "Step 2: 7*2=16\n[The End of Assistant A" in paper[1]


def test_pairwise_requests_reject_a_prefix_id_with_two_contexts() -> None:
    table = _candidates({"x": ["7*2=14", "7*2=15"]})
    rows = table.to_pylist()
    rows[1]["prefix_steps"] = ["3+4=8"]
    with pytest.raises(batches.BatchError, match="'prefix_steps' differs between candidates 0 and 1 of prefix_id 'x'"):
        judging.pairwise_requests(batches.from_rows(rows, "candidates"))


def _text(t: str) -> list[Completion]:
    return [Completion(text=t, token_ids=[], cumulative_logprob=None, finish_reason="eos")]


def test_pairwise_rows_map_slots_to_candidates_and_count_position_flips() -> None:
    table = _candidates({"x": ["s0", "s1", "s2"]})
    requests = judging.pairwise_requests(table)
    outs = [
        _text("R:..\n[[A]]"),  # (0,1) AB: slot A = 0 wins
        _text("[[B]]"),  # (0,1) BA: slot B = 0 wins -> consistent
        _text("[[A]]"),  # (0,2) AB: 0 wins
        _text("[[A]]"),  # (0,2) BA: slot A = 2 wins -> position flip
        _text("[[A]] or [[B]]"),  # (1,2) AB: two markers, invalid
        _text("no idea"),  # (1,2) BA: invalid
    ]
    judgments = judging.pairwise_rows(requests, outs)
    rows = judgments.to_pylist()
    assert [r["winner"] for r in rows] == [0, 0, 0, 2, None, None]
    assert [r["valid"] for r in rows] == [True, True, True, True, False, False]
    assert rows[4]["judgment"] == "[[A]] or [[B]]"
    counts = judging.pairwise_counts(judgments)
    assert counts == judging.PairwiseCounts(
        judgments=6, invalid=2, position_inconsistent=1, consistent_checked=2
    )


def test_pairwise_rows_of_no_requests_is_an_empty_table() -> None:
    judgments = judging.pairwise_rows([], [])
    assert judgments.num_rows == 0
    assert judgments.schema.equals(batches.schema("pairwise_judgments"))


def test_prefix_chunks_never_split_a_prefix_and_keep_every_row() -> None:
    table = _candidates({"a": ["1", "2", "3"], "b": ["1", "2"], "c": ["1", "2", "3", "4", "5"], "d": ["1"]})
    chunks = judging.prefix_chunks(table, 4)
    prefixes = [chunk.column("prefix_id").to_pylist() for chunk in chunks]
    assert prefixes == [["a"] * 3, ["b"] * 2, ["c"] * 5, ["d"]]
    rebuilt = pa.concat_tables(chunks)
    assert rebuilt.num_rows == table.num_rows
    assert judging.prefix_chunks(table, 100)[0].equals(table)



class PairwiseTeacherEngine:
    """A judge engine that writes the programmatic teacher's pairwise judgments, one token per
    character: from a context alone its worked R line (up to the stop string), after the shown
    steps the rest of the judgment. Records each call."""

    backend = "fake"
    model_dir = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, n, sampling, stop=None, logprobs=None, include_stop=False):
        from rprm_ray.tasks import arith, arith_teacher

        self.calls.append({"prompts": list(prompts), "n": n, "stop": stop, "temperature": sampling.temperature})
        out = []
        for prompt in prompts:
            lines = prompt.split("\n")
            question = lines[0][2:]
            prev = [x[2:] for x in lines if x.startswith("P:")]
            shown = [x[2:] for x in lines if x[:2] in ("a:", "b:")]
            if shown:
                # Two wrong steps have no teacher winner: the judge then names none (invalid).
                full = arith_teacher.teacher_pairwise(question, prev, *shown) or "R:\nCa:\nVa:N\nCb:\nVb:N"
                text = full[full.index("\nCa:") + 1:]
            else:
                text = "R:" + arith_teacher.worked_step(arith.expected_step(question, prev))
            for s in stop or []:
                if s in text:
                    text = text[: text.index(s)]
            out.append([Completion(text=text, token_ids=[ord(c) for c in text], cumulative_logprob=None,
                                   finish_reason="eos", tokens=list(text))] * n)
        return out


def test_write_pairwise_works_its_own_line_once_per_context_then_judges_each_order() -> None:
    from rprm_ray.config import SamplingConfig
    from rprm_ray.tasks import arith_teacher

    table = _candidates({"x": ["7*2=14", "7*2=15", "7*3=21"], "y": ["7*2=14", "8*2=16"]})
    requests = judging.pairwise_requests(table)
    engine = PairwiseTeacherEngine()
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=96, seed=3)
    style = get_style("compact", distinct_judge_prompts=True)
    completions = judging.write_pairwise(engine, style, requests, sampling)
    first, rest = engine.calls
    # One R line per distinct context (both prefixes share it here), sampled; the rest greedy.
    assert first["prompts"] == ["J:(3+4)*2\nP:3+4=7\n"] and first["stop"] == ["\n"]
    assert first["temperature"] == 0.7 and rest["temperature"] == 0.0 and rest["stop"] is None
    assert len(rest["prompts"]) == len(requests) == 8
    for request, (completion,) in zip(requests, completions, strict=True):
        teacher = arith_teacher.teacher_pairwise("(3+4)*2", ["3+4=7"], request.slot_a_step, request.slot_b_step)
        assert completion.text == teacher or (teacher is None and completion.text.startswith("R:7*2="))
    judgments = judging.pairwise_rows(requests, completions).to_pylist()
    assert [j["winner"] for j in judgments] == [0, 0, 0, 0, None, None, 0, 0]  # two wrong steps: no winner
    assert judging.write_pairwise(engine, style, [], sampling) == []


def test_write_pairwise_of_a_one_call_style_sends_both_steps_in_the_prompt() -> None:
    from rprm_ray.config import SamplingConfig

    requests = judging.pairwise_requests(_candidates({"x": ["a", "b"]}))
    calls = []

    class OneCall:
        def generate(self, prompts, n, sampling, stop=None, **_):
            calls.append((prompts, stop))
            return [[Completion(text="[[A]]", token_ids=[], cumulative_logprob=None, finish_reason="eos")]
                    for _ in prompts]

    out = judging.write_pairwise(OneCall(), get_style("paper"), requests, SamplingConfig())
    assert [c[0].text for c in out] == ["[[A]]", "[[A]]"] and len(calls) == 1
    assert calls[0][1] is None and "[The Start of Assistant A's Next Step]\nStep 2: a" in calls[0][0][0]
