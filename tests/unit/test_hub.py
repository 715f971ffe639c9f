"""Model resolution (rprm_ray/hub.py): hub ids from an offline cache laid by `rprm-ray tiny`,
directories as they are, and a missing model failing before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rprm_ray.cli import main
from rprm_ray.config import load_recipe
from rprm_ray.hub import (
    ModelResolutionError,
    hub_cache_dir,
    length_checks,
    resolve_model,
    resolve_recipe_models,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny_arith.yaml"


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_laid_tiny_model_resolves_offline_in_the_hubs_layout(hub_tiny_cache, offline):
    cache, repo_id = hub_tiny_cache
    repo = cache / "models--tiny-org--paper-smoke"
    commit = (repo / "refs" / "main").read_text()
    assert len(commit) == 40
    path = resolve_model(repo_id, cache=cache)
    assert path == (repo / "snapshots" / commit).resolve()
    assert json.loads((path / "config.json").read_text())["max_position_embeddings"] == 4096
    assert "<|im_start|>" in (path / "chat_template.jinja").read_text()
    from transformers import AutoTokenizer

    from rprm_ray.prompts import VERDICT_PREFIX

    # The verdict prefix is one token, as in the tiny world's judges (a smoke-sized judge learns it).
    assert len(AutoTokenizer.from_pretrained(path)(VERDICT_PREFIX, add_special_tokens=False).input_ids) == 1


def test_missing_hub_model_names_model_revision_and_cache(tmp_path, offline):
    with pytest.raises(ModelResolutionError) as exc:
        resolve_model("tiny-org/absent", revision="v2", cache=tmp_path, where="models.judge.name_or_path")
    text = str(exc.value)
    assert "models.judge.name_or_path: tiny-org/absent (revision v2, cache " in text
    assert str(tmp_path) in text and "offline" in text and "\n" not in text


def test_directory_is_used_as_is_and_a_non_model_directory_fails(tmp_path, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    with pytest.raises(ModelResolutionError, match="without config.json"):
        resolve_model(str(tmp_path), where="models.policy.name_or_path")
    with pytest.raises(ModelResolutionError, match="not a hub id"):
        resolve_model("no/such/thing", where="models.policy.name_or_path")


def test_recipe_models_resolve_every_role_from_the_cache(hub_tiny_cache, offline):
    cache, repo_id = hub_tiny_cache
    recipe = load_recipe(TINY, [f"models.policy.name_or_path={repo_id}", f"models.judge.name_or_path={repo_id}",
                                f"models.hub_cache={cache}", "models.teacher.kind=vllm",
                                f"models.teacher.model={repo_id}"])
    resolved = resolve_recipe_models(recipe)
    assert set(resolved) == {"policy", "judge", "teacher"}
    assert len(set(resolved.values())) == 1


def test_run_with_a_missing_model_fails_before_ray_starts(tmp_path, offline, capsys):
    import sys

    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # a session cluster
    rc = main(["run", str(TINY), "--set", "models.policy.name_or_path=tiny-org/absent",
               "--set", f"models.hub_cache={tmp_path}", "--set", f"run_root={tmp_path / 'runs'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "models.policy.name_or_path: tiny-org/absent (revision main" in err
    assert not (tmp_path / "runs").exists()  # no run directory, no stage, no actor
    assert ray_was_up or "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_dry_run_checks_max_model_len_against_the_models_positions(hub_tiny_cache, offline, capsys):
    cache, repo_id = hub_tiny_cache
    recipe = load_recipe(TINY, [f"models.policy.name_or_path={repo_id}", f"models.hub_cache={cache}",
                                "generator.max_model_len_tokens=8192"])
    errors, _ = length_checks(recipe)
    assert errors == [f"generator.max_model_len_tokens (8192) exceeds models.policy {repo_id}'s "
                      "max_position_embeddings (4096)"]
    rc = main(["run", str(TINY), "--dry-run", "--set", "judge.max_model_len_tokens=1024"])
    assert rc == 2  # the tiny judge has 512 positions
    assert "judge.max_model_len_tokens (1024) exceeds models.judge tiny's max_position_embeddings (512)" in \
        capsys.readouterr().err
    # Unreachable configs are reported, not failed.
    recipe = load_recipe(TINY, ["models.policy.name_or_path=tiny-org/absent", f"models.hub_cache={cache}"])
    errors, notes = length_checks(recipe)
    assert not errors and any("not reachable; unchecked" in n for n in notes)


def test_both_7b_recipes_dry_run(offline):
    for name in ("rprm_qwen2.5-math-7b.yaml", "psrlm_qwen2.5-math-7b.yaml"):
        assert main(["run", str(ROOT / "recipes" / name), "--dry-run"]) == 0


def test_default_cache_is_hf_home(monkeypatch):
    from huggingface_hub import constants

    assert hub_cache_dir() == Path(constants.HF_HUB_CACHE)
    assert hub_cache_dir("/x/y") == Path("/x/y")


def test_a_missing_hub_id_is_laid_when_the_recipe_asks(tmp_path, offline):
    recipe = load_recipe(ROOT / "recipes" / "paper_smoke.yaml", [f"models.hub_cache={tmp_path}"])
    resolved = resolve_recipe_models(recipe)
    assert set(resolved) == {"policy", "judge", "teacher"}  # the launched teacher resolves too
    assert resolved["policy"].parent.parent.name == "models--rprm-smoke--tiny-chat"
    assert json.loads((resolved["policy"] / "config.json").read_text())["max_position_embeddings"] == 4096
    recipe = load_recipe(TINY, ["models.policy.name_or_path=rprm-smoke/absent", f"models.hub_cache={tmp_path}"])
    with pytest.raises(ModelResolutionError, match="rprm-smoke/absent"):
        resolve_recipe_models(recipe)  # lay_tiny_if_missing is off by default


def test_teacher_launch_needs_a_local_openai_url():
    from rprm_ray.config import RecipeError

    with pytest.raises(RecipeError, match="teacher.launch starts a local server"):
        load_recipe(TINY, ["models.teacher.launch=true"])
    with pytest.raises(RecipeError, match="a url with a port"):
        load_recipe(ROOT / "recipes" / "paper_smoke.yaml", ["models.teacher.url=http://127.0.0.1/v1"])
