"""The one training loop: a DeepSpeed engine over a Hugging Face causal LM, with SFT and sigmoid DPO.

Used directly by the policy bootstrap and wrapped by the Trainer Ray actor. Runs on CPU (gloo,
world size 1 on a laptop) and on GPUs (nccl, one process per rank: RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT set by whoever starts the ranks).

Batching: shuffled rows. With `trainer.pack_sequences` SFT packs a micro batch's rows into
sequences of at most `max_seq_len_tokens`, position ids restarting at every row, which
transformers turns into a block-diagonal causal mask: a row attends to itself only, so loss and
gradients equal those of the padded batch, without computing the pads. Whether that is faster
depends on the attention kernel: with SDPA on 2 CPU cores the judge's critiques (35% pads in
micro batches of 64) trained 16% faster per step, the policy's short solutions no faster, since
the mask attends over the whole packed length. Otherwise, and for DPO, rows are right-padded to
the longest in the micro batch; with right padding a causal model never lets a real token attend to
a pad, so no attention mask is passed (faster SDPA path); pads are excluded from the loss by the
completion mask.

EOS: SFT appends EOS to every completion (the model learns to stop). DPO appends EOS to every
pair except kind "step" (a PSRLM step continues a solution; it does not end the generation).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from rprm_ray.config import TrainerConfig

NO_EOS_PAIR_KINDS = frozenset({"step"})


# --------------------------------------------------------------------------------------------
# Checksums (shared with engines: they must compute the same value for the same weights)


def checksum_state_dict(state_dict: Mapping[str, Any]) -> str:
    """A stable hash of a model's weights: sha256 over the sorted, de-duplicated per-tensor digests
    (each digest = shape + float32 little-endian bytes).

    Names are left out on purpose: tied weights appear under two names in a live model
    (`lm_head.weight`, `model.embed_tokens.weight`) but once in a saved checkpoint, and serving
    engines rename or fuse parameters. Hash the HF-format tensors (a trainer's `state_dict()` or
    the safetensors files a model directory holds: see `checksum_model_dir`)."""
    import torch

    digests = set()
    for tensor in state_dict.values():
        t = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        h = hashlib.sha256(repr(tuple(t.shape)).encode())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
        digests.add(h.hexdigest())
    top = hashlib.sha256()
    for d in sorted(digests):
        top.update(d.encode())
    return top.hexdigest()


def checksum_model_dir(model_dir: str | Path) -> str:
    """`checksum_state_dict` over every `*.safetensors` file of an HF model directory."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors files to checksum")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return checksum_state_dict(tensors)


# --------------------------------------------------------------------------------------------
# Tokenised rows and collation (pure; unit-tested without DeepSpeed)


@dataclass(frozen=True)
class TokenizedRow:
    ids: list[int]
    n_prompt: int  # the first n_prompt ids are prompt (no loss); the rest are completion


def tokenize_rows(
    tokenizer: Any,
    prompts: list[str],
    completions: list[str],
    max_len: int,
    append_eos: list[bool] | bool = True,
) -> list[TokenizedRow]:
    """Prompt and completion tokenised separately (no special tokens), EOS appended where asked,
    right-truncated to `max_len`. A row whose completion is truncated away entirely keeps one
    completion token so it still has a loss term; the caller decides if that matters."""
    if isinstance(append_eos, bool):
        append_eos = [append_eos] * len(prompts)
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"] if completions else []
    eos = tokenizer.eos_token_id
    rows = []
    for p, c, add in zip(p_ids, c_ids, append_eos, strict=True):
        c = list(c) + ([eos] if add else [])
        if not c:
            raise ValueError("tokenize_rows: empty completion (and no EOS appended): nothing to learn")
        p = list(p)[: max(max_len - 1, 1)]
        ids = (p + c)[:max_len]
        rows.append(TokenizedRow(ids=ids, n_prompt=len(p)))
    return rows


