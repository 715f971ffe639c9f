"""psrlm's per-iteration self-judge stage: the policy's greedy solutions give the prefixes, its
sampled candidates there the pairs, and the judge role compares each discordant pair in both
orders. Runs on the search tests' scripted generator and oracle judge (no Ray, no engine)."""

from __future__ import annotations

from pathlib import Path

from stage_roles import Roles
from test_search_world import STYLE, FakeGenerator, OracleJudge, world

from rprm_ray import batches
from rprm_ray.config import load_recipe
from rprm_ray.evaluation.self_judge import own_prefixes
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages.data import DATA
from rprm_ray.stages.self_judge import measures_self_judge, self_judge_eval_stage

ROOT = Path(__file__).resolve().parents[2]


def _solution(pid: str, steps: list[str]) -> dict:
    return {"problem_id": pid, "sample_idx": 0, "question": "3+4", "text": "\n".join(steps), "steps": steps,
            "answer": None, "finished": True, "correct": None}


def test_prefixes_run_from_the_empty_one_to_the_final_step() -> None:
    table = batches.from_rows([_solution("p", ["3+4=7", "7*2=14", "A:14", "junk"]), _solution("q", [])],
                              "solutions")
    prefixes = own_prefixes(table, STYLE).to_pylist()
    assert [(r["prefix_id"], r["prefix_steps"]) for r in prefixes] == [
        ("p/0", []), ("p/1", ["3+4=7"]), ("p/2", ["3+4=7", "7*2=14"]), ("q/0", [])]


class RightGreedy:
    """Greedy solutions without an error, sampled candidates right half the time: every pair's
    prefix is right, so the oracle judge names the right step every time."""

    def __init__(self, problems):
        self.sampler = FakeGenerator(problems, p_correct=0.5, guarantee_correct=True)
        self.solver = FakeGenerator(problems, p_correct=1.0)

    def generate(self, problems, n, sampling):
        return self.solver.generate(problems, n, sampling)

    def expand(self, prefixes, w, sampling):
        return self.sampler.expand(prefixes, w, sampling)


def _run(tmp_path, judge, *overrides):
    _, table, gen = world(8)
    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", "loop.mode=psrlm", "generator.candidates_per_step=4", *overrides])
    run = Run.open(recipe, roles=Roles(RightGreedy(gen.problems), judge(gen.problems)))
    run.stage(DATA, lambda: StageResult(tables={"problems_eval": (table, "problems")},
                                        state={"policy_dir": "m1", "m1_dir": "m1"}))
    return run


def test_the_stage_measures_an_oracle_and_a_position_biased_judge(tmp_path) -> None:
    run = _run(tmp_path / "oracle", OracleJudge)
    assert measures_self_judge(run)
    m = run.stage("iter_0/self_judge_eval", lambda: self_judge_eval_stage(run, "m1"))
    assert m["problems"] == 8 and m["prefixes"] == 8 * 4  # 3 operations + the answer step each
    assert m["pairs"] > 0 and m["judgments"] == 2 * m["pairs"] and m["invalid"] == 0
    assert m["self_judge_accuracy"] == 100.0 and m["position_consistency"] == 100.0 and m["slot_a_rate"] == 50.0
    assert m["self_judge_accuracy_interval"] == [100.0, 100.0]
    # The greedy steps are all right: the oracle never overrules one.
    assert m["overrules"] == 0 and m["overrule_precision"] is None and m["greedy_mistakes"] == 0
    judged = run.table("iter_0/self_judge_eval", "judgments", "pairwise_judgments")
    assert judged.num_rows == m["judgments"]

    biased = _run(tmp_path / "biased", lambda problems: OracleJudge(problems, tie_after_steps=0),
                  "evaluation.self_judge_problems=4")
    b = biased.stage("iter_0/self_judge_eval", lambda: self_judge_eval_stage(biased, "m1"))
    assert b["problems"] == 4 and b["self_judge_accuracy"] == 50.0 and b["slot_a_rate"] == 100.0
    assert b["position_consistency"] == 0.0 and b["pair_accuracy"] == 0.0
    assert b["overrules"] > 0 and b["overrule_precision"] == 0.0  # slot A: the right greedy step half the time
    low, high = b["self_judge_accuracy_interval"]
    assert low == high == 50.0  # every pair scores one of two


def test_only_psrlm_on_a_labelled_world_gets_the_stage(tmp_path) -> None:
    assert not measures_self_judge(_run(tmp_path / "off", OracleJudge, "evaluation.self_judge_problems=0"))
    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path / 'g'}"])
    assert not measures_self_judge(Run.open(recipe))


def test_a_frozen_m1_judge_judges_every_iteration(tmp_path) -> None:
    from rprm_ray.stages.policy import pairwise_judge_dir

    run = _run(tmp_path / "self", OracleJudge)
    run.state.update({"m1_dir": "m1", "policy_dir": "m3"})
    assert pairwise_judge_dir(run) == "m3"
    frozen = _run(tmp_path / "frozen", OracleJudge, "loop.pairwise_judge=frozen_m1")
    frozen.state.update({"m1_dir": "m1", "policy_dir": "m3"})
    assert pairwise_judge_dir(frozen) == "m1"
