"""The `tracking:` block: stage metrics and the report's plots land in TensorBoard event files,
read back with TensorBoard's own reader; nothing touches the network; no block, no tracker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rprm_ray import report, tracking
from rprm_ray.config import RecipeError, load_recipe
from rprm_ray.loop import Run, StageResult

ROOT = Path(__file__).resolve().parents[2]


def recipe(tmp_path: Path, *extra: str):
    return load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}", "loop.iterations=2", *extra])


@pytest.fixture
def no_network(monkeypatch):
    """Any outgoing connection fails the test."""

    def refuse(self, address):
        raise AssertionError(f"tracking tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_stage_metrics_and_report_plots_reach_tensorboard(tmp_path, no_network) -> None:
    run = Run.open(recipe(tmp_path, "tracking={backend: tensorboard}"))
    for k, acc in ((0, 40.0), (1, 45.0), (2, 52.5)):
        run.stage(f"iter_{k}/policy_eval", lambda acc=acc: StageResult(
            metrics={"pass@1": acc, "problems": 8, "gain": {"points": acc - 40.0}, "ok": True, "note": "x"}))
    run.stage("final/check", lambda: StageResult(metrics={"accuracy": 60.0}))
    report.write_report(run.dir)
    run.finish()

    acc = events(run.dir / "tensorboard")
    tags = acc.Tags()
    assert [(e.step, e.value) for e in acc.Scalars("policy_eval/pass@1")] == [(0, 40.0), (1, 45.0), (2, 52.5)]
    assert [e.value for e in acc.Scalars("policy_eval/gain/points")] == [0.0, 5.0, 12.5]
    assert [e.step for e in acc.Scalars("check/accuracy")] == [3]  # final stages after the last iteration
    assert "time/policy_eval" in tags["scalars"]
    assert not [t for t in tags["scalars"] if t.endswith(("/ok", "/note"))]  # bools and text are not scalars
    [image] = acc.Images("plots/accuracy_per_iteration")
    assert image.width > 100 and image.height > 100
    text_tags = {t for t in tags["tensors"]}
    assert {"recipe/text_summary", "report/text_summary"} <= text_tags


def test_a_relative_tracking_dir_is_under_the_run(tmp_path, no_network) -> None:
    run = Run.open(recipe(tmp_path, "tracking={dir: tb, log_plots: false}"))
    run.stage("iter_0/data", lambda: StageResult(metrics={"rows": 3}))
    run.finish()
    assert [e.value for e in events(run.dir / "tb").Scalars("data/rows")] == [3.0]


def test_no_tracking_block_writes_no_events(tmp_path) -> None:
    run = Run.open(recipe(tmp_path))
    run.stage("iter_0/data", lambda: StageResult(metrics={"rows": 3}))
    run.finish()
    assert run.tracker is None and not (run.dir / "tensorboard").exists()


def test_unknown_tracker_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(RecipeError, match="tracking.backend"):
        recipe(tmp_path, "tracking={backend: mlflow}")


def test_scalars_flatten_numbers_and_steps_follow_iterations() -> None:
    assert tracking.scalars({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": False}) == {"a": 1.0, "b/c": 2.5}
    assert [tracking.stage_step(k, 3) for k in ("iter_0/data", "iter_2/search", "final/beam")] == [0, 2, 4]
