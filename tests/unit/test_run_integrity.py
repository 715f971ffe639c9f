"""Numbers and run files are checked: a corrupt manifest or stage output is reported with what to
rerun (never replaced silently), a non-finite metric is never recorded as a finished stage, and
`--rerun` forgets a stage and the stages after it."""

import json
from pathlib import Path

import pytest

from rprm_ray import batches
from rprm_ray.config import load_recipe
from rprm_ray.loop import Run, RunError, StageResult
from rprm_ray.manifest import ManifestError, non_finite_metrics

ROOT = Path(__file__).resolve().parents[2]


def recipe(tmp_path):
    return load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}"])


def problems(n):
    return batches.from_rows(
        [dict(problem_id=f"p{i}", question=f"{i}+1", answer=str(i + 1), source="t") for i in range(n)], "problems")


def started_run(tmp_path):
    run = Run.open(recipe(tmp_path))
    run.stage("iter_0/data", lambda: StageResult(tables={"problems": (problems(3), "problems")},
                                                 state={"policy_dir": "/a"}))
    run.stage("iter_0/policy_sft", lambda: StageResult(metrics={"loss": 0.5}, state={"policy_dir": "/b"}))
    run.stage("iter_1/search", lambda: StageResult(metrics={"acc": 0.1}, state={"judge_dir": "/j"}))
    return run


@pytest.mark.parametrize("content", [b'{"stages": {', b"\xff\xfe garbage", b'["a list"]',
                                     b'{"recipe_fingerprint": "x", "stages": {"s": 3}, "state": {}}'])
def test_a_corrupt_manifest_is_reported_and_never_replaced(tmp_path, content):
    run = started_run(tmp_path)
    run.manifest.path.write_bytes(content)
    with pytest.raises(ManifestError, match="corrupt") as err:
        Run.open(recipe(tmp_path))  # a fresh run over it
    assert "\n" not in str(err.value) and str(run.manifest.path) in str(err.value)
    with pytest.raises(ManifestError, match="corrupt"):
        Run.open(recipe(tmp_path), resume_dir=run.dir)
    assert run.manifest.path.read_bytes() == content


def test_a_corrupt_stage_output_names_the_stage_to_rerun(tmp_path):
    run = started_run(tmp_path)
    path = run.dir / "iter_0/data/problems.parquet"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    resumed = Run.open(recipe(tmp_path), resume_dir=run.dir)
    with pytest.raises(RunError, match=r"problems.parquet.*rerun it with --resume .* --rerun iter_0/data") as err:
        resumed.table("iter_0/data", "problems", "problems")
    assert "\n" not in str(err.value)


def test_rerun_forgets_the_stage_and_later_ones_and_rebuilds_state(tmp_path):
    run = started_run(tmp_path)
    assert run.manifest.forget("iter_0/policy_sft") == ["iter_0/policy_sft", "iter_1/search"]
    again = Run.open(recipe(tmp_path), resume_dir=run.dir)
    assert list(again.manifest.data["stages"]) == ["iter_0/data"]
    assert again.state == {"policy_dir": "/a"}
    with pytest.raises(ManifestError, match="no finished stage 'iter_9/x'.*iter_0/data"):
        again.manifest.forget("iter_9/x")


def test_non_finite_metrics_are_not_recorded(tmp_path):
    run = Run.open(recipe(tmp_path))
    with pytest.raises(ManifestError, match=r"stage iter_0/sft: non-finite metrics \(loss_last=nan\)"):
        run.stage("iter_0/sft", lambda: StageResult(metrics={"loss_last": float("nan"), "steps": 3.0}))
    assert not run.manifest.is_done("iter_0/sft")
    assert not json.loads(run.manifest.path.read_text())["stages"]
    assert non_finite_metrics({"a": {"b": [1.0, float("inf")]}, "c": "nan"}) == ["a.b.1=inf"]


@pytest.mark.parametrize("kind,row,column", [
    ("step_scores", dict(problem_id="p", solution_id="s", step_idx=0, score=float("nan"), num_valid=1,
                         num_invalid=0), "score"),
    ("critiques", dict(problem_id="p", solution_id="s", step_idx=0, sample_idx=0, prompt="q", critique="c",
                       verdict="Yes", valid=True, p_yes=float("inf"), label=None), "p_yes"),
    ("preference_pairs", dict(pair_id="x", kind="step", problem_id="p", prompt="q", chosen="a", rejected="b",
                              ref_chosen_logp=-1.0, ref_rejected_logp=float("-inf")), "ref_rejected_logp"),
])
def test_batch_schemas_reject_non_finite_numbers(kind, row, column):
    ok = dict(row, **{column: None})
    assert batches.from_rows([ok], kind).num_rows == 1  # null is how a value is missing
    with pytest.raises(batches.BatchError, match=f"{kind}: column '{column}' is not finite at row 1"):
        batches.from_rows([dict(ok, **{KEY[kind]: "other"}), row], kind)


KEY = {"step_scores": "solution_id", "critiques": "solution_id", "preference_pairs": "pair_id"}


def test_rerun_needs_resume(capsys):
    from rprm_ray.cli import main

    assert main(["run", str(ROOT / "recipes" / "tiny_arith.yaml"), "--rerun", "iter_0/data"]) == 2
    assert capsys.readouterr().err.strip() == "rprm-ray run: error: --rerun STAGE needs --resume RUN_DIR"
