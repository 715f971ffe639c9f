"""The driver: runs a recipe's stages through the Ray roles, persists each stage, resumes.

A run is a list of named stages (`iter_0/policy_sft`, `iter_1/step_dpo`, ...). Each stage reads
earlier outputs from the run directory, writes its own Arrow outputs as Parquet under
`runs/<name>/<stage>/`, and is recorded in `manifest.json` with its metrics. `--resume` skips the
recorded stages, so an interrupted run continues with the same inputs and seeds.

Only this module (and the CLI) import `actors/`, lazily, through `Roles`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from rprm_ray import batches, waits
from rprm_ray.config import Recipe, dump_recipe
from rprm_ray.manifest import Manifest, recipe_differences, recipe_fingerprint

log = logging.getLogger("rprm_ray.loop")


class RunError(RuntimeError):
    pass


class StageError(RunError):
    """A stage that cannot produce what the recipe asked for (a failed teacher, zero rows to
    train on); the message names the stage and why, and finished work stays on disk."""


# Fields that say how a run talks to a service, not what it computes: a resume may change them
# (a teacher endpoint that moved, or that wants fewer requests at once). How often a trainer
# checkpoints changes what a kill costs, never the trained weights.
RESUMABLE_CHANGES = frozenset(f"models.teacher.{name}" for name in (
    "url", "max_concurrent_requests", "request_timeout_s", "max_retries", "retry_backoff_s",
    "retry_backoff_max_s", "requests_per_shard")) | {"trainer.checkpoint_interval_steps"}


def _as_current_schema(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's stored recipe read by today's schema: a field added since then takes its default,
    so a run started before the field existed resumes when the recipe leaves it at that default."""
    from pydantic import ValidationError

    try:
        return Recipe.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return stored


@dataclass
class StageResult:
    """What a stage returns: metrics for the report, tables to persist, state for later stages."""

    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, tuple[pa.Table, str]] = field(default_factory=dict)  # name -> (table, kind)
    state: dict[str, Any] = field(default_factory=dict)


