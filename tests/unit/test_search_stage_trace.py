"""The self-rewarding search stage writes its `search_trace`, and the report shows it: the stage
runs on the search tests' scripted generator and oracle judges (no Ray, no engine), in both modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from stage_roles import Roles
from test_search_world import OracleJudge, OracleScorer, world

from rprm_ray import report
from rprm_ray.config import load_recipe
from rprm_ray.loop import Run, StageResult
from rprm_ray.stages.data import DATA
from rprm_ray.stages.policy import self_reward_search_stage

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["guided", "psrlm"])
def test_search_stage_records_every_level_and_the_report_draws_one_problem(tmp_path, mode) -> None:
    _, table, gen = world(6, p_correct=0.3, guarantee_correct=True)
    judge = OracleScorer(gen.problems) if mode == "guided" else OracleJudge(gen.problems)
    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", f"loop.mode={mode}", "loop.problems_per_iteration=6",
                          "generator.candidates_per_step=4"])
    run = Run.open(recipe, roles=Roles(gen, judge))
    run.stage(DATA, lambda: StageResult(tables={"problems_train": (table, "problems")},
                                        state={"policy_dir": "policy", "judge_dir": "judge"}))
    run.stage("iter_1/search", lambda: self_reward_search_stage(run, 1))

    trace = run.table("iter_1/search", "search_trace", "search_trace").to_pylist()
    results = run.table("iter_1/search", "search_results", "search_results").to_pylist()
    kept = {}
    for row in trace:  # sorted by problem and level
        if row["outcome"] == "kept":
            kept.setdefault(row["problem_id"], []).append(row["step"])
    assert kept == {r["problem_id"]: r["steps"] for r in results}
    assert {r["problem_id"] for r in trace} == {r["problem_id"] for r in results}

    page = report.write_report(run.dir).read_text()
    search = page[page.index("One search"):page.index("Stage timeline")]
    assert 'class="cand kept"' in search and 'class="cand rejected"' in search
    assert ("wins " if mode == "psrlm" else "score 1.00") in search
