"""Safe defaults: the dashboard and Serve listen on 127.0.0.1 unless a recipe opts in, remote code
is never trusted unless asked, and an API key (read from the variable a recipe names) never
reaches the run directory, its report or the console."""

from pathlib import Path

import pytest

from rprm_ray.config import Recipe, load_recipe
from rprm_ray.loop import Run, StageResult, format_plan
from rprm_ray.report import write_report

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_defaults_listen_locally_and_trust_no_remote_code():
    r = Recipe()
    assert (r.resources.dashboard_host, r.resources.serve_host) == ("127.0.0.1", "127.0.0.1")
    assert r.models.policy.trust_remote_code is False and r.models.judge.trust_remote_code is False


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_keep_the_safe_defaults(path):
    r = load_recipe(path)
    assert r.resources.dashboard_host == "127.0.0.1" and r.resources.serve_host == "127.0.0.1"
    specs = [r.models.policy] + ([r.models.judge] if r.models.judge else [])
    assert not any(spec.trust_remote_code for spec in specs)


def test_an_api_key_never_reaches_the_run_directory_or_the_console(tmp_path, monkeypatch, capsys):
    key = "sk-rprm-test-0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("RPRM_TEST_TEACHER_KEY", key)
    recipe = load_recipe(ROOT / "recipes" / "rprm_qwen2.5-math-7b.yaml",
                         [f"run_root={tmp_path}", "models.teacher.api_key_env=RPRM_TEST_TEACHER_KEY"])
    print(format_plan(recipe))
    run = Run.open(recipe)
    run.stage("iter_0/seed", lambda: StageResult(metrics={"critiques": 3}))
    write_report(run.dir)
    out = capsys.readouterr()
    files = [p for p in run.dir.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.name == "recipe.yaml" for p in files)
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    assert "RPRM_TEST_TEACHER_KEY" in (run.dir / "recipe.yaml").read_text()  # the name, not the value
    assert key not in out.out + out.err


def test_engines_load_safetensors_weights_only(tmp_path):
    from rprm_ray.engines.base import check_model_dir

    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(FileNotFoundError, match=r"vllm engine: .*pickled has no \*.safetensors weights; "
                                                r"only safetensors checkpoints are loaded"):
        check_model_dir(model, "vllm engine")
    (model / "model.safetensors").write_bytes(b"")
    assert check_model_dir(model, "vllm engine") == model