class Run:
    """One run directory: the recipe, the manifest, stage bookkeeping and the (lazy) roles."""

    def __init__(self, recipe: Recipe, run_dir: Path, manifest: Manifest, roles: Any = None):
        self.recipe = recipe
        self.dir = run_dir
        self.manifest = manifest
        self.roles = roles
        self.log_lines: list[str] = []
        self._task: Any = None
        self.tracker: Any = None  # rprm_ray.tracking.Tracker when the recipe has a `tracking:` block
        self.current_stage: str | None = None
        self._chunk_counts: dict[str, list[int]] = {}  # running stage's chunked work: name -> [chunks, reused]

    @property
    def task(self) -> Any:
        """The world this run trains on (`rprm_ray.tasks.make_task`), built on first use."""
        if self._task is None:
            from rprm_ray.tasks import make_task

            self._task = make_task(self.recipe)
        return self._task

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def open(cls, recipe: Recipe, resume_dir: Path | None = None, roles: Any = None) -> Run:
        recipe_json = recipe.model_dump(mode="json")
        if resume_dir is not None:
            manifest = Manifest.load(resume_dir)
            if manifest.data["recipe_fingerprint"] != recipe_fingerprint(recipe_json):
                differences = [d for d in recipe_differences(_as_current_schema(manifest.data["recipe"]), recipe_json)
                               if d.split(":", 1)[0] not in RESUMABLE_CHANGES]
                if differences:
                    shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more"
                                                          if len(differences) > 4 else "")
                    raise RunError(
                        f"{resume_dir}: the recipe differs from the one this run started with ({shown}); "
                        f"resume with the same recipe and --set overrides (see {manifest.path})"
                    )
            return cls(recipe, resume_dir, manifest, roles)._track()
        run_dir = recipe.run_dir
        if (run_dir / "manifest.json").exists():
            old = Manifest.load(run_dir)  # a corrupt one is reported, never replaced
            if old.data["stages"]:
                raise RunError(
                    f"{run_dir} already holds a run ({len(old.data['stages'])} finished stages); "
                    f"continue it with --resume {run_dir}, or choose another name with --set name=..."
                )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
        return cls(recipe, run_dir, Manifest.create(run_dir, recipe_json), roles)._track()

    def _track(self) -> Run:
        from rprm_ray.tracking import make_tracker

        self.tracker = make_tracker(self.recipe, self.dir)
        return self

    def finish(self) -> None:
        """After the report is written: its figures and plots to the tracker, which is closed."""
        if self.tracker is not None:
            self.tracker.log_report()
            self.tracker.close()
            self.tracker = None

    # ---- stages ---------------------------------------------------------------------------
    def stage(self, key: str, fn: Callable[[], StageResult]) -> dict[str, Any]:
        """Run `fn` unless `key` already finished; return the stage's metrics either way."""
        if self.manifest.is_done(key):
            self.say(f"[skip] {key} (finished earlier)")
            return self.manifest.stage(key)["metrics"]
        self.say(f"[run ] {key}")
        t0 = time.perf_counter()
        from rprm_ray.shards import ShardError
        from rprm_ray.teacher_client import TeacherError

        self.current_stage = key
        self._chunk_counts = {}
        try:
            with waits.in_stage(key):  # a stuck role's message names the stage
                result = fn()
        except (TeacherError, ShardError) as exc:
            raise StageError(f"stage {key}: {exc}") from None
        finally:
            self.current_stage = None
        if self._chunk_counts:
            result.metrics["chunks"] = sum(total for total, _ in self._chunk_counts.values())
            result.metrics["chunks_reused"] = sum(reused for _, reused in self._chunk_counts.values())
        outputs = {}
        for name, (table, kind) in result.tables.items():
            path = batches.to_parquet(table, self.dir / key / f"{name}.parquet", kind)
            outputs[name] = str(path.relative_to(self.dir))
        seconds = time.perf_counter() - t0
        self.manifest.record(key, outputs, result.metrics, seconds, result.state)
        # The stage's outputs now hold everything its chunks and trainer checkpoints led to.
        self._drop_resume_state(key)
        if self.tracker is not None:
            self.tracker.log_stage(key, result.metrics, seconds)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in result.metrics.items() if _scalar(v))
        self.say(f"[done] {key} in {seconds:.1f}s" + (f": {shown}" if shown else ""))
        return result.metrics

    def table(self, key: str, name: str, kind: str) -> pa.Table:
        """An earlier stage's output, re-read from disk (identical after a resume)."""
        if not self.manifest.is_done(key):
            raise RunError(f"stage {key} has not finished; its output {name!r} does not exist yet")
        rel = self.manifest.stage(key)["outputs"].get(name)
        if rel is None:
            raise RunError(f"stage {key} wrote no output named {name!r}")
        try:
            return batches.from_parquet(self.dir / rel, kind)
        except batches.BatchError as exc:
            raise RunError(f"{exc}; stage {key}'s output is unusable: rerun it with "
                           f"--resume {self.dir} --rerun {key}") from None

    def chunks_dir(self, key: str) -> Path:
        """Where stage `key` keeps its finished chunks until it is recorded (then removed)."""
        return self.dir / key / "chunks"

    def trainer_checkpoints_dir(self, key: str) -> Path:
        """Where stage `key`'s trainers keep resumable checkpoints until it is recorded (then removed)."""
        return self.dir / key / "trainer_ckpt"

    def _drop_resume_state(self, key: str) -> None:
        """What stage `key` kept so a killed attempt could resume: its chunks and trainer checkpoints."""
        for path in (self.chunks_dir(key), self.trainer_checkpoints_dir(key)):
            shutil.rmtree(path, ignore_errors=True)

    def shards(self, name: str, kind: str) -> Any:
        """A `shards.ShardStore` for the finished chunks of the running stage
        (`<stage>/chunks/<name>/`): a stage resumed after a kill reads them back."""
        from rprm_ray.shards import ShardStore

        if self.current_stage is None:
            raise RunError(f"shard store {name!r} asked for outside a stage")
        return ShardStore(self.chunks_dir(self.current_stage) / name, kind, where=f"stage {self.current_stage}")

    def map_chunks(self, name: str, items: Any, size: int, fn: Callable[[Any], Mapping[str, pa.Table]],
                   kinds: Mapping[str, str], concurrent: int = 1) -> dict[str, pa.Table]:
        """`shards.map_chunk_tables` with every finished chunk persisted under the running stage's
        `chunks/<name>/<output>/`: a stage killed at any point and resumed reads its finished chunks
        back and computes the rest. The log (and a progress bar, past one chunk) says how many
        chunks were reused; the stage's metrics get `chunks` and `chunks_reused`."""
        from rprm_ray.progress import progress_bar
        from rprm_ray.shards import map_chunk_tables

        stores = {out: self.shards(f"{name}/{out}", kind) for out, kind in kinds.items()}
        counts = self._chunk_counts.setdefault(name, [0, 0])
        n = items.num_rows if isinstance(items, pa.Table) else len(items)
        total = -(-n // size) if size >= 1 else 0
        counts[0] += total
        reused = 0
        with progress_bar(total, f"{self.current_stage} {name}", unit="chunk", enabled=total > 1) as bar:
            def on_chunk(index: int, total: int, was_reused: bool) -> None:
                nonlocal reused
                reused += was_reused
                bar.update(1)
                bar.set_postfix(reused=reused)

            tables = map_chunk_tables(items, size, fn, kinds, stores=stores, concurrent=concurrent,
                                      on_chunk=on_chunk)
        counts[1] += reused
        if reused:
            self.say(f"[part] {self.current_stage}: {name} reused {reused} of {total} chunks finished earlier")
        return tables

    def chunk_map(self, name: str) -> Callable[..., dict[str, pa.Table]]:
        """`map_chunks` under `name`, in the form a search takes (`search.base.ChunkMap`)."""
        return lambda items, size, fn, kinds, concurrent=1: self.map_chunks(name, items, size, fn, kinds, concurrent)

    def rerun(self, key: str) -> list[str]:
        """Forget stage `key` and every later one (`Manifest.forget`), and remove the resume state
        (chunks, trainer checkpoints) of every stage not recorded now: a stage killed after `key`
        computed it from what is redone."""
        dropped = self.manifest.forget(key)
        for stage_dir in self.dir.glob("*/*/"):
            stage = str(stage_dir.relative_to(self.dir))
            if not self.manifest.is_done(stage):
                self._drop_resume_state(stage)
        return dropped

    def require_rows(self, table: pa.Table, why: str) -> pa.Table:
        """`table` if it has rows; else the stage fails with one message naming it and `why`."""
        if table.num_rows == 0:
            raise StageError(f"stage {self.current_stage or '?'}: {why}")
        return table

    def model_dir(self, key: str) -> Path:
        """Where a training stage saves its checkpoint."""
        return self.dir / key / "model"

    @property
    def state(self) -> dict[str, Any]:
        return self.manifest.state

    def say(self, line: str) -> None:
        self.log_lines.append(line)
        print(line, flush=True)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------
# Placement plan (--dry-run)


def placement_plan(recipe: Recipe) -> list[dict[str, Any]]:
    """The actors a recipe starts, with replicas and resources per role, without starting any."""
    g, j, t = recipe.generator, recipe.judge, recipe.trainer
    plan = [
        {
            "role": "PolicyGenerator",
            "replicas": g.replicas,
            "backend": g.backend,
            "cpus_each": g.num_cpus_per_replica,
            "gpus_each": g.num_gpus_per_replica,
            "tensor_parallel": g.tensor_parallel_size,
            "model": recipe.models.policy.name_or_path,
        }
    ]
    judge_model = recipe.judge_model.name_or_path if recipe.judge_model else "(the policy itself)"
    a = j.autoscaling
    plan.append(
        {
            "role": "ProcessJudge (Serve)",
            "replicas": f"{a.min_replicas}..{a.max_replicas}",
            "backend": j.backend,
            "cpus_each": j.num_cpus_per_replica,
            "gpus_each": j.num_gpus_per_replica,
            "tensor_parallel": j.tensor_parallel_size,
            "model": judge_model,
        }
    )
    plan.append({"role": "PairBuilder", "replicas": 1, "backend": "-", "cpus_each": 0, "gpus_each": 0,
                 "tensor_parallel": 1, "model": "-"})
    plan.append(
        {
            "role": f"Trainer (DeepSpeed ZeRO-{t.deepspeed.zero_stage})",
            "replicas": t.num_workers,
            "backend": t.deepspeed.backend,
            "cpus_each": t.num_cpus_per_worker,
            "gpus_each": t.num_gpus_per_worker,
            "tensor_parallel": 1,
            "model": "policy / judge (per stage)",
        }
    )
    return plan


def format_plan(recipe: Recipe) -> str:
    rows = placement_plan(recipe)
    cols = ["role", "replicas", "backend", "cpus_each", "gpus_each", "tensor_parallel", "model"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    max_judges = recipe.judge.autoscaling.max_replicas
    cpus = (recipe.generator.replicas * recipe.generator.num_cpus_per_replica
            + max_judges * recipe.judge.num_cpus_per_replica
            + recipe.trainer.num_workers * recipe.trainer.num_cpus_per_worker)
    gpus = (recipe.generator.replicas * recipe.generator.num_gpus_per_replica
            + max_judges * recipe.judge.num_gpus_per_replica
            + recipe.trainer.num_workers * recipe.trainer.num_gpus_per_worker)
    lines.append(f"peak demand: {cpus:g} CPUs, {gpus:g} GPUs (judge at max_replicas); "
                 f"mode {recipe.loop.mode}, {recipe.loop.iterations} iterations, run dir {recipe.run_dir}")
    if recipe.loop.mode == "psrlm" and recipe.models.judge is not None:
        lines.append(f"note: models.judge ({recipe.models.judge.name_or_path}) is not used: in mode psrlm the "
                     "policy judges itself (set models.judge: null to say so)")
    return "\n".join(lines)
