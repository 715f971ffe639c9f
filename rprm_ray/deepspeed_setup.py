"""DeepSpeed set-up for the trainer: the distributed rendezvous, CPU threads, the generated
DeepSpeed config, the optimizer (DeepSpeed's CPU Adam where the optimizer is offloaded), model
loading (partitioned at load time under ZeRO-3) and the non-finite loss guard."""

from __future__ import annotations

import hashlib
import os
import socket
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from rprm_ray.config import TrainerConfig

# --------------------------------------------------------------------------------------------
# Distributed set-up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_extensions_dir() -> Path:
    """Where this Python environment's DeepSpeed builds its JIT ops: a directory of its own.

    torch's default, ~/.cache/torch_extensions/py311_cpu/<op>, is one directory for every
    environment, and the op is rebuilt (~30 s on 2 cores) whenever its source path differs from the
    last build's: two checkouts (or a run directory with a linked .venv) alternating rebuilt it at
    every trainer start, and two starting together wait on each other's build lock. Keyed by the
    path DeepSpeed is imported from, which is what the build records."""
    import importlib.util

    spec = importlib.util.find_spec("deepspeed")
    origin = str(Path(spec.origin).parent) if spec and spec.origin else "no-deepspeed"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "torch_extensions" / f"rprm-ray-{hashlib.sha256(origin.encode()).hexdigest()[:12]}"


def use_own_torch_extensions_dir() -> None:
    """Point TORCH_EXTENSIONS_DIR at `torch_extensions_dir()`, unless the user set it."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))


def init_distributed(backend: str) -> str:
    use_own_torch_extensions_dir()  # before DeepSpeed builds or loads its CPU comm op
    import deepspeed
    import torch

    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    # A single process on a laptop: world size 1, a free port so concurrent trainers never collide.
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    _forget_groups_of_a_destroyed_world()
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return backend


# DeepSpeed's per-process caches of the groups it made (deepspeed.utils.groups).
_DEEPSPEED_GROUP_CACHES = ("_WORLD_GROUP", "_DATA_PARALLEL_GROUP", "_MODEL_PARALLEL_GROUP",
                           "_TENSOR_MODEL_PARALLEL_GROUP", "_ZERO_PARAM_INTRA_PARALLEL_GROUP")


def _forget_groups_of_a_destroyed_world() -> None:
    """DeepSpeed caches its data-parallel groups per process and drops them only when the world
    is destroyed through `deepspeed.comm`. An in-process vLLM engine (or any library) that
    destroys the world through torch, and maybe makes a new one, leaves those groups behind, and
    the next DeepSpeed engine fails with "Group ... is not registered". A cached group that the
    live world does not know is dropped, with every other cached group."""
    import torch
    from deepspeed.utils import groups
    from torch.distributed import distributed_c10d

    release = getattr(groups, "_release_process_group_references", None)
    if release is None:  # a private function of the pinned DeepSpeed; absent elsewhere
        return
    alive = distributed_c10d._world.pg_group_ranks if torch.distributed.is_initialized() else {}
    cached = [getattr(groups, name, None) for name in _DEEPSPEED_GROUP_CACHES]
    if any(group is not None and group not in alive for group in cached):
        release(group=None)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def default_num_threads() -> int:
    """The CPUs this process may use minus those other processes keep busy (1-minute load).

    Measured on the 2-core machine with other jobs running: a tiny-model SFT step took 0.21 CPU-s
    with 1 thread but 1.2 CPU-s and 6x the wall time with 2, because OpenMP threads spin-wait
    for a sibling that has been descheduled. On an idle machine this gives every core."""
    cpus = available_cpus()
    try:
        busy = os.getloadavg()[0] - 1.0  # this process is running too
    except (AttributeError, OSError):
        return cpus
    return max(1, min(cpus, int(cpus - busy + 0.5)))


def cpu_threads_per_rank(rank_nodes: list[tuple[str, int]]) -> list[int]:
    """Torch threads for each CPU rank, given (node, CPUs on that node) per rank: the node's cores
    shared among the ranks placed on it. More threads than cores makes every rank spin-wait
    (measured: one competing process slowed a 2-thread SFT step 12.7x on 2 cores)."""
    per_node = Counter(node for node, _ in rank_nodes)
    return [max(1, cpus // per_node[node]) for node, cpus in rank_nodes]


TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def deepspeed_config(cfg: TrainerConfig) -> dict[str, Any]:
    """The DeepSpeed config of a trainer (unit-tested: tests/unit/test_deepspeed_setup.py)."""
    ds = cfg.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        # The optimizer step runs on the CPU: `build_optimizer` gives DeepSpeedCPUAdam, the only
        # Adam DeepSpeed accepts there (zero_force_ds_cpu_optimizer stays at its default, true).
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.zero_stage == 3:
        # Checkpoints are gathered once, layer by layer, onto rank 0 in the training precision.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size_per_device,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size_per_device * cfg.gradient_accumulation_steps * world,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def optimizer_name(cfg: TrainerConfig) -> str:
    """Which AdamW `build_optimizer` makes: DeepSpeed refuses a torch optimizer with an offloaded
    optimizer state ("ZeRO-Offload with a client provided optimizer")."""
    return "DeepSpeedCPUAdam" if cfg.deepspeed.offload_optimizer else "torch.optim.AdamW"


def build_optimizer(params: Any, cfg: TrainerConfig, lr: float, betas: tuple[float, float]) -> Any:
    if cfg.deepspeed.offload_optimizer:
        use_own_torch_extensions_dir()  # DeepSpeedCPUAdam JIT-builds its op on first use
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay, adamw_mode=True)
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay)


def load_model(model_dir: str | Path, cfg: TrainerConfig, ds_config: dict[str, Any]) -> tuple[Any, Any]:
    """The causal LM to train, in the training precision, from safetensors weights only.

    Under ZeRO-3 the model is built inside `deepspeed.zero.Init` (transformers does so while an
    `HfDeepSpeedConfig` is alive), so each rank holds only its shard instead of a full fp32 copy.
    Returns (model, keep-alive): the second must live as long as the model, since transformers
    asks it whether ZeRO-3 is on (e.g. to keep ranks in step during generation)."""
    import torch
    from transformers import AutoModelForCausalLM

    keep_alive = None
    if cfg.deepspeed.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)
    dtype = getattr(torch, TORCH_DTYPES[cfg.deepspeed.precision])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    model.config.use_cache = False
    if cfg.deepspeed.gradient_checkpointing:
        # Activations recomputed in the backward pass: memory for long critiques at ~30% more compute.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, keep_alive


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite training loss: training stops before the backward pass, nothing is saved."""


def check_finite_loss(loss: torch.Tensor, what: str, step: int, world_size: int) -> float:
    """The loss as a float, or NonFiniteLossError naming the stage and the step. Every rank must
    stop together (one rank stopping alone would leave the others waiting in the gradient
    all-reduce), so with several ranks they agree through one scalar all-reduce."""
    import math

    value = loss.item()
    bad = not math.isfinite(value)
    if world_size > 1:
        import torch

        flag = torch.tensor([1.0 if bad else 0.0], device=loss.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = flag.item() > 0
    if bad:
        seen = f"loss is {value}" if not math.isfinite(value) else "another rank's loss is not finite"
        raise NonFiniteLossError(
            f"{what}: {seen} at optimizer step {step + 1}; training stopped before the backward "
            f"pass and nothing was saved (lower the learning rate, check the rows, or train in fp32/bf16)"
        )
    return value
