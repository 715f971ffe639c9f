"""The problems psrlm's iterations search are held back from M1's SFT (its solutions and its
pairwise judgments), and the searches read no reference answer."""

from __future__ import annotations

import pytest

from rprm_ray.config import Recipe
from rprm_ray.loop import Run
from rprm_ray.stages import data
from rprm_ray.stages.policy import iteration_problems, m1_problems, search_pool


def _run(tmp_path, **loop) -> Run:
    recipe = Recipe.model_validate({
        "name": "pool", "run_root": str(tmp_path / "runs"), "models": {"too_long": "truncate_left"},
        "task": {"train_problems": 40, "eval_problems": 4},
        "loop": {"problems_per_iteration": 6, "iterations": 3, **loop},
    })
    run = Run.open(recipe)
    run.stage(data.DATA, lambda: data.data_stage(run))
    return run


def _ids(table) -> list[str]:
    return table.column("problem_id").to_pylist()


def test_psrlm_searches_problems_m1_never_trained_on(tmp_path):
    run = _run(tmp_path, mode="psrlm")
    train = _ids(data.problems(run, "train"))
    searched = [_ids(iteration_problems(run, k)) for k in (1, 2, 3)]
    assert searched == [train[0:6], train[6:12], train[12:18]]  # a new slice per iteration
    assert _ids(search_pool(run)) == train[:18]
    m1 = set(_ids(m1_problems(run)))
    assert m1 == set(train[18:]) and not m1 & {p for ids in searched for p in ids}
    # What M1 is trained on: the task's rows for exactly those problems (solutions and judgments).
    sft = run.task.policy_sft(m1_problems(run)).column("example_id").to_pylist()
    assert {e.split("/", 1)[1] for e in sft} == m1
    eft = run.task.pairwise_sft(m1_problems(run), 20, 0).column("example_id").to_pylist()
    assert {e.split("/")[1] for e in eft} <= m1


def test_linear_growth_searches_k_times_the_problems_in_iteration_k(tmp_path):
    run = _run(tmp_path, mode="psrlm", problems_growth="linear", problems_per_iteration=4)
    train = _ids(data.problems(run, "train"))
    # PSRLM's 400 / 800 / 1,200 schedule, scaled: 4 / 8 / 12, each slice new.
    assert [_ids(iteration_problems(run, k)) for k in (1, 2, 3)] == [train[0:4], train[4:12], train[12:24]]
    assert _ids(search_pool(run)) == train[:24] and _ids(m1_problems(run)) == train[24:]


def test_a_smaller_pool_is_cycled_and_zero_keeps_every_problem_for_m1(tmp_path):
    run = _run(tmp_path, mode="psrlm", search_pool_problems=9)
    train = _ids(data.problems(run, "train"))
    assert [_ids(iteration_problems(run, k)) for k in (1, 2, 3)] == [train[0:6], train[2:8], train[0:6]]
    assert _ids(m1_problems(run)) == train[9:]
    guided = _run(tmp_path / "g", mode="guided")
    assert _ids(m1_problems(guided)) == _ids(data.problems(guided, "train"))  # as before: nothing held back
    assert _ids(iteration_problems(guided, 2)) == _ids(data.problems(guided, "train"))[6:12]


@pytest.mark.parametrize("mode", ["psrlm", "guided"])
def test_the_searched_problems_carry_no_reference_answer(tmp_path, mode):
    run = _run(tmp_path, mode=mode)
    for k in (1, 2, 3):
        table = iteration_problems(run, k)
        assert table.num_rows == 6 and table.column("answer").null_count == 6


def test_m1s_sft_stage_trains_on_the_rest_only_with_j_judge_prompts(tmp_path, monkeypatch):
    from rprm_ray.stages import policy

    run = _run(tmp_path, mode="psrlm")
    seen = {}

    def fake_sft(run_, key, base, table, steps, name):  # the trainer is not what is tested here
        seen.update(key=key, table=table)
        return tmp_path / "m1", {}

    monkeypatch.setattr(policy, "cached_sft", fake_sft)
    monkeypatch.setattr(policy, "base_model", lambda run_, which: tmp_path / "base")
    run.current_stage = "iter_0/policy_sft"
    result = policy.policy_sft_stage(run)
    rows = seen["table"].to_pylist()
    trained = {r["example_id"].split("/")[1] for r in rows}
    searched = {p for k in (1, 2, 3) for p in _ids(iteration_problems(run, k))}
    assert trained == set(_ids(m1_problems(run))) and not trained & searched
    kinds = {r["kind"] for r in rows}
    assert kinds == {"policy", "pairwise"}
    assert all(r["prompt"].startswith("J:" if r["kind"] == "pairwise" else "Q:") for r in rows)
    assert result.metrics["search_pool_problems"] == 18 and result.metrics["problems"] == 22


