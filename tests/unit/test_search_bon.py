"""PRM-guided Best-of-N: per-aggregation picks on hand-made scores, votes, batching, counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pytest
from test_search_world import STYLE, OracleScorer, first_error, search_cfg, world

from rprm_ray import batches
from rprm_ray.config import SamplingConfig
from rprm_ray.search import RESULTS_SCHEMA, accuracy, run_best_of_n
from rprm_ray.search.best_of_n import solution_id


@dataclass
class FixedSolutions:
    """Generator returning hand-written solutions: {problem_id: [(steps, answer), ...]}."""

    solutions: dict[str, list[tuple[list[str], str | None]]]
    calls: list[list[str]] = field(default_factory=list)
    samplings: list[SamplingConfig] = field(default_factory=list)

    def generate(self, problems: pa.Table, n: int, sampling: SamplingConfig) -> pa.Table:
        self.calls.append(problems.column("problem_id").to_pylist())
        self.samplings.append(sampling)
        rows = []
        for row in problems.to_pylist():
            for i, (steps, answer) in enumerate(self.solutions[row["problem_id"]][:n]):
                rows.append(
                    {
                        "problem_id": row["problem_id"],
                        "sample_idx": i,
                        "question": row["question"],
                        "text": "\n".join(steps),
                        "steps": steps,
                        "answer": answer,
                        "finished": True,
                        "correct": None,
                    }
                )
        return batches.from_rows(rows, "solutions")

    def expand(self, prefixes, w, sampling):  # pragma: no cover - BoN never expands
        raise AssertionError("Best-of-N must not call expand")


@dataclass
class TableScorer:
    """Scores from a dict {solution_id: [score per step]}; records the rows of each call."""

    scores: dict[str, list[float | None]]
    calls: list[int] = field(default_factory=list)

    def score_steps(self, labeled_steps: pa.Table) -> pa.Table:
        self.calls.append(labeled_steps.num_rows)
        return batches.from_rows(
            [
                {
                    "problem_id": r["problem_id"],
                    "solution_id": r["solution_id"],
                    "step_idx": r["step_idx"],
                    "score": self.scores[r["solution_id"]][r["step_idx"]],
                    "num_valid": 1,
                    "num_invalid": 0,
                }
                for r in labeled_steps.to_pylist()
            ],
            "step_scores",
        )


def _problems(ids_answers: dict[str, str]) -> pa.Table:
    return batches.from_rows(
        [{"problem_id": i, "question": f"q{i}", "answer": a, "source": "t"} for i, a in ids_answers.items()],
        "problems",
    )


# Four solutions built so each aggregation prefers a different one:
#   min -> s0 (0.8), prod -> s1 (0.7, one short step), last -> s2 (0.99), mean -> s3 (0.92).
HAND_SCORES = [[0.8, 0.8, 0.8], [0.7], [0.1, 0.99], [1.0, 1.0, 1.0, 1.0, 0.6]]


def _hand_made() -> tuple[FixedSolutions, TableScorer]:
    sols = [([f"s{i}.{k}" for k in range(len(sc))], str(10 + i)) for i, sc in enumerate(HAND_SCORES)]
    gen = FixedSolutions({"p": sols})
    scorer = TableScorer({solution_id("p", i): sc for i, sc in enumerate(HAND_SCORES)})
    return gen, scorer


@pytest.mark.parametrize(("how", "winner"), [("min", 0), ("prod", 1), ("last", 2), ("mean", 3)])
def test_each_aggregation_picks_its_own_winner(how, winner):
    gen, scorer = _hand_made()
    out = run_best_of_n(_problems({"p": str(10 + winner)}), gen, scorer, search_cfg(aggregation=how), STYLE)
    row = out.to_pylist()[0]
    assert row["answer"] == str(10 + winner)
    assert row["steps"] == [f"s{winner}.{k}" for k in range(len(HAND_SCORES[winner]))]
    assert row["correct"] is True
    assert row["score"] == pytest.approx({"min": 0.8, "prod": 0.7, "last": 0.99, "mean": 0.92}[how])


def test_ties_go_to_the_earliest_sample_and_unscored_ranks_last():
    gen = FixedSolutions({"p": [(["a"], "1"), (["b"], "2"), (["c"], "3")]})
    scorer = TableScorer(
        {solution_id("p", 0): [None], solution_id("p", 1): [0.5], solution_id("p", 2): [0.5]}
    )
    row = run_best_of_n(
        _problems({"p": "2"}), gen, scorer, search_cfg(samples_per_prompt=3), STYLE
    ).to_pylist()[0]
    assert row["answer"] == "2"


def test_weighted_and_majority_votes_differ_when_scores_disagree_with_counts():
    # answer 5 once with a high score; answer 7 three times with low scores
    sols = [(["x"], "5"), (["y"], "7"), (["z"], "7"), (["w"], " 7 ")]
    scores = {solution_id("p", i): [s] for i, s in enumerate([0.9, 0.3, 0.3, 0.2])}
    out = run_best_of_n(
        _problems({"p": "7"}), FixedSolutions({"p": sols}), TableScorer(scores), search_cfg(), STYLE
    ).to_pylist()[0]
    assert out["answer"] == "5" and out["correct"] is False
    assert out["weighted_answer"] == "5" and out["weighted_correct"] is False
    assert out["majority_answer"] == "7" and out["majority_correct"] is True
    assert out["num_completions"] == 4


def test_one_generator_call_and_one_judge_call_per_batch():
    problems, table, gen = world(6, p_correct=0.6)
    scorer = OracleScorer(gen.problems)
    out = run_best_of_n(table, gen, scorer, search_cfg(samples_per_prompt=4), STYLE)
    assert [c["problem_ids"] for c in gen.generate_calls] == [[p.problem_id for p in problems]]
    assert len(scorer.calls) == 1
    # every step of every candidate went to the judge in that one call
    assert scorer.calls[0]["rows"] == sum(out.column("candidate_steps").to_pylist())
    assert out.column("judge_calls").to_pylist() == out.column("candidate_steps").to_pylist()
    # batch_prompts splits the prompts into consecutive batches
    gen.generate_calls.clear()
    run_best_of_n(table, gen, OracleScorer(gen.problems), search_cfg(batch_prompts=4), STYLE)
    assert [len(c["problem_ids"]) for c in gen.generate_calls] == [4, 2]


def test_perfect_scorer_reaches_the_oracle_pass_at_n():
    problems, table, gen = world(12, p_correct=0.6)
    out = run_best_of_n(table, gen, OracleScorer(gen.problems), search_cfg(samples_per_prompt=4), STYLE)
    assert out.schema.equals(RESULTS_SCHEMA)
    solutions = gen.generate(table, 4, SamplingConfig()).to_pylist()
    by_id = {p.problem_id: p for p in problems}
    pass_at_n = {
        pid: any(first_error(by_id[pid], s["steps"]) == -1 for s in solutions if s["problem_id"] == pid)
        for pid in by_id
    }
    assert (
        dict(zip(out.column("problem_id").to_pylist(), out.column("correct").to_pylist(), strict=True))
        == pass_at_n
    )
    # the world is hard enough that the pick matters: not every sample is right
    assert not all(first_error(by_id[s["problem_id"]], s["steps"]) == -1 for s in solutions)
    assert accuracy(out) == sum(pass_at_n.values()) / len(pass_at_n)


def test_whole_solutions_get_a_step_budget_per_depth_level():
    # search.sampling.max_new_tokens is per step; one 24-token budget for a whole solution cut the
    # demo's 3-step solutions short (27% accuracy instead of 77%).
    gen = FixedSolutions({"p": [(["1+1=2", "A:2"], "2")]})
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=24, seed=3)
    run_best_of_n(_problems({"p": "2"}), gen, TableScorer({solution_id("p", 0): [1.0, 1.0]}),
                  search_cfg(samples_per_prompt=1, max_depth=8, sampling=sampling), STYLE)
    assert gen.samplings == [sampling.model_copy(update={"max_new_tokens": 24 * 8})]
