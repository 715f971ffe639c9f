"""Resumable trainer checkpoints: a training call killed mid-stage continues from its last save.

Every `trainer.checkpoint_interval_steps` optimizer steps the trainer writes a DeepSpeed
checkpoint (`engine.save_checkpoint`: weights, fp32 master weights and optimizer moments of every
rank's ZeRO shard) plus the loop's own state (the step, the data order's RNG state at the start of
the call, torch's RNG, the metrics so far) into a directory of the running stage. The learning
rate is a function of the step (`training_rows.lr_at`), so the step restores the schedule.

Layout of a checkpoint directory (one per training call of a stage):

    step-00000040/            DeepSpeed's files for step 40 (every rank writes its own shard)
    step-00000040/rprm_checkpoint.json   the marker: written last, after every rank finished
    latest                    the newest complete tag (for people and DeepSpeed's tools)

A checkpoint counts only with its marker: the marker is written by rank 0 after a barrier that
every rank passes once its files are written, atomically (a temporary file renamed), so a kill
mid-save leaves a tag without a marker, which is never picked; the previous checkpoint stays
usable because older ones are removed only after the new marker exists (marker first, so a kill
mid-removal never leaves a marked, half-deleted tag). A marker records a fingerprint of everything
that determines the training trajectory (rows, steps, learning rate, the trainer's config, world
size, starting weights): a checkpoint of other input is never resumed.

The pure parts (when to save, the fingerprint, which checkpoint to pick) are unit-tested
(tests/unit/test_trainer_checkpoints.py); the engine calls are in `Checkpointer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from rprm_ray.config import TrainerConfig

MARKER = "rprm_checkpoint.json"
TAG_PREFIX = "step-"
# Complete checkpoints kept: the newest only. The previous one is removed after the newest's marker
# exists, so a usable checkpoint exists at every moment; a 7B ZeRO checkpoint is ~100 GB.
KEEP = 1
# Trainer fields that do not change the trajectory: a resume may change them.
TRAJECTORY_NEUTRAL_FIELDS = frozenset({
    "num_cpus_per_worker", "setup_timeout_s", "call_timeout_s", "checkpoint_interval_steps"})


def tag_for(step: int) -> str:
    return f"{TAG_PREFIX}{step:08d}"


def is_save_step(steps_done: int, interval: int | None, total_steps: int) -> bool:
    """Whether to checkpoint after `steps_done` optimizer steps of `total_steps`: every `interval`
    steps, but not after the last (the stage saves its final model then)."""
    return bool(interval) and 0 < steps_done < total_steps and steps_done % interval == 0


def table_digest(table: pa.Table, skip_columns: frozenset[str] = frozenset()) -> str:
    """A hash of a table's values (not its Arrow layout: the same rows chunked differently after a
    round trip through Parquet or Ray hash the same)."""
    h = hashlib.sha256()
    for name in table.column_names:
        if name in skip_columns:
            continue
        h.update(json.dumps(name).encode())
        for value in table.column(name).to_pylist():
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
            h.update(b"\x1e")
    return h.hexdigest()


def model_identity(model_dir: str | Path) -> list[Any]:
    """The starting weights, cheaply: the directory and its weight files' names, sizes and
    modification times (hashing a 7B model's 15 GB at every stage start would take minutes)."""
    root = Path(model_dir)
    files = sorted(root.glob("*.safetensors"))
    return [str(root.resolve()), [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]]


def call_start(model_dir: str | Path, global_step: int, data_rng_state: Any) -> dict[str, Any]:
    """Where a training call starts: the weights the trainer was built from, the steps it trained
    before this call and the data order's RNG state."""
    return {"model": model_identity(model_dir), "global_step": global_step,
            "data_rng": hashlib.sha256(repr(data_rng_state).encode()).hexdigest()}


def fingerprint(kind: str, rows_digest: str, total_steps: int, peak_lr: float, cfg: TrainerConfig,
                world_size: int, start: dict[str, Any]) -> str:
    """Everything that determines a training call's trajectory, hashed: a checkpoint resumes only
    the call it was written by. `start` says where the call began (the starting weights, the
    trainer's step count, the data order's RNG state)."""
    trainer = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in TRAJECTORY_NEUTRAL_FIELDS}
    text = json.dumps([kind, rows_digest, total_steps, peak_lr, trainer, world_size, start],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_markers(ckpt_dir: str | Path) -> dict[str, dict[str, Any] | None]:
    """Every tag directory's marker (None: no marker, or one that cannot be read)."""
    root = Path(ckpt_dir)
    found: dict[str, dict[str, Any] | None] = {}
    if not root.is_dir():
        return found
    for tag_dir in sorted(root.glob(f"{TAG_PREFIX}*")):
        if not tag_dir.is_dir():
            continue
        try:
            found[tag_dir.name] = json.loads((tag_dir / MARKER).read_text())
        except (OSError, ValueError):
            found[tag_dir.name] = None
    return found


def pick_checkpoint(markers: dict[str, dict[str, Any] | None], want: str, total_steps: int) -> tuple[str, int] | None:
    """The (tag, step) to resume: the complete checkpoint of this fingerprint with the most steps,
    below `total_steps`; None when there is none (train from step 0)."""
    best: tuple[str, int] | None = None
    for tag, marker in markers.items():
        if not marker or marker.get("fingerprint") != want or marker.get("tag") != tag:
            continue
        step = marker.get("step")
        if not isinstance(step, int) or not 0 < step < total_steps:
            continue
        if best is None or step > best[1]:
            best = (tag, step)
    return best


def tags_to_remove(markers: dict[str, dict[str, Any] | None], newest: str, keep: int = KEEP) -> list[str]:
    """Tags to delete after `newest` was completed: every other tag but the `keep - 1` newest
    complete ones of its fingerprint (half-written tags and other inputs' checkpoints go too)."""
    fp = (markers.get(newest) or {}).get("fingerprint")
    complete = sorted((m["step"], t) for t, m in markers.items()
                      if t != newest and m and m.get("fingerprint") == fp and isinstance(m.get("step"), int))
    kept = {t for _, t in complete[len(complete) - (keep - 1):]} if keep > 1 else set()
    return [t for t in markers if t != newest and t not in kept]


def replay_cpu_adam_steps(engine: Any) -> None:
    """Make a loaded DeepSpeedCPUAdam (`deepspeed.offload_optimizer`) continue bit for bit.

    Its kernel keeps beta1^t and beta2^t as running float products, one factor per step; an
    optimizer whose step jumps from 0 to n (a resumed one) gets std::pow(beta, n) instead, which
    rounds differently, and the resumed run ended with other bf16 weights than the uninterrupted
    one (ZeRO-3 + offload, measured). Steps 1..n replayed through the kernel on empty tensors
    rebuild the same products and change nothing else."""
    opt = getattr(engine.optimizer, "optimizer", engine.optimizer)
    if type(opt).__name__ != "DeepSpeedCPUAdam":
        return
    import torch

    steps = [int(state["step"]) for state in opt.state.values() if isinstance(state, dict) and "step" in state]
    if not steps:
        return
    group = opt.param_groups[0]
    beta1, beta2 = group["betas"]
    empty = torch.empty(0, dtype=torch.float32)
    for step in range(1, max(steps) + 1):
        opt.ds_opt_adam.adam_update(opt.opt_id, step, group["lr"], beta1, beta2, group["eps"],
                                    group["weight_decay"], group["bias_correction"], empty, empty, empty, empty)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Checkpointer:
    """Saves and loads one training call's checkpoints through its DeepSpeed engine. Every rank
    makes one and calls `resume` / `save` together (both are collectives)."""

    def __init__(self, engine: Any, ckpt_dir: str | Path, interval: int | None, fp: str, total_steps: int,
                 rank: int, world_size: int, data_rng_start: Any):
        self.engine, self.dir, self.interval = engine, Path(ckpt_dir), interval
        self.fingerprint, self.total_steps = fp, total_steps
        self.rank, self.world_size = rank, world_size
        # The data order's RNG state when the call began: a resumed call replays its shuffles from
        # here and skips the batches already trained on.
        self.data_rng_start = data_rng_start

    def due(self, steps_done: int) -> bool:
        return is_save_step(steps_done, self.interval, self.total_steps)

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch

            torch.distributed.barrier()

    def resume(self, batches: Any, micro_batches_per_step: int) -> tuple[int, dict[str, Any]]:
        """(steps done, the loop's saved state) of the checkpoint to continue from, loaded into the
        engine, with torch's RNG as it was at the save and `batches` (the call's micro-batch
        iterator) advanced past the batches of the steps done; (0, {}) when there is none."""
        step, state = self._load()
        if step:
            import torch

            torch.set_rng_state(state["torch_rng"])
            for _ in range(step * micro_batches_per_step):
                next(batches)
        return step, state

    def _load(self) -> tuple[int, dict[str, Any]]:
        """Rank 0 picks the checkpoint, so every rank loads the same tag."""
        choice = [pick_checkpoint(read_markers(self.dir), self.fingerprint, self.total_steps)
                  if self.rank == 0 else None]
        if self.world_size > 1:
            import torch

            torch.distributed.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return 0, {}
        tag, step = choice[0]
        load_path, client_state = self.engine.load_checkpoint(str(self.dir), tag=tag)
        if load_path is None:
            raise RuntimeError(f"{self.dir / tag}: DeepSpeed could not load this checkpoint")
        replay_cpu_adam_steps(self.engine)
        return step, dict(client_state or {})

    def save(self, step: int, global_step: int, **loop_state: Any) -> None:
        """Checkpoint after `step` optimizer steps of this call (every rank calls it); `loop_state`
        is what the loop needs to continue (its metrics so far)."""
        import torch

        state = {**loop_state, "global_step": global_step, "torch_rng": torch.get_rng_state(),
                 "data_rng_start": self.data_rng_start}
        tag = tag_for(step)
        if self.rank == 0 and (self.dir / tag).exists():
            shutil.rmtree(self.dir / tag)  # a half-written earlier attempt at this step
        self._barrier()
        self.engine.save_checkpoint(str(self.dir), tag=tag, client_state={**state, "step": step},
                                    save_latest=False)
        self._barrier()  # every rank's shard is on disk before the marker says so
        if self.rank == 0:
            _write_atomically(self.dir / tag / MARKER,
                              json.dumps({"tag": tag, "step": step, "fingerprint": self.fingerprint}))
            _write_atomically(self.dir / "latest", tag)
            for old in tags_to_remove(read_markers(self.dir), tag):
                (self.dir / old / MARKER).unlink(missing_ok=True)  # first: never a marked half-deleted tag
                shutil.rmtree(self.dir / old, ignore_errors=True)
        self._barrier()
