"""The micro size of the tiny world for the end-to-end runs in `make test`: every stage of a mode
runs with real Ray, Serve, vLLM and DeepSpeed, on so few problems and training steps that a mode
takes minutes. The models learn just enough of the formats (the judge's verdict line, the policy's
step lines) that the DPO stages get pairs and train, so the trainer-to-engine hand-off runs too;
they stay far from the demo's accuracy. These runs check that the pipeline works, not what it
learns."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny_arith.yaml"

MICRO = [
    "task.train_problems=400", "task.eval_problems=8", "task.max_steps=2",
    "bootstrap.policy_sft_steps=150", "bootstrap.judge_sft_steps=300", "bootstrap.pairwise_judge_examples=200",
    "trainer.micro_batch_size_per_device=16", "trainer.global_batch_size=16", "trainer.max_seq_len_tokens=192",
    "loop.iterations=1", "loop.problems_per_iteration=8", "bootstrap.judge_dpo_problems=8",
    "loop.max_steps_per_solution=3",
    "generator.candidates_per_step=2", "generator.sampling.max_new_tokens=16",
    "judge.sampling.max_new_tokens=32", "pairs.balance_verdicts=false",
    "evaluation.bon_samples_per_prompt=[1,2]", "evaluation.critiques_per_step=[1,2]",
    "search.samples_per_prompt=2", "search.beam_width=2", "search.candidates_per_step=2", "search.max_depth=3",
    "search.sampling.max_new_tokens=16",
    "search.batch_prompts=2",  # searches in 4 persisted chunks: the kill-and-resume test kills between them
]


# psrlm's policy judges itself pairwise: its own worked step (one call), then after the shown steps a
# marked line and decision per step and the verdict (~66 tokens), past the pointwise judge's budget above.
# Its one model learns solutions and that longer judgment together: after 150 steps on 200 judgments
# every pair of its search tied (no step pairs); 500 steps on 400 gave pairs.
# psrlm's run also trains and scores the SFT-spend control (loop.sft_control) after its iteration.
MODE = {"guided": [], "psrlm": ["judge.sampling.max_new_tokens=72", "bootstrap.policy_sft_steps=500",
                                "bootstrap.pairwise_judge_examples=400", "loop.sft_control=true"]}


def setting(mode: str, key: str) -> str:
    """The value a micro run of `mode` sets for `key` (its mode's own override wins)."""
    values = dict(s.split("=", 1) for s in [*MICRO, *MODE[mode]])
    return values[key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(mode: str, run_root: Path, model_cache: Path, name: str, serve_port: int) -> list[str]:
    return [*MICRO, *MODE[mode], f"loop.mode={mode}", f"run_root={run_root}", f"model_cache={model_cache}", f"name={name}",
            f"resources.serve_port={serve_port}"]


def cli_args(sets: list[str], *extra: str) -> list[str]:
    args = ["run", str(RECIPE)]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


class MicroRuns:
    """One uninterrupted micro run per mode, made in this process (on the session's Ray cluster)
    the first time a test asks for it, through the same entry point as `rprm-ray run`."""

    def __init__(self, root: Path):
        self.root = root
        self.model_cache = root / "models"  # shared by every run: a second run reuses the SFTs
        self.serve_port = free_port()
        self._done: dict[str, tuple[Path, str]] = {}

    def sets(self, mode: str, run_root: Path, name: str, serve_port: int | None = None) -> list[str]:
        return overrides(mode, run_root, self.model_cache, name, serve_port or self.serve_port)

    def get(self, mode: str) -> tuple[Path, str]:
        """(run directory, the driver's console output) of the finished run of `mode`."""
        if mode not in self._done:
            from rprm_ray.cli import main

            out = io.StringIO()
            with contextlib.redirect_stdout(Tee(out, sys.stdout)):
                rc = main(cli_args(self.sets(mode, self.root / "runs", mode)))
            assert rc == 0, out.getvalue()[-3000:]
            self._done[mode] = (self.root / "runs" / mode, out.getvalue())
        return self._done[mode]


class Tee(io.TextIOBase):
    def __init__(self, *streams: Any):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def stage_outputs(run_dir: Path) -> dict[str, list[dict]]:
    """Every stage's Parquet outputs as rows, keyed `stage/name`."""
    import pyarrow.parquet as pq

    manifest = json.loads((run_dir / "manifest.json").read_text())
    out = {}
    for key, stage in manifest["stages"].items():
        for name, rel in stage["outputs"].items():
            out[f"{key}/{name}"] = pq.read_table(run_dir / rel).to_pylist()
    return out


def finished_stages(run_dir: Path) -> list[str]:
    try:
        return list(json.loads((run_dir / "manifest.json").read_text())["stages"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []
