"""End to end: the micro world (tests/micro_world.py) through every stage of modes `guided` and
`psrlm`, with real Ray, Serve, vLLM and DeepSpeed, through `rprm-ray run`'s entry point; the
report is written and read back. Then a guided run whose driver is killed (SIGKILL) at a random
point inside a chunked stage and resumed must give the uninterrupted run's outputs."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from micro_world import RECIPE, ROOT, cli_args, finished_stages, free_port, setting, stage_outputs

from rprm_ray import pairs
from rprm_ray.tasks import arith_teacher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

POLICY_STAGES = ["iter_0/data", "iter_0/policy_sft", "iter_0/policy_eval"]
JUDGE_STAGES = ["iter_0/judge_seed", "iter_0/judge_sft", "iter_0/judge_eval_sft", "iter_0/judge_samples",
                "iter_0/judge_dpo", "iter_0/judge_eval_dpo"]
LOOP_STAGES = ["iter_1/search", "iter_1/step_dpo", "iter_1/policy_eval"]
GUIDED = [*POLICY_STAGES, "iter_0/own_solutions", *JUDGE_STAGES, *LOOP_STAGES, "final/best_of_n", "final/beam"]
PSRLM = [*POLICY_STAGES, "iter_0/self_judge_eval", *LOOP_STAGES, "iter_1/self_judge_eval", "iter_1/sft_control",
         "iter_1/sft_control_eval"]


def percent(x) -> bool:
    return isinstance(x, (int, float)) and 0 <= x <= 100


def check_report(run_dir: Path, console: str, stages: list[str], mode: str) -> dict:
    """The run's stages finished in order, and its report (metrics.json, report.html, the summary)
    reads back with every stage's figures."""
    from rprm_ray.report import summary_text

    assert finished_stages(run_dir) == stages
    for key in stages:
        assert f"[done] {key}" in console
    assert f"report: {run_dir / 'report.html'}" in console
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["stages"]) == stages
    assert metrics["pass@1_per_iteration"].keys() == {"0", "1"}
    assert all(percent(v) for v in metrics["pass@1_per_iteration"].values())
    assert metrics["stages"]["iter_0/policy_sft"]["steps"] == int(setting(mode, "bootstrap.policy_sft_steps"))
    sft = metrics["stages"]["iter_0/policy_sft"]
    assert sft["loss_last"] < sft["loss_first"]
    assert metrics["stages"]["iter_1/policy_eval"]["problems"] == 8
    assert metrics["pass@1_final_vs_M1"]["baseline"] == "iter_0/policy_eval"
    # Every iteration problem was searched, its candidate steps judged; step DPO saw the search's pairs.
    search = stage_outputs(run_dir)["iter_1/search/search_results"]
    assert len(search) == metrics["stages"]["iter_1/search"]["problems"] == 8
    assert all(r["candidate_steps"] > 0 and r["judge_calls"] > 0 for r in search)
    assert metrics["stages"]["iter_1/step_dpo"]["pairs"] == metrics["stages"]["iter_1/search"]["pairs"]
    html = (run_dir / "report.html").read_text()
    summary = summary_text(run_dir)
    assert summary and summary in console
    assert "stage time " in summary and set(metrics["seconds_by_stage_kind"]) == {k.split("/")[1] for k in stages}
    for png in ("accuracy_per_iteration.png",):
        assert (run_dir / png).stat().st_size > 0 and png in html
    return metrics


