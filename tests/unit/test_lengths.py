"""Length guards: prompts that cannot fit a model are skipped and counted, or keep their last tokens."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rprm_ray import batches, lengths
from rprm_ray.engines.base import Completion, LengthGuard
from rprm_ray.prompts import get_style
from rprm_ray.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_guard_skips_over_budget_prompts_and_keeps_order(tok):
    guard = LengthGuard(tok, max_model_len=20, rule="skip")
    calls = []

    def run(prompts):
        calls.append(prompts)
        return [[Completion(p[-1], [1], None, "eos")] * 2 for p in prompts]

    out = guard.generate(["abc", "x" * 15, "de"], 2, 8, run)
    assert calls == [["abc", "de"]]  # the engine never sees the long prompt
    assert [[c.text for c in cs] for cs in out] == [["c", "c"], ["", ""], ["e", "e"]]
    assert out[1][0].finish_reason == "too_long" and guard.skipped == 1


def test_truncate_left_keeps_the_last_tokens(tok):
    guard = LengthGuard(tok, max_model_len=10, rule="truncate_left")
    assert guard.apply(["0123456789abcdef", "short"], 4) == ["abcdef", "short"]
    assert guard.truncated == 1 and guard.skipped == 0
    with pytest.raises(ValueError, match="models.too_long"):
        LengthGuard(tok, 10, rule="middle")


def _steps(rows):
    return batches.from_rows(rows, "labeled_steps")


def test_data_guard_leaves_out_whole_solutions_and_problems(tok):
    style = get_style("compact")
    base = dict(problem_id="p", question="1+2", step_idx=0, previous_steps=[], now_step="1+2=3", label=True)
    rows = [
        {**base, "solution_id": "short"},
        {**base, "solution_id": "long", "step_idx": 0},
        {**base, "solution_id": "long", "step_idx": 1, "previous_steps": ["9" * 40], "now_step": "A:3"},
    ]
    table = _steps([{k: v for k, v in r.items() if k in batches.schema("labeled_steps").names} for r in rows])
    kept, skipped = lengths.guard_labeled_steps(table, style, tok, budget=30)
    assert skipped == 1 and set(kept.column("solution_id").to_pylist()) == {"short"}
    problems = batches.from_rows([{"problem_id": "a", "question": "1+2", "answer": "3", "source": "t"},
                                  {"problem_id": "b", "question": "1+" * 30 + "1", "answer": "31", "source": "t"}], "problems")
    kept, skipped = lengths.guard_problems(problems, style, tok, budget=20)
    assert skipped == 1 and kept.column("problem_id").to_pylist() == ["a"]
    assert isinstance(kept, pa.Table)
