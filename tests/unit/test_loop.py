"""The driver's bookkeeping without Ray: stages run once, resume skips finished ones, outputs
round-trip through Parquet, a changed recipe cannot resume an old run."""

import json
from pathlib import Path

import pytest

from rprm_ray import batches
from rprm_ray.config import load_recipe
from rprm_ray.loop import Run, RunError, StageResult, format_plan
from rprm_ray.manifest import ManifestError

ROOT = Path(__file__).resolve().parents[2]


def recipe(tmp_path, *extra):
    return load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}", *extra])


def problems_table(n):
    return batches.from_rows(
        [dict(problem_id=f"p{i}", question=f"{i}+1", answer=str(i + 1), source="t") for i in range(n)], "problems")


def test_stage_runs_once_and_resume_skips_it(tmp_path):
    r = recipe(tmp_path)
    calls = []

    def stage():
        calls.append(1)
        return StageResult(metrics={"n": 3}, tables={"problems": (problems_table(3), "problems")},
                           state={"policy_dir": "/x"})

    run = Run.open(r)
    assert run.stage("iter_0/data", stage) == {"n": 3}
    assert run.table("iter_0/data", "problems", "problems").num_rows == 3
    assert run.state["policy_dir"] == "/x"

    again = Run.open(r, resume_dir=run.dir)
    assert again.stage("iter_0/data", stage) == {"n": 3}
    assert len(calls) == 1  # skipped on resume
    assert again.state["policy_dir"] == "/x"
    assert "[skip] iter_0/data" in again.log_lines[0]
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["stages"]["iter_0/data"]["outputs"] == {"problems": "iter_0/data/problems.parquet"}


def test_a_failed_stage_is_not_recorded(tmp_path):
    run = Run.open(recipe(tmp_path))

    def boom():
        raise RuntimeError("engine died")

    with pytest.raises(RuntimeError):
        run.stage("iter_0/x", boom)
    assert not run.manifest.is_done("iter_0/x")


def test_fresh_run_refuses_to_overwrite_a_started_one(tmp_path):
    run = Run.open(recipe(tmp_path))
    run.stage("a", lambda: StageResult())
    with pytest.raises(RunError, match="already holds a run .* --resume"):
        Run.open(recipe(tmp_path))


def test_resume_with_a_different_recipe_is_refused(tmp_path):
    run = Run.open(recipe(tmp_path))
    with pytest.raises(RunError, match="recipe differs"):
        Run.open(recipe(tmp_path, "loop.iterations=7"), resume_dir=run.dir)
    with pytest.raises(ManifestError, match="no manifest.json"):
        Run.open(recipe(tmp_path), resume_dir=tmp_path / "nowhere")


def test_reading_an_unfinished_stage_is_an_error(tmp_path):
    run = Run.open(recipe(tmp_path))
    with pytest.raises(RunError, match="has not finished"):
        run.table("iter_0/data", "problems", "problems")


def test_placement_plan_lists_roles_and_demand():
    r = load_recipe(ROOT / "recipes" / "rprm_qwen2.5-math-7b.yaml")
    text = format_plan(r)
    assert "ProcessJudge (Serve)" in text and "2..8" in text
    assert "Trainer (DeepSpeed ZeRO-3)" in text
    assert "peak demand: 104 CPUs, 18 GPUs" in text


def test_resume_takes_the_run_name_from_the_run_directory(tmp_path, capsys):
    from rprm_ray import cli

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny_arith.yaml"
    run_dir = tmp_path / "runs" / "tiny_arith-20261125-150306"
    assert cli.main(["run", str(recipe), "--resume", str(run_dir), "--dry-run"]) == 0
    assert f"run dir {run_dir}" in capsys.readouterr().out
    # An explicit name wins over the directory's.
    assert cli.main(["run", str(recipe), "--resume", str(run_dir), "--set", "name=other", "--dry-run"]) == 0
    assert f"run dir {run_dir.parent / 'other'}" in capsys.readouterr().out


def test_resume_names_the_changed_fields_and_accepts_a_field_added_at_its_default(tmp_path):
    run = Run.open(recipe(tmp_path))
    with pytest.raises(RunError, match=r"loop\.iterations: 2 -> 7.*trainer\.lr: 0\.002 -> 0\.001"):
        Run.open(recipe(tmp_path, "loop.iterations=7", "trainer.lr=0.001"), resume_dir=run.dir)
    # A run written before a field existed (here: its recipe lacks trainer.dpop_lambda) resumes
    # when the recipe keeps the new field at its default, and not when it changes it.
    at_default = "trainer.dpop_lambda=0"
    old = Run.open(recipe(tmp_path, at_default, "name=older"))
    manifest = json.loads((old.dir / "manifest.json").read_text())
    del manifest["recipe"]["trainer"]["dpop_lambda"]
    manifest["recipe_fingerprint"] = "written-by-older-code"
    (old.dir / "manifest.json").write_text(json.dumps(manifest))
    assert Run.open(recipe(tmp_path, at_default, "name=older"), resume_dir=old.dir).dir == old.dir
    with pytest.raises(RunError, match=r"trainer\.dpop_lambda: 0\.0 -> 50\.0"):
        Run.open(recipe(tmp_path, "trainer.dpop_lambda=50", "name=older"), resume_dir=old.dir)