def test_guided_runs_every_stage_and_reports(micro_runs):
    run_dir, console = micro_runs.get("guided")
    m = check_report(run_dir, console, GUIDED, "guided")
    judge = m["judge"]
    assert judge.keys() == {"sft", "dpo"}
    assert all(percent(judge[p]["f1"]) for p in judge)
    assert judge["dpo"]["f1_at_k"].keys() == {"1", "2"}  # the K curve, for the final judge only
    # Beside the injected errors, the judge was scored on M1's own sampled solutions (labelled by
    # the world for evaluation only), greedy after each phase and with the K curve after DPO.
    own = m["stages"]["iter_0/own_solutions"]
    assert own["own_solutions"] == 8 and own["own_steps"] >= 8
    assert all(percent(judge[p]["own_f1"]) for p in judge) and judge["dpo"]["own_f1_at_k"].keys() == {"1", "2"}
    # The judge learned the verdict line, so its own critiques gave DPO pairs and DPO trained. The
    # stage counts the agreeing critiques whose own lines contradict their verdict (never chosen
    # under pairs.sound_chosen_only; the micro judge writes few sound ones).
    samples = m["stages"]["iter_0/judge_samples"]
    assert samples["pairs"] > 0 and m["stages"]["iter_0/judge_dpo"]["pairs"] == samples["pairs"]
    sampled = pq.read_table(run_dir / "iter_0" / "judge_samples" / "critiques.parquet")
    assert samples["agreeing_critiques_unsound"] == pairs.without_unsound_chosen(sampled, arith_teacher.critique_is_sound)[1]
    assert m["best_of_n"]["problems"] == 8 and sorted(m["best_of_n"]["bon_min"]) == ["1", "2"]
    assert m["beam"]["problems"] == 8 and m["beam"]["beam_width"] == 2
    # The judge's scores gave step pairs; step DPO trained on them, the trainer saved the new policy
    # with its checksum, and the iteration's evaluation ran on it.
    assert m["stages"]["iter_1/step_dpo"]["pairs"] > 0 and m["stages"]["iter_1/step_dpo"]["steps"] > 0
    policy_dir = Path(json.loads((run_dir / "manifest.json").read_text())["state"]["policy_dir"])
    assert policy_dir == run_dir / "iter_1" / "step_dpo" / "model"
    assert (policy_dir / "checksum.txt").is_file()
    for png in ("judge_f1_per_phase.png", "f1_vs_k.png", "accuracy_vs_n.png"):
        assert (run_dir / png).stat().st_size > 0


def test_psrlm_runs_every_stage_and_reports(micro_runs):
    run_dir, console = micro_runs.get("psrlm")
    m = check_report(run_dir, console, PSRLM, "psrlm")
    assert "judge" not in m and "best_of_n" not in m
    # M1 learned pairwise judging beside the solutions (EFT): more examples than solutions alone.
    assert m["stages"]["iter_0/policy_sft"]["examples"] > m["stages"]["iter_0/data"]["problems_train"]
    # The policy judged its own candidates, through the judge deployment on its own weights. At this
    # size its judgments seldom pick a side (a few pairs per run): the DPO training and the
    # trainer-to-engine hand-off are checked on the guided run.
    assert all(r["strategy"] == "self_judged" for r in stage_outputs(run_dir)["iter_1/search/search_results"])
    # After M1 and after M2 the policy judged pairs of its own held-out candidates (real Serve
    # compare on its own weights), both orders per pair.
    for key in ("iter_0/self_judge_eval", "iter_1/self_judge_eval"):
        judged = m["stages"][key]
        assert judged["problems"] == 8 and judged["prefixes"] >= 8 and judged["candidates"] == 2 * judged["prefixes"]
        assert judged["judgments"] == 2 * judged["pairs"]
        assert judged["self_judge_accuracy"] is None if judged["pairs"] == 0 else percent(judged["self_judge_accuracy"])
        assert judged["overrule_precision"] is None if judged["overrules"] == 0 else percent(judged["overrule_precision"])
        if "own_step_accuracy" in judged:  # some judgment opened with a readable R line
            assert percent(judged["own_step_accuracy"]) and percent(judged["greedy_step_accuracy"])
    assert m["iterations"]["1"]["step_pairs"] == m["stages"]["iter_1/search"]["pairs"]
    # The SFT-spend control: M1's SFT continued (real DeepSpeed) for the step DPO's steps, then its
    # greedy pass@1 (real vLLM) beside M2's, with M2's difference from it.
    assert m["stages"]["iter_1/sft_control"]["steps"] == m["stages"]["iter_1/step_dpo"]["steps"] > 0
    control_dir = Path(json.loads((run_dir / "manifest.json").read_text())["state"]["sft_control_dir"])
    assert control_dir == run_dir / "iter_1" / "sft_control" / "model" and (control_dir / "checksum.txt").is_file()
    assert percent(m["sft_control_pass@1_per_iteration"]["1"]) and m["stages"]["iter_1/sft_control_eval"]["problems"] == 8
    assert m["pass@1_final_vs_sft_control"]["baseline"] == "iter_1/sft_control_eval"


def _driver(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rprm_ray.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the driver starts its own local cluster, as `rprm-ray run` does
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)  # this checkout's code
    return env


KILL_IN = "iter_1/search"  # a chunked stage: 8 problems in chunks of search.batch_prompts=2
CHUNKS = 4


