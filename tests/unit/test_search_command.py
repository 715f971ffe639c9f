"""`rprm-ray search`: everything that can be wrong is reported before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rprm_ray.cli import main
from rprm_ray.commands.search import model_dirs
from rprm_ray.config import load_recipe
from rprm_ray.data import DataError

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"


def test_tiny_models_must_be_given_as_directories(capsys):
    assert main(["search", str(TINY), "--strategy", "beam"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rprm-ray search: error: ") and "pass --policy-model MODEL_OR_RUN" in err


def test_bad_override_names_the_field(capsys):
    assert main(["search", str(TINY), "--strategy", "beam", "--set", "search.beam_width=3"]) == 2
    assert "multiple of beam_width" in capsys.readouterr().err


def test_model_dirs(tmp_path):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    recipe = load_recipe(TINY)
    with pytest.raises(DataError, match="--judge-model"):
        model_dirs(recipe, policy, None)
    with pytest.raises(DataError, match="neither a model directory"):
        model_dirs(recipe, tmp_path, None)
    assert model_dirs(recipe, policy, policy) == (str(policy), str(policy))
    # the policy judges itself in self-judged search
    judged_by_self = load_recipe(TINY, ["search.strategy=self_judged"])
    assert model_dirs(judged_by_self, policy, None) == (str(policy), str(policy))


def test_models_may_be_run_directories(tmp_path):
    """A run directory stands for its latest policy / judge (manifest state), like eval --judge."""
    import json

    run_dir = tmp_path / "runs" / "r1"
    for role in ("policy", "judge"):
        (run_dir / role).mkdir(parents=True)
        (run_dir / role / "config.json").write_text("{}")
    recipe = load_recipe(TINY, [f"run_root={tmp_path / 'runs'}", "name=r1"])
    from rprm_ray.manifest import recipe_fingerprint

    recipe_json = recipe.model_dump(mode="json")
    (run_dir / "manifest.json").write_text(json.dumps({
        "recipe": recipe_json, "recipe_fingerprint": recipe_fingerprint(recipe_json), "stages": {},
        "state": {"policy_dir": str(run_dir / "policy"), "judge_dir": str(run_dir / "judge")},
    }))
    assert model_dirs(recipe, run_dir, run_dir) == (str((run_dir / "policy").resolve()), str((run_dir / "judge").resolve()))


def test_problems_may_be_a_math_file(tmp_path, capsys):
    from rprm_ray.commands.search import load_problems

    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"id": 7, "question": "1+1?", "answer": "2"}) + "\n")
    problems = load_problems(str(path))
    assert problems.column("problem_id").to_pylist() == ["gsm-7"]
    assert problems.column("answer").to_pylist() == ["2"]
    assert main(["search", str(TINY), "--problems", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("rprm-ray search: error: ")
