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


def _run_with_data(tmp_path, *overrides):
    from pathlib import Path

    from rprm_ray.config import load_recipe
    from rprm_ray.loop import Run
    from rprm_ray.stages import data

    # The judge's DPO samples on as many problems as an iteration searches (the schema's default;
    # the demo recipe fixes 512), so that these small worlds split their problems as the tests say.
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml",
                         [f"run_root={tmp_path}", "task.eval_problems=5", "bootstrap.judge_dpo_problems=null",
                          *overrides])
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    return run


def test_the_judge_sft_data_leaves_out_the_searched_and_the_judge_dpo_problems(tmp_path) -> None:
    from rprm_ray.stages import data, judge
    from rprm_ray.stages.policy import iteration_problem_ids

    run = _run_with_data(tmp_path, "task.train_problems=60", "loop.problems_per_iteration=8", "loop.iterations=2")
    train = data.problems(run, "train").column("problem_id").to_pylist()
    assert iteration_problem_ids(run) == train[:16]
    assert judge.judge_dpo_problem_ids(run) == train[16:24]
    dpo_steps = judge.judge_dpo_steps(run)
    assert set(dpo_steps.column("problem_id").to_pylist()) == set(train[16:24])
    # Both kinds of steps are there to disagree with.
    assert set(dpo_steps.column("label").to_pylist()) == {True, False}
    sft = judge.judge_seed_stage(run).tables["judge_sft"][0]
    sft_problems = {eid.split("/")[1] for eid in sft.column("example_id").to_pylist()}
    assert sft_problems and sft_problems <= set(train[24:])  # the 1:1 balance drops some


def test_worked_step_rows_join_the_r_prm_judges_sft_on_its_own_problems(tmp_path) -> None:
    from rprm_ray.stages import data, judge

    common = ("task.train_problems=60", "loop.problems_per_iteration=8", "loop.iterations=2")
    plain = judge.judge_seed_stage(_run_with_data(tmp_path / "a", *common)).tables["judge_sft"][0]
    run = _run_with_data(tmp_path / "b", *common, "bootstrap.worked_step_examples=50")
    result = judge.judge_seed_stage(run)
    table = result.tables["judge_sft"][0]
    worked = [r for r in table.to_pylist() if r["kind"] == "worked_step"]
    assert len(worked) == 50 and table.num_rows == plain.num_rows + 50
    assert result.metrics["worked_step_examples"] == 50
    train = data.problems(run, "train").column("problem_id").to_pylist()
    # Never a searched or judge-DPO problem, and in the judge's prompt format.
    assert {r["example_id"].split("/")[1] for r in worked} <= set(train[24:])
    assert all(r["prompt"].startswith("Q:") and r["completion"].startswith("R:") for r in worked)


def test_a_small_training_set_keeps_half_its_problems_for_the_judge_sft(tmp_path) -> None:
    from rprm_ray.stages import judge

    run = _run_with_data(tmp_path, "task.train_problems=10", "loop.problems_per_iteration=64")
    assert judge.judge_dpo_problem_ids(run) == []  # every problem is searched
    assert len(judge.judge_sft_held_out_ids(run)) == 5
    assert judge.judge_seed_stage(run).tables["judge_sft"][0].num_rows > 0


def test_rprm_mode_searches_nothing_so_holds_out_only_the_judge_dpo_problems(tmp_path) -> None:
    from rprm_ray.stages import data, judge
    from rprm_ray.stages.policy import iteration_problem_ids

    run = _run_with_data(tmp_path, "task.train_problems=60", "loop.problems_per_iteration=8", "loop.mode=rprm")
    train = data.problems(run, "train").column("problem_id").to_pylist()
    assert iteration_problem_ids(run) == []
    assert judge.judge_sft_held_out_ids(run) == set(train[:8])


def test_the_judge_sft_packs_as_the_bootstrap_says_and_leaves_the_policy_trainer_alone() -> None:
    from pathlib import Path

    from rprm_ray.config import load_recipe
    from rprm_ray.stages.judge import judge_sft_trainer

    path = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"
    as_trainer = load_recipe(path, ["trainer.pack_sequences=true"])
    assert judge_sft_trainer(as_trainer).pack_sequences is True
    judge_only = load_recipe(path, ["bootstrap.judge_pack_sequences=true"])
    assert judge_sft_trainer(judge_only).pack_sequences is True
    assert judge_only.trainer.pack_sequences is False
    assert judge_sft_trainer(judge_only).model_dump(exclude={"pack_sequences"}) == \
        judge_only.trainer.model_dump(exclude={"pack_sequences"})
    assert judge_sft_trainer(load_recipe(path, ["trainer.pack_sequences=true",
                                                "bootstrap.judge_pack_sequences=false"])).pack_sequences is False


def test_the_judge_starts_from_the_policy_with_the_verdict_token_or_from_its_own_base(tmp_path) -> None:
    from transformers import AutoTokenizer

    from rprm_ray import tiny
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.stages.judge import judge_init

    run = _run_with_data(tmp_path, "task.train_problems=10", f"model_cache={tmp_path / 'models'}")
    base = judge_init(run)  # no trained policy yet: the judge's own base, with the token
    assert base.name.startswith("base-judge-")
    assert len(AutoTokenizer.from_pretrained(base)) == tiny.JUDGE_VOCAB_SIZE
    policy_dir = tiny.build_tiny_model(TinyModelConfig(), tmp_path / "models" / "policy-sft-x", seed=0)
    run.state["policy_dir"] = str(policy_dir)
    assert judge_init(run) == tiny.with_verdict_token(policy_dir, tmp_path / "models")
    run.recipe = run.recipe.model_copy(update={"models": run.recipe.models.model_copy(update={
        "policy": run.recipe.models.policy.model_copy(update={"name_or_path": str(policy_dir)})})})
    assert judge_init(run) == policy_dir  # not a tiny spec: the policy's own vocabulary
