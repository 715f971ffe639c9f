"""`rprm-ray search`: everything that can be wrong is reported before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rprm_ray.cli import main
from rprm_ray.commands.search import model_dirs
from rprm_ray.config import load_recipe

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"


def test_tiny_models_must_be_given_as_directories(capsys):
    assert main(["search", str(TINY), "--strategy", "beam"]) == 2
    assert "pass --policy-model DIR" in capsys.readouterr().err


def test_bad_override_names_the_field(capsys):
    assert main(["search", str(TINY), "--strategy", "beam", "--set", "search.beam_width=3"]) == 2
    assert "multiple of beam_width" in capsys.readouterr().err


def test_model_dirs(tmp_path):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    recipe = load_recipe(TINY)
    with pytest.raises(ValueError, match="--judge-model"):
        model_dirs(recipe, policy, None)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        model_dirs(recipe, tmp_path, None)
    assert model_dirs(recipe, policy, policy) == (str(policy), str(policy))
    # the policy judges itself in self-judged search
    judged_by_self = load_recipe(TINY, ["search.strategy=self_judged"])
    assert model_dirs(judged_by_self, policy, None) == (str(policy), str(policy))