def collate(rows: list[TokenizedRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row: (input_ids [B, T], loss_mask [B, T]); the mask is 1 on
    completion tokens only (prompt and padding 0)."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, r.n_prompt : len(r.ids)] = 1
    return ids, mask


def pack_rows(rows: list[TokenizedRow], capacity: int) -> list[list[TokenizedRow]]:
    """Rows grouped into bins of at most `capacity` tokens, first-fit by decreasing length (a row
    longer than `capacity` gets a bin of its own). Deterministic for a given row order."""
    bins: list[list[TokenizedRow]] = []
    room: list[int] = []
    for row in sorted(rows, key=lambda r: -len(r.ids)):
        for b, left in enumerate(room):
            if len(row.ids) <= left:
                bins[b].append(row)
                room[b] -= len(row.ids)
                break
        else:
            bins.append([row])
            room.append(capacity - len(row.ids))
    return bins


def collate_packed(
    bins: list[list[TokenizedRow]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, position_ids, loss_mask), each [n_bins, longest bin]. Position ids restart at 0
    for every row (and for the padding at a bin's end), which is how transformers finds the rows
    of a packed sequence. The mask is 1 on completion tokens except a row's first token, which the
    previous row's last token would otherwise be scored on predicting."""
    import torch

    width = max(sum(len(r.ids) for r in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    mask = torch.zeros((len(bins), width), dtype=torch.long)
    for i, rows in enumerate(bins):
        at = 0
        for r in rows:
            n = len(r.ids)
            ids[i, at : at + n] = torch.tensor(r.ids, dtype=torch.long)
            positions[i, at : at + n] = torch.arange(n)
            mask[i, at + max(r.n_prompt, 1) : at + n] = 1
            at += n
        positions[i, at:] = torch.arange(width - at)
    return ids, positions, mask


def completion_nll(
    logits_fn: Callable[..., torch.Tensor], rows: list[TokenizedRow], pad_id: int, pack_capacity: int | None
) -> torch.Tensor:
    """Mean next-token NLL over the completion tokens of `rows`: packed into sequences of at most
    `pack_capacity` tokens, or right-padded when it is None. `logits_fn(ids, position_ids)` runs
    the model (position_ids None: the model's default positions)."""
    from rprm_ray.dpo import token_logps

    if pack_capacity is not None:
        ids, positions, mask = collate_packed(pack_rows(rows, pack_capacity), pad_id)
    else:
        (ids, mask), positions = collate(rows, pad_id), None
    logits = logits_fn(ids, positions)
    ids, mask = ids.to(logits.device), mask.to(logits.device)
    m = mask[:, 1:].float()
    return -(token_logps(logits, ids) * m).sum() / m.sum().clamp(min=1)


def shuffled_batches(
    n_rows: int, size: int, rng: random.Random, rank: int = 0, world_size: int = 1
) -> Iterator[list[int]]:
    """Endless micro batches of row indices: each epoch a fresh shuffle, cut in order.

    Data parallel: every rank draws the same shuffle (same seed) and cuts the same global batch
    of `size * world_size` rows, keeping its own `size`-row slice, so ranks never train on the
    same rows within a step and together see every row once per epoch.

    No grouping by length: batches of similar-length rows (fewer pads) were measured to learn the
    arithmetic task far worse (SFT loss 1.64 vs 0.99 after 300 steps): a batch of one length is a
    narrow slice of the problem distribution, and at lr 3e-3 Adam chases each slice."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shuffled_batches: rank {rank} outside world size {world_size}")
    order = list(range(n_rows))
    global_size = size * world_size
    while True:
        rng.shuffle(order)
        for start in range(0, n_rows, global_size):
            chunk = order[start : start + global_size]
            # The last global batch of an epoch may be short: every rank still needs rows.
            mine = chunk[rank * size : (rank + 1) * size] or chunk[-size:]
            yield mine


def lr_at(step: int, total: int, peak: float, warmup_ratio: float, floor_ratio: float = 0.1) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor_ratio * peak` at `total` steps."""
    warmup = int(round(total * warmup_ratio))
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


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


def _init_distributed(backend: str) -> str:
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
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return backend


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


def deepspeed_config(cfg: TrainerConfig) -> dict[str, Any]:
    ds = cfg.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
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


# --------------------------------------------------------------------------------------------
# The trainer


class DeepSpeedTrainer:
    """A DeepSpeed engine over the HF model in `model_dir`, trained by SFT and DPO.

    `lr` defaults to `trainer_cfg.lr` (SFT; DPO uses `trainer_cfg.dpo_lr`); `total_steps` is the
    default number of optimizer steps of `sft()`. Each `sft()` / `dpo()` call runs its own
    warm-up + cosine schedule over its own steps."""

    def __init__(
        self,
        model_dir: str | Path,
        trainer_cfg: TrainerConfig,
        lr: float | None = None,
        total_steps: int | None = None,
        *,
        num_threads: int | None = None,
        progress: bool = True,
        adam_betas: tuple[float, float] = (0.9, 0.98),
    ) -> None:
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = trainer_cfg
        self.model_dir = Path(model_dir)
        self.lr = lr if lr is not None else trainer_cfg.lr
        self.total_steps = total_steps
        self.progress = progress
        # The idle cores, unless the caller chose already (Ray actors set OMP_NUM_THREADS from
        # their CPU request and then pick the thread count themselves).
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        elif "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(default_num_threads())
        self.num_threads = torch.get_num_threads()
        self.backend = _init_distributed(trainer_cfg.deepspeed.backend)

        torch.manual_seed(trainer_cfg.seed)
        self._rng = random.Random(trainer_cfg.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        model.config.use_cache = False
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.lr, weight_decay=trainer_cfg.weight_decay, betas=adam_betas
        )
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(trainer_cfg)
        )
        self.device = self.engine.device
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()
        self.global_step = 0

    # ---- internals -------------------------------------------------------------------------

    @property
    def module(self) -> Any:
        return self.engine.module

    def _set_lr(self, lr: float) -> None:
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr

    def _logits(self, ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = position_ids.to(self.device) if position_ids is not None else None
        return self.engine(input_ids=ids.to(self.device), position_ids=positions).logits

    def _bar(self, total: int, desc: str) -> Any:
        from rprm_ray.progress import progress_bar

        return progress_bar(total, desc, enabled=self.progress)

    def _optimizer_steps(self, n_rows: int, steps: int | None, epochs: float | None) -> int:
        per_step = self.cfg.micro_batch_size_per_device * self.cfg.gradient_accumulation_steps
        if steps is not None:
            return steps
        if epochs is not None:
            return max(1, math.ceil(n_rows * epochs / per_step))
        if self.total_steps is not None:
            return self.total_steps
        raise ValueError("DeepSpeedTrainer: give steps or epochs (or total_steps at construction)")

    # ---- SFT ---------------------------------------------------------------------------------

    def sft(
        self,
        table: pa.Table,
        steps: int | None = None,
        epochs: float | None = None,
        progress: bool | None = None,
    ) -> dict[str, float]:
        """Next-token loss on completion tokens of an `sft_examples` table. Returns the mean loss
        of the first and last 10% of optimizer steps and the step count."""
        from rprm_ray.batches import validate

        validate(table, "sft_examples", where="DeepSpeedTrainer.sft")
        if table.num_rows == 0:
            raise ValueError("DeepSpeedTrainer.sft: the sft_examples table is empty")
        rows = tokenize_rows(
            self.tokenizer,
            table.column("prompt").to_pylist(),
            table.column("completion").to_pylist(),
            self.cfg.max_seq_len_tokens,
        )
        n_steps = self._optimizer_steps(len(rows), steps, epochs)
        pack_capacity = self.cfg.max_seq_len_tokens if self.cfg.pack_sequences else None
        gas = self.cfg.gradient_accumulation_steps
        batches = shuffled_batches(len(rows), self.cfg.micro_batch_size_per_device, self._rng,
                                   self.rank, self.world_size)
        losses: list[float] = []
        old_progress, self.progress = self.progress, self.progress if progress is None else progress
        self.engine.train()
        with self._bar(n_steps, "sft") as bar:
            for step in range(n_steps):
                self._set_lr(lr_at(step, n_steps, self.lr, self.cfg.warmup_ratio))
                step_loss = 0.0
                for _ in range(gas):
                    loss = completion_nll(self._logits, [rows[i] for i in next(batches)],
                                          self.tokenizer.pad_token_id, pack_capacity)
                    self.engine.backward(loss)
                    self.engine.step()
                    step_loss += loss.item() / gas
                losses.append(step_loss)
                self.global_step += 1
                bar.update(1)
                if step % 10 == 0 or step == n_steps - 1:
                    bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
        self.progress = old_progress
        tenth = max(1, n_steps // 10)
        return {
            "steps": float(n_steps),
            "loss_first": sum(losses[:tenth]) / tenth,
            "loss_last": sum(losses[-tenth:]) / tenth,
        }

    # ---- DPO ---------------------------------------------------------------------------------

    def _pair_rows(self, pairs: pa.Table) -> tuple[list[TokenizedRow], list[TokenizedRow]]:
        prompts = pairs.column("prompt").to_pylist()
        eos = [k not in NO_EOS_PAIR_KINDS for k in pairs.column("kind").to_pylist()]
        max_len = self.cfg.max_seq_len_tokens
        chosen = tokenize_rows(self.tokenizer, prompts, pairs.column("chosen").to_pylist(), max_len, eos)
        rejected = tokenize_rows(
            self.tokenizer, prompts, pairs.column("rejected").to_pylist(), max_len, eos
        )
        return chosen, rejected

    def _pair_logps(
        self, chosen: list[TokenizedRow], rejected: list[TokenizedRow]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed completion log-probs of chosen and rejected (one forward over both) and the
        chosen rows' mean per-token NLL (for the optional NLL term)."""
        from rprm_ray.dpo import token_logps

        ids, mask = collate(chosen + rejected, self.tokenizer.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        logp = token_logps(self._logits(ids), ids) * mask[:, 1:].float()
        seq = logp.sum(dim=-1)
        n = len(chosen)
        chosen_tokens = mask[:n, 1:].float().sum().clamp(min=1)
        nll = -logp[:n].sum() / chosen_tokens
        return seq[:n], seq[n:], nll

    def add_reference_logps(self, pairs: pa.Table, batch_pairs: int | None = None) -> pa.Table:
        """Fill ref_chosen_logp / ref_rejected_logp with the current (frozen) model, so DPO needs
        no second resident model. Returns a new validated `preference_pairs` table."""
        import pyarrow as pa
        import torch

        from rprm_ray.batches import validate

        validate(pairs, "preference_pairs", where="DeepSpeedTrainer.add_reference_logps")
        chosen, rejected = self._pair_rows(pairs)
        size = batch_pairs or max(self.cfg.micro_batch_size_per_device, 64)
        ref_c: list[float] = []
        ref_r: list[float] = []
        self.engine.eval()
        with torch.no_grad(), self._bar(len(chosen), "reference log-probs") as bar:
            for start in range(0, len(chosen), size):
                c, r, _ = self._pair_logps(chosen[start : start + size], rejected[start : start + size])
                ref_c.extend(c.double().tolist())
                ref_r.extend(r.double().tolist())
                bar.update(len(c))
        self.engine.train()
        out = pairs
        for name, values in (("ref_chosen_logp", ref_c), ("ref_rejected_logp", ref_r)):
            idx = out.schema.get_field_index(name)
            out = out.set_column(idx, name, pa.array(values, type=pa.float64()))
        return validate(out, "preference_pairs", where="DeepSpeedTrainer.add_reference_logps")

    def dpo(
        self,
        pairs: pa.Table,
        epochs: int | None = None,
        lr: float | None = None,
        progress: bool | None = None,
    ) -> dict[str, float]:
        """Sigmoid DPO (beta = trainer_cfg.dpo_beta; DPO-Positive when dpop_lambda > 0) plus
        dpo_nll_coef x NLL of chosen. Pairs without reference log-probs get them from the current
        model first. Returns means over all micro batches: loss, reward accuracy, margin, chosen
        and rejected rewards."""
        import torch

        from rprm_ray.batches import validate
        from rprm_ray.dpo import dpo_loss

        validate(pairs, "preference_pairs", where="DeepSpeedTrainer.dpo")
        if pairs.num_rows == 0:
            raise ValueError("DeepSpeedTrainer.dpo: the preference_pairs table is empty")
        if pairs.column("ref_chosen_logp").null_count or pairs.column("ref_rejected_logp").null_count:
            pairs = self.add_reference_logps(pairs)
        chosen, rejected = self._pair_rows(pairs)
        ref_c = torch.tensor(pairs.column("ref_chosen_logp").to_pylist(), dtype=torch.float32)
        ref_r = torch.tensor(pairs.column("ref_rejected_logp").to_pylist(), dtype=torch.float32)
        epochs = epochs if epochs is not None else self.cfg.dpo_epochs
        n_steps = self._optimizer_steps(len(chosen), None, epochs)
        peak = lr if lr is not None else self.cfg.dpo_lr
        gas = self.cfg.gradient_accumulation_steps
        batches = shuffled_batches(len(chosen), self.cfg.micro_batch_size_per_device, self._rng,
                                   self.rank, self.world_size)
        sums = {"loss": 0.0, "reward_accuracy": 0.0, "margin": 0.0, "chosen_reward": 0.0,
                "rejected_reward": 0.0, "nll": 0.0}
        n_micro = 0
        old_progress, self.progress = self.progress, self.progress if progress is None else progress
        self.engine.train()
        with self._bar(n_steps, "dpo") as bar:
            for step in range(n_steps):
                self._set_lr(lr_at(step, n_steps, peak, self.cfg.warmup_ratio))
                for _ in range(gas):
                    idx = next(batches)
                    pc, pr, nll = self._pair_logps([chosen[i] for i in idx], [rejected[i] for i in idx])
                    loss, cr, rr = dpo_loss(
                        pc, pr, ref_c[idx].to(pc.device), ref_r[idx].to(pc.device), self.cfg.dpo_beta,
                        dpop_lambda=self.cfg.dpop_lambda,
                    )
                    total = loss + self.cfg.dpo_nll_coef * nll if self.cfg.dpo_nll_coef else loss
                    self.engine.backward(total)
                    self.engine.step()
                    sums["loss"] += loss.item()
                    sums["reward_accuracy"] += (cr > rr).float().mean().item()
                    sums["margin"] += (cr - rr).mean().item()
                    sums["chosen_reward"] += cr.mean().item()
                    sums["rejected_reward"] += rr.mean().item()
                    sums["nll"] += nll.item()
                    n_micro += 1
                self.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / n_micro:.4f}",
                                acc=f"{sums['reward_accuracy'] / n_micro:.2f}", refresh=False)
        self.progress = old_progress
        metrics = {k: v / n_micro for k, v in sums.items()}
        metrics["steps"] = float(n_steps)
        metrics["pairs"] = float(len(chosen))
        return metrics

    # ---- generation (evaluation helper; serving goes through rprm_ray.engines) ---------------

    def greedy(self, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 128) -> list[str]:
        """Greedy completions with the live weights (left-padded batches, stop at EOS)."""
        import torch

        tok = self.tokenizer
        out: list[str] = []
        self.engine.eval()
        old_side, tok.padding_side = tok.padding_side, "left"
        self.module.config.use_cache = True
        try:
            with torch.no_grad(), self._bar(len(prompts), "greedy") as bar:
                for start in range(0, len(prompts), batch_size):
                    enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.device)
                    gen = self.module.generate(
                        **enc, max_new_tokens=max_new_tokens, do_sample=False,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                    )
                    new = gen[:, enc["input_ids"].shape[1]:]
                    out.extend(tok.batch_decode(new, skip_special_tokens=True))
                    bar.update(len(new))
        finally:
            tok.padding_side = old_side
            self.module.config.use_cache = False
            self.engine.train()
        return out

    # ---- export ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """HF-named CPU float32 copies of every parameter (ZeRO-3 shards are gathered first)."""
        import deepspeed

        params = list(self.module.parameters())
        stage3 = self.cfg.deepspeed.zero_stage == 3
        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if stage3 else nullcontext()
        with ctx:
            return {k: v.detach().to("cpu").float().clone() for k, v in self.module.state_dict().items()}

    def weights_checksum(self) -> str:
        return checksum_state_dict(self.state_dict())

    def save(self, out_dir: str | Path) -> Path:
        """HF safetensors + tokenizer (loadable by transformers and vLLM). Call it on every rank:
        under ZeRO-3 gathering the weights is a collective; only rank 0 writes."""
        self.save_with_checksum(out_dir)
        return Path(out_dir)

    def save_with_checksum(self, out_dir: str | Path) -> str:
        """`save`, returning the saved weights' checksum from the same gather (a second gather
        of a sharded model costs as much as the save)."""
        from rprm_ray.tiny import mark_complete

        out = Path(out_dir)
        state = self.state_dict()
        checksum = checksum_state_dict(state)
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            self.module.save_pretrained(out, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(out)
            mark_complete(out, {"trained_from": str(self.model_dir), "global_step": self.global_step,
                                "checksum": checksum})
        return checksum
