"""Trainer: a Ray actor over the core's DeepSpeed training loop (`rprm_ray.training`).

One actor per DeepSpeed rank. `TrainerGroup` starts `trainer.num_workers` of them with a shared
torch.distributed rendezvous (rank 0's address and a free port), the same way on a GPU cluster
(NCCL) and here (gloo, world size 1). Every rank receives the whole table and trains on its own
rows of each global batch (rprm_ray.training.shuffled_batches); rank 0's metrics and checkpoint are returned.

Waits are bounded (`trainer.setup_timeout_s` for start-up and rendezvous, `trainer.call_timeout_s`
per training call; rprm_ray.waits) and name the ranks that did not answer. Ranks are not restarted:
a rank that died mid-step leaves its peers in a collective, so the stage fails (`RankDiedError`,
naming the rank); rerun, it continues from its last trainer checkpoint (rprm_ray.trainer_checkpoints).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from actors.metrics import RoleMetrics
from rprm_ray import batches, waits
from rprm_ray.config import TrainerConfig
from rprm_ray.training import cpu_threads_per_rank

ROLE = "Trainer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@ray.remote
class Trainer:
    def __init__(self, model_dir: str, cfg: TrainerConfig, rank: int, world_size: int):
        if not Path(model_dir, "config.json").is_file():
            raise FileNotFoundError(f"{ROLE} rank {rank}: no model at {model_dir} (config.json missing)")
        self.rank, self.world_size, self.cfg, self.model_dir = rank, world_size, cfg, model_dir
        self.core = None
        self.metrics = RoleMetrics("trainer")

    def node_cpus(self) -> tuple[str, int]:
        """This rank's node and its CPU count: how the group splits cores among co-located ranks."""
        return ray.util.get_node_ip_address(), os.cpu_count() or 1

    def rendezvous_address(self) -> tuple[str, int]:
        """Rank 0's node address and a free port there: where the other ranks meet it."""
        return ray.util.get_node_ip_address(), _free_port()

    def setup(self, master_addr: str, master_port: int, num_threads: int) -> None:
        rank, world_size, cfg, model_dir = self.rank, self.world_size, self.cfg, self.model_dir
        os.environ.update(
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
            WORLD_SIZE=str(world_size), LOCAL_RANK="0" if cfg.num_gpus_per_worker else str(rank),
        )
        import torch

        # Ray pins OMP threads to the actor's CPU request; training wants every core it was given.
        torch.set_num_threads(max(1, num_threads))
        from rprm_ray.training import DeepSpeedTrainer

        self.core = DeepSpeedTrainer(model_dir, cfg)

    def sft(self, table: pa.Table, steps: int | None = None, epochs: int | None = None,
            checkpoint_dir: str | None = None) -> dict[str, Any]:
        table = batches.validate(table, "sft_examples", where=f"{ROLE}.sft", allow_empty=False)
        out = self.core.sft(table, steps=steps, epochs=epochs, progress=self.rank == 0,
                            checkpoint_dir=checkpoint_dir)
        self._record(table.num_rows, out)
        return out

    def add_reference_logps(self, pairs: pa.Table) -> pa.Table:
        pairs = batches.validate(pairs, "preference_pairs", where=f"{ROLE}.add_reference_logps")
        return self.core.add_reference_logps(pairs)

    def dpo(self, pairs: pa.Table, epochs: int | None = None, lr: float | None = None,
            checkpoint_dir: str | None = None) -> dict[str, Any]:
        pairs = batches.validate(pairs, "preference_pairs", where=f"{ROLE}.dpo", allow_empty=False)
        out = self.core.dpo(pairs, epochs=epochs, lr=lr, progress=self.rank == 0,
                            checkpoint_dir=checkpoint_dir)
        self._record(pairs.num_rows, out)
        return out

    def save(self, out_dir: str) -> str:
        """Write an HF safetensors checkpoint and return the weights' checksum. Runs on every
        rank (ZeRO-3 gathers shards collectively); the core writes from rank 0 only."""
        return self.core.save_with_checksum(out_dir)

    def weights_checksum(self) -> str:
        return self.core.weights_checksum()

    def torch_threads(self) -> int:
        return self.core.num_threads

    def _record(self, rows: int, out: dict[str, Any]) -> None:
        self.metrics.rows(rows, 0)
        if "loss" in out:
            self.metrics.gauge("loss", float(out["loss"]))


class RankDiedError(RuntimeError):
    """A trainer rank's process died during a call (its peers then fail in their collective)."""


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