def _finished_chunks(run_dir: Path) -> int:
    """Chunks of KILL_IN on disk whole (a chunk's trace shard is written last)."""
    return len(list((run_dir / KILL_IN / "chunks" / "search" / "trace").glob("chunk-*.parquet")))


def _copy_until(full_dir: Path, run_dir: Path, sets: list[str], stage: str) -> list[str]:
    """`run_dir`: the uninterrupted run's stages before `stage` (outputs, manifest; their models are
    read from `full_dir`), recorded under the recipe that `sets` makes, so a driver resuming it
    starts at `stage` without training again what the session's run trained. Returns those stages."""
    from rprm_ray.config import dump_recipe, load_recipe
    from rprm_ray.manifest import Manifest, recipe_fingerprint

    kept = GUIDED[:GUIDED.index(stage)]
    for key in kept:  # a stage whose model is cached and that writes no table has no directory
        if (full_dir / key).is_dir():
            shutil.copytree(full_dir / key, run_dir / key, ignore=shutil.ignore_patterns("model"))
    shutil.copy(full_dir / "manifest.json", run_dir / "manifest.json")
    recipe = load_recipe(RECIPE, sets)
    manifest = Manifest.load(run_dir)
    manifest.forget(stage)
    manifest.data["recipe"] = recipe.model_dump(mode="json")
    manifest.data["recipe_fingerprint"] = recipe_fingerprint(manifest.data["recipe"])
    manifest.save()
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    return kept


def test_killed_driver_resumes_to_the_uninterrupted_outputs(micro_runs, tmp_path):
    """A driver SIGKILLed at a random point inside the search, once a random number of its chunks
    is on disk (mid-chunk, or mid-write); resumed, it reads those chunks back, computes the rest and
    every later stage, and gives the uninterrupted run's outputs. RPRM_KILL_SEED replays a failure's
    kill point. The driver starts from a copy of the uninterrupted run's earlier stages."""
    seed = int(os.environ.get("RPRM_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    wait_for, delay = rng.randint(1, CHUNKS - 2), rng.uniform(0.0, 0.1)
    print(f"RPRM_KILL_SEED={seed}: killed {delay:.3f}s after {wait_for} chunks of {KILL_IN} are on disk")
    full_dir, _ = micro_runs.get("guided")
    sets = micro_runs.sets("guided", tmp_path, "killed", serve_port=free_port())
    run_dir = tmp_path / "killed"
    before = _copy_until(full_dir, run_dir, sets, KILL_IN)
    # The driver's output goes to a file, so a driver that exits early says why in the failure.
    driver_log = tmp_path / "killed_driver.log"
    with driver_log.open("w") as log:
        proc = subprocess.Popen(_driver(cli_args(sets, "--resume", str(run_dir))), cwd=ROOT, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while _finished_chunks(run_dir) < wait_for:
        assert proc.poll() is None, ("the driver exited before the stage to kill in:\n"
                                     + driver_log.read_text()[-3000:])
        assert time.monotonic() < deadline, f"timed out waiting for {wait_for} chunks of {KILL_IN}"
        time.sleep(0.01)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert finished_stages(run_dir) == before  # killed inside KILL_IN: not recorded
    on_disk = _finished_chunks(run_dir)
    assert wait_for <= on_disk < CHUNKS

    resumed = subprocess.run(_driver(cli_args(sets, "--resume", str(run_dir))), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for key in before:
        assert f"[skip] {key}" in resumed.stdout
    for key in GUIDED[len(before):]:
        assert f"[done] {key}" in resumed.stdout
    assert finished_stages(run_dir) == GUIDED
    assert f"[part] {KILL_IN}: search reused {on_disk} of {CHUNKS} chunks finished earlier" in resumed.stdout
    search = json.loads((run_dir / "manifest.json").read_text())["stages"][KILL_IN]["metrics"]
    assert search["chunks"] == CHUNKS and search["chunks_reused"] == on_disk
    assert not (run_dir / KILL_IN / "chunks").exists()  # removed once the stage was recorded

    a, b = stage_outputs(full_dir), stage_outputs(run_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between the uninterrupted and the resumed run"
    ma = json.loads((full_dir / "metrics.json").read_text())
    mb = json.loads((run_dir / "metrics.json").read_text())
    assert ma["pass@1_per_iteration"] == mb["pass@1_per_iteration"] and ma["judge"] == mb["judge"]
