"""The model cache's data fingerprint: equal rows give equal keys, any changed row a new one."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.stages.training_stages import table_fingerprint


def test_fingerprint_follows_the_rows_not_the_buffers() -> None:
    table = pa.table({"prompt": ["Q:1+2\n", "Q:3+4\n"], "completion": ["R:1+2=3", "R:3+4=7"]})
    assert table_fingerprint(table) == table_fingerprint(pa.table(table.to_pydict()))
    # A slice shares its parent's buffers; only its own rows count.
    assert table_fingerprint(table.slice(1)) == table_fingerprint(pa.table({"prompt": ["Q:3+4\n"],
                                                                            "completion": ["R:3+4=7"]}))
    changed = pa.table({"prompt": ["Q:1+2\n", "Q:3+4\n"], "completion": ["R:1+2=3", "R:3+4=8"]})
    assert table_fingerprint(changed) != table_fingerprint(table)


def test_judge_dpo_samples_come_from_problems_left_out_of_the_judge_sft_data(tmp_path) -> None:
    from pathlib import Path

    from rprm_ray.config import load_recipe
    from rprm_ray.loop import Run
    from rprm_ray.stages import data, judge

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", "task.train_problems=60", "task.eval_problems=5",
                          "loop.problems_per_iteration=8"])
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    held = set(judge.judge_dpo_problem_ids(run).to_pylist())
    assert held == set(data.problems(run, "train").column("problem_id").to_pylist()[:8])
    dpo_steps = judge.judge_dpo_steps(run)
    assert set(dpo_steps.column("problem_id").to_pylist()) == held
    # Both kinds of steps are there to disagree with.
    assert set(dpo_steps.column("label").to_pylist()) == {True, False}
    sft = judge.judge_seed_stage(run).tables["judge_sft"][0]
    sft_problems = {eid.split("/")[1] for eid in sft.column("example_id").to_pylist()}
    assert sft_problems and not sft_problems & held


def test_a_small_training_set_keeps_half_its_problems_for_the_judge_sft(tmp_path) -> None:
    from pathlib import Path

    from rprm_ray.config import load_recipe
    from rprm_ray.loop import Run
    from rprm_ray.stages import data, judge

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", "task.train_problems=10", "task.eval_problems=5",
                          "loop.problems_per_iteration=64"])
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    assert len(judge.judge_dpo_problem_ids(run)) == 5
    assert judge.judge_seed_stage(run).tables["judge_sft"][0].num_rows > 0
