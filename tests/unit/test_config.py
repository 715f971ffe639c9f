"""Recipes: every bad recipe fails before Ray starts, with one message naming file and field."""

from pathlib import Path

import pytest

from rprm_ray.config import Recipe, RecipeError, dump_recipe, load_recipe, parse_override

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny_arith.yaml"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_tiny_recipe_loads_and_lists_every_field():
    r = load_recipe(TINY)
    assert r.name == "tiny_arith"
    # The embedded recipe documents every field: dumping the defaults adds no new keys.
    import yaml

    written = yaml.safe_load(TINY.read_text())
    defaults = Recipe().model_dump(mode="json")

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("tiny", "sampling", "autoscaling", "deepspeed"):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(defaults) - keys(written) == set()


def test_every_recipe_in_repo_validates():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        load_recipe(path)


def test_overrides_parse_yaml_values(tmp_path):
    r = load_recipe(TINY, ["trainer.lr=0.01", "loop.iterations=5", "task.operators=['+']",
                           "judge.autoscaling.max_replicas=3"])
    assert r.trainer.lr == 0.01 and r.loop.iterations == 5 and r.task.operators == ["+"]
    assert r.judge.autoscaling.max_replicas == 3
    assert parse_override("a.b=true") == ("a.b", True)


@pytest.mark.parametrize(
    "override, field, words",
    [
        (["trainer.lrr=1"], "trainer.lrr", "unknown field"),
        (["trainer.lr=-1"], "trainer.lr", "greater than 0"),
        (["trainer.lr=fast"], "trainer.lr", "valid number"),
        (["loop.mode=ppo"], "loop.mode", "'rprm', 'psrlm' or 'guided'"),
        (["judge.autoscaling.min_replicas=3"], "judge.autoscaling", "min_replicas (3) must be <= max_replicas (1)"),
        (["models.policy.tiny.num_heads=4"], "models.policy.tiny", "must be 64"),
        (["trainer.global_batch_size=100"], "trainer", "multiple of"),
        (["task.min_steps=4"], "task", "min_steps (4) must be <= max_steps (3)"),
        (["search.strategy=beam", "search.samples_per_prompt=6"], "search", "multiple of beam_width"),
        (["evaluation.math_files=['/nonexistent/x.jsonl']"], "evaluation.math_files.0", "file not found"),
        (["models.teacher.kind=openai"], "models.teacher", "needs teacher.url"),
        (["generator.num_gpus_per_replica=1", "generator.tensor_parallel_size=2"], "generator",
         "tensor_parallel_size (2) needs at least that many GPUs"),
        (["models.prompt_style=paper"], "(recipe)", "compact style"),
        (["models.teacher.kind=openai", "models.teacher.url=http://x/v1", "models.teacher.model=m"], "(recipe)",
         "shown the step after its own first line"),
        (["loop.search_pool_problems=100"], "(recipe)",
         "loop.search_pool_problems (100) must be at least the problems of the largest iteration (1536"),
        (["loop.mode=psrlm", "loop.problems_growth=linear", "loop.problems_per_iteration=512",
          "loop.search_pool_problems=1000"], "(recipe)",
         "largest iteration (1024"),
        (["loop.mode=psrlm", "loop.problems_per_iteration=512", "task.train_problems=1024"], "(recipe)",
         "loop.search_pool_problems: 1024 training problems held back"),
        (["loop.mode=rprm", "bootstrap.judge_dpo_solutions=own"], "(recipe)",
         "bootstrap.judge_dpo_solutions 'own' needs a policy"),
        (["loop.pairwise_judge=frozen_m1"], "(recipe)", "loop.pairwise_judge 'frozen_m1' is a psrlm control"),
        (["loop.search_pool_problems=-1"], "loop.search_pool_problems", "greater than or equal to 0"),
    ],
)
def test_bad_recipes_name_file_field_and_rule(override, field, words):
    with pytest.raises(RecipeError) as exc:
        load_recipe(TINY, override)
    msg = str(exc.value)
    assert msg.startswith(str(TINY) + ": "), msg
    assert f": {field}" in msg, msg
    assert words in msg, msg
    assert "\n" not in msg


def test_file_level_errors(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "a: [1,\n"))
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(RecipeError, match="expected dotted.key=value"):
        load_recipe(TINY, ["trainer.lr"])
    with pytest.raises(RecipeError, match="'lr' is a value, not a section"):
        load_recipe(TINY, ["trainer.lr.x=1"])


def test_batch_size_units_and_derived_accumulation():
    r = load_recipe(TINY, ["trainer.micro_batch_size_per_device=16", "trainer.global_batch_size=64"])
    assert r.trainer.gradient_accumulation_steps == 4


def test_dump_round_trips(tmp_path):
    r = load_recipe(TINY, ["loop.iterations=3"])
    again = load_recipe(write(tmp_path, dump_recipe(r)))
    assert again == r


def test_psrlm_on_a_dataset_needs_a_teacher_for_its_pairwise_examples():
    psrlm = ROOT / "recipes" / "psrlm_qwen2.5-math-7b.yaml"
    with pytest.raises(RecipeError, match=r"psrlm' on a dataset needs models.teacher"):
        load_recipe(psrlm, ["models.teacher.kind=programmatic"])
    load_recipe(psrlm, ["models.teacher.kind=programmatic", "bootstrap.pairwise_judge_examples=0"])
    r = load_recipe(psrlm)
    assert r.models.teacher.max_concurrent_requests == 64 and r.models.teacher.api == "chat"


def test_a_self_judging_policy_is_its_own_judge_whatever_models_judge_says():
    """Mode psrlm judges with the policy: a models.judge left in the recipe is not used for the
    judge's model, chat template or length checks, and the plan says so in one line."""
    from rprm_ray.hub import length_checks
    from rprm_ray.loop import format_plan

    guided = load_recipe(TINY, ["models.judge.tiny.max_position_embeddings=1024"])
    psrlm = load_recipe(TINY, ["loop.mode=psrlm", "models.judge.tiny.max_position_embeddings=1024"])
    assert guided.judge_model is guided.models.judge
    assert psrlm.judge_model is None
    assert "note: models.judge (tiny) is not used" in format_plan(psrlm)
    assert "note:" not in format_plan(guided)
    _, notes = length_checks(psrlm)
    assert "judge.max_model_len_tokens (512) <= models.policy max_position_embeddings (512)" in notes
    _, notes = length_checks(guided)
    assert "judge.max_model_len_tokens (512) <= models.judge max_position_embeddings (1024)" in notes


def test_the_search_pool_is_held_back_in_psrlm_only_unless_asked():
    assert load_recipe(TINY).search_pool_problems == 0  # guided: as measured
    assert load_recipe(TINY, ["loop.mode=psrlm", "loop.iterations=3"]).search_pool_problems == 3 * 1536
    assert load_recipe(TINY, ["loop.mode=psrlm", "loop.search_pool_problems=0"]).search_pool_problems == 0
    assert load_recipe(TINY, ["loop.search_pool_problems=1600"]).search_pool_problems == 1600


def test_the_judge_dpo_samples_on_m1s_own_solutions_where_the_world_labels_them() -> None:
    assert load_recipe(TINY).judge_dpo_on_own_solutions  # guided, arith
    assert not load_recipe(TINY, ["loop.mode=rprm"]).judge_dpo_on_own_solutions  # no policy
    assert not load_recipe(TINY, ["bootstrap.judge_dpo_solutions=labeled"]).judge_dpo_on_own_solutions