class TrainerGroup:
    """Driver-side handle on the DeepSpeed ranks; methods block and return rank 0's result."""

    def __init__(self, model_dir: str | Path, cfg: TrainerConfig, name: str = "trainer"):
        model_dir = str(model_dir)
        if not Path(model_dir, "config.json").is_file():
            raise FileNotFoundError(f"{ROLE}: no model at {model_dir} (config.json missing)")
        self.cfg = cfg
        world = cfg.num_workers
        options = dict(num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker)
        self.names = [f"{name}-rank{rank}" for rank in range(world)]
        self.workers = [
            Trainer.options(name=rank_name, **options).remote(model_dir, cfg, rank, world)
            for rank, rank_name in enumerate(self.names)
        ]
        try:
            self._setup(cfg, world)
        except Exception:
            self.shutdown()
            raise

    def _setup(self, cfg: TrainerConfig, world: int) -> None:
        if cfg.num_gpus_per_worker:
            threads = [max(1, int(cfg.num_cpus_per_worker))] * world
        else:
            # CPU ranks use their node's cores (the engines' CPU reservations sit idle while a
            # trainer runs), shared among the ranks on that node.
            threads = cpu_threads_per_rank(self._wait([w.node_cpus.remote() for w in self.workers],
                                                      cfg.setup_timeout_s, "starting"))
        [(master_addr, master_port)] = self._wait([self.workers[0].rendezvous_address.remote()],
                                                  cfg.setup_timeout_s, "choosing the rendezvous", self.names[:1])
        self._wait([w.setup.remote(master_addr, master_port, n) for w, n in zip(self.workers, threads, strict=True)],
                   cfg.setup_timeout_s, "setting up DeepSpeed")

    def _wait(self, refs: list[Any], timeout_s: float, doing: str, names: list[str] | None = None) -> list[Any]:
        return waits.wait_each(refs, waits.ray_wait, timeout_s=timeout_s, role=ROLE, names=names or self.names,
                               doing=doing, done=waits.ray_done)

    def _all(self, method: str, *args, **kwargs) -> Any:
        refs = [getattr(w, method).remote(*args, **kwargs) for w in self.workers]
        try:
            return self._wait(refs, self.cfg.call_timeout_s, method)[0]
        except Exception as exc:
            dead = self._dead_ranks(refs)
            if not dead:
                raise
            raise RankDiedError(
                f"{ROLE} {', '.join(dead)}: the process died while {method} (stage {waits.current_stage()}); "
                f"rerun the stage to continue from its last trainer checkpoint ({waits.first_line(exc)})"
            ) from exc

    def _dead_ranks(self, refs: list[Any]) -> list[str]:
        """The ranks whose process died during a failed call: the first error seen is often a
        surviving peer's broken collective, which names the wrong rank."""
        # A dead rank's call resolves at once; a peer stuck in its collective gets a short grace.
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        dead = []
        for name, ref in zip(self.names, refs, strict=True):
            if ref in ready:
                try:
                    ray.get(ref)
                except Exception as exc:
                    if waits.is_replica_death(exc):
                        dead.append(name)
        return dead

    def sft(self, table: pa.Table, steps: int | None = None, epochs: int | None = None,
            checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
        """SFT on every rank; with `checkpoint_dir` (shared by the ranks) it checkpoints every
        `trainer.checkpoint_interval_steps` steps and resumes the same call's checkpoint there."""
        return self._all("sft", table, steps=steps, epochs=epochs, checkpoint_dir=_str(checkpoint_dir))

    def add_reference_logps(self, pairs: pa.Table) -> pa.Table:
        return self._all("add_reference_logps", pairs)

    def dpo(self, pairs: pa.Table, epochs: int | None = None, lr: float | None = None,
            checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
        return self._all("dpo", pairs, epochs=epochs, lr=lr, checkpoint_dir=_str(checkpoint_dir))

    def save(self, out_dir: str | Path) -> str:
        return self._all("save", str(out_dir))

    def rank_checksums(self) -> list[str]:
        """Every rank's weights checksum: data-parallel ranks hold the same weights after each step."""
        return self._wait([w.weights_checksum.remote() for w in self.workers], self.cfg.call_timeout_s,
                          "computing its weights checksum")

    def rank_threads(self) -> list[int]:
        return self._wait([w.torch_threads.remote() for w in self.workers], self.cfg.setup_timeout_s,
                          "reporting its threads")

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