def _plain_and_worked_m1(tmp_path, monkeypatch, mode: str, worked: int) -> tuple[dict, dict, Run]:
    """M1's SFT stage (what it would train on, and its cache key) without and with `worked`
    worked-step rows asked for."""
    plain = _m1_stage(_run(tmp_path / "a", mode=mode), tmp_path, monkeypatch)[0]
    run = _run(tmp_path / "b", mode=mode)
    run.recipe = run.recipe.model_copy(update={"bootstrap": run.recipe.bootstrap.model_copy(
        update={"worked_step_examples": worked})})
    return plain, _m1_stage(run, tmp_path, monkeypatch)[0], run


def test_worked_step_rows_join_m1s_rows_and_its_key(tmp_path, monkeypatch):
    plain, seen, run = _plain_and_worked_m1(tmp_path, monkeypatch, "psrlm", 30)
    kinds = [r["kind"] for r in seen["table"].to_pylist()]
    assert kinds.count("worked_step") == 30 and seen["table"].num_rows == plain["table"].num_rows + 30
    assert seen["key"] != plain["key"]
    worked = [r for r in seen["table"].to_pylist() if r["kind"] == "worked_step"]
    assert {r["example_id"].split("/")[1] for r in worked} <= set(_ids(m1_problems(run)))  # never the pool
    with pytest.raises(ValueError, match="worked_step_examples"):
        Recipe.model_validate({"task": {"kind": "dataset", "dataset": {"train_problems": "a.jsonl",
                                                                        "eval_problems": "b.jsonl"}},
                               "loop": {"mode": "psrlm"},
                               "bootstrap": {"pairwise_judge_examples": 0, "worked_step_examples": 5}})


def test_guideds_m1_leaves_the_worked_step_rows_to_the_judge(tmp_path, monkeypatch):
    plain, seen, _ = _plain_and_worked_m1(tmp_path, monkeypatch, "guided", 30)
    assert seen["key"] == plain["key"] and seen["table"].equals(plain["table"])


def _m1_stage(run, tmp_path, monkeypatch) -> tuple[dict, object]:
    from rprm_ray.stages import policy

    seen = {}
    monkeypatch.setattr(policy, "cached_sft", lambda run_, key, base, table, steps, name:
                        seen.update(key=key, table=table) or (tmp_path / "m1", {}))
    monkeypatch.setattr(policy, "base_model", lambda run_, which: tmp_path / "base")
    run.current_stage = "iter_0/policy_sft"
    return seen, policy.policy_sft_stage(run)


def test_guideds_m1_trains_on_every_problem(tmp_path, monkeypatch):
    from rprm_ray.stages.training_stages import cache_key

    run = _run(tmp_path, mode="guided")
    seen, result = _m1_stage(run, tmp_path, monkeypatch)
    r = run.recipe
    assert seen["key"] == cache_key("policy-sft", "guided", r.task.model_dump(mode="json"),
                                    r.models.policy.model_dump(mode="json"), r.trainer.sft_fingerprint(),
                                    r.bootstrap.policy_sft_steps, r.bootstrap.pairwise_judge_examples, r.seed)
    assert seen["table"].num_rows == 40 and "search_pool_problems" not in result.metrics


@pytest.mark.parametrize("mode", ["psrlm", "guided"])
def test_m1s_cache_key_ignores_the_dpo_settings(tmp_path, monkeypatch, mode):
    """A DPO-only trainer field (step DPO's epochs, say) reuses the cached M1 instead of retraining it."""
    key = _m1_stage(_run(tmp_path / "a", mode=mode), tmp_path, monkeypatch)[0]["key"]
    for i, changed in enumerate(({"dpo_epochs": 4, "dpop_lambda": 0.0, "dpo_nll_coef": 0.5}, {"lr": 0.01})):
        run = _run(tmp_path / str(i), mode=mode)
        run.recipe = run.recipe.model_copy(update={"trainer": run.recipe.trainer.model_copy(update=changed)})
        same = _m1_stage(run, tmp_path, monkeypatch)[0]["key"] == key
        assert same == ("lr" not in changed), changed
