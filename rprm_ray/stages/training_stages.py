"""Training stages: supervised bootstraps (cached across runs) and DPO, through the Trainer role."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from rprm_ray import tiny
from rprm_ray.config import TrainerConfig
from rprm_ray.loop import Run


def cache_key(kind: str, *parts: Any) -> str:
    """A model cache key from everything that determines the trained weights."""
    text = json.dumps([kind, *parts], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def base_model(run: Run, which: str) -> Path:
    """The untrained starting point of `which` ("policy" / "judge"): built once, then reused. A
    tiny judge's vocabulary has the verdict-prefix token (tiny.py)."""
    spec = run.recipe.models.policy if which == "policy" else run.recipe.models.judge
    judge = which == "judge"
    if not spec.is_tiny:  # a directory or a hub id: resolved (downloaded once) in one place
        from rprm_ray.hub import resolve_model

        return resolve_model(spec.name_or_path, revision=spec.revision, cache=run.recipe.models.hub_cache,
                             where=f"models.{which}.name_or_path")
    parts = [spec.model_dump(mode="json"), run.recipe.seed, *(["verdict-token"] if judge else [])]
    key = cache_key(f"base-{which}", *parts)
    return Path(tiny.ensure_model(spec, run.recipe.model_cache, key, seed=run.recipe.seed, verdict_token=judge))


def trainer_checkpoint_dir(run: Run, name: str) -> Path | None:
    """Where the running stage's trainer `name` keeps its resumable checkpoints (None outside a
    stage): <run>/<stage>/trainer_ckpt/<name>/, removed with the stage's other resume state once
    the stage is recorded (`Run.stage`)."""
    if run.current_stage is None:
        return None
    return run.trainer_checkpoints_dir(run.current_stage) / name


def train_sft(run: Run, init_dir: Path, table: pa.Table, steps: int, out_dir: Path, name: str,
              trainer_cfg: TrainerConfig | None = None) -> dict[str, Any]:
    """SFT, resuming the stage's last trainer checkpoint when a killed attempt left one."""
    run.require_rows(table, f"{name}: 0 training examples")
    ckpt_dir = trainer_checkpoint_dir(run, name)
    trainer = run.roles.trainer(init_dir, name=name, cfg=trainer_cfg)
    try:
        metrics = trainer.sft(table, steps=steps, checkpoint_dir=ckpt_dir)
        checksum = trainer.save(out_dir)
    finally:
        trainer.shutdown()
    finish_checkpoint(out_dir, checksum, {"stage": name, "init": str(init_dir), "steps": steps})
    return _plain(metrics)


def train_dpo(run: Run, init_dir: Path, pairs: pa.Table, out_dir: Path, name: str,
              lr: float | None = None, trainer_cfg: TrainerConfig | None = None) -> tuple[dict[str, Any], pa.Table]:
    """Reference log-probs from the frozen `init_dir` weights first, then DPO (peak `lr`, default
    trainer.dpo_lr; `trainer_cfg` default the recipe's trainer); one model resident."""
    run.require_rows(pairs, f"{name}: 0 preference pairs")
    ckpt_dir = trainer_checkpoint_dir(run, name)
    trainer = run.roles.trainer(init_dir, name=name, cfg=trainer_cfg)
    try:
        pairs = trainer.add_reference_logps(pairs)
        metrics = trainer.dpo(pairs, epochs=run.recipe.trainer.dpo_epochs, lr=lr, checkpoint_dir=ckpt_dir)
        checksum = trainer.save(out_dir)
    finally:
        trainer.shutdown()
    finish_checkpoint(out_dir, checksum, {"stage": name, "init": str(init_dir), "pairs": pairs.num_rows})
    return _plain(metrics), pairs


def finish_checkpoint(out_dir: Path, checksum: str, info: dict[str, Any]) -> None:
    (Path(out_dir) / "checksum.txt").write_text(checksum + "\n")
    tiny.mark_complete(out_dir, {**info, "checksum": checksum})


def table_fingerprint(table: pa.Table) -> str:
    """A short hash of a table's rows: the training data is part of what determines a model, so a
    change in how examples are written (a new critique format) never reuses a stale model."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:8]


def cached_sft(run: Run, key: str, init_dir: Path, table: pa.Table, steps: int, name: str,
               trainer_cfg: TrainerConfig | None = None) -> tuple[Path, dict]:
    """SFT into the model cache under `key` + the data's fingerprint, or reuse an earlier run's
    result with the same. `trainer_cfg` (default the recipe's trainer) must be part of `key`."""
    out_dir = Path(run.recipe.model_cache) / f"{key}-{table_fingerprint(table)}"
    info = out_dir / "train_metrics.json"
    if tiny.is_complete(out_dir) and info.is_file():
        run.say(f"       reusing {out_dir} (same recipe inputs)")
        return out_dir, {**json.loads(info.read_text()), "reused": True}
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an interrupted earlier attempt
    metrics = train_sft(run, init_dir, table, steps, out_dir, name, trainer_cfg)
    info.write_text(json.dumps(metrics))
    return out_dir, {**metrics, "reused": False}


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
