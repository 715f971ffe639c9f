"""Every script in bench/ runs at its `--smoke` size, as `make bench` runs it at full size (a
subprocess, through scripts/bench_all.py's command), and prints the line with its figure, so a
broken benchmark fails CI. Benchmarks that read a finished run get the micro run of the mode they
read (tests/micro_world.py): guided, or psrlm for psrlm_seeds."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest
from micro_world import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

_spec = importlib.util.spec_from_file_location("bench_all", ROOT / "scripts" / "bench_all.py")
bench_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_all)


def test_every_known_benchmark_exists():
    """Inputs and result lines name scripts that exist; a benchmark not named there still runs
    below, with --smoke alone, and must exit 0."""
    named = set(bench_all.INPUTS) | set(bench_all.SMOKE_INPUTS) | set(bench_all.RESULT)
    assert named <= set(bench_all.scripts())


@pytest.mark.parametrize("script", bench_all.scripts())
def test_benchmark_runs_at_smoke_size(script: str, request) -> None:
    needed = bench_all.inputs(script, smoke=True)
    runs = {needed[0]: request.getfixturevalue("micro_runs").get(needed[0])[0]} if needed else {}
    done = subprocess.run(bench_all.command(script, runs, smoke=True), cwd=ROOT, env=bench_all.environment(),
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if script in bench_all.RESULT:
        assert bench_all.result_lines(script, done.stdout), f"{script}: no result line in\n{done.stdout[-3000:]}"
