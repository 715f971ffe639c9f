"""The one training loop: a DeepSpeed engine over a Hugging Face causal LM, with SFT and sigmoid DPO.

Used directly by the policy bootstrap and wrapped by the Trainer Ray actor. Runs on CPU (gloo,
world size 1 on a laptop) and on GPUs (nccl, one process per rank: RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT set by whoever starts the ranks). The pure parts (tokenised rows,
packing, batching, the schedule) live in `rprm_ray.training_rows`; the DeepSpeed set-up (config,
optimizer, model loading, the non-finite loss guard) in `rprm_ray.deepspeed_setup`.

EOS: SFT appends EOS to every completion (the model learns to stop). DPO appends EOS to every
pair except kind "step" (a PSRLM step continues a solution; it does not end the generation).

A NaN or infinite loss stops training (`NonFiniteLossError`) before its backward pass, so no
checkpoint of diverged weights is ever saved or recorded as a finished stage.

Given a `checkpoint_dir`, `sft()` and `dpo()` save a resumable checkpoint every
`trainer.checkpoint_interval_steps` optimizer steps and, when that directory holds one of the same
call (same rows, steps, config: `rprm_ray.trainer_checkpoints`), continue from it: the same
remaining batches in the same order, the same weights at the end as an uninterrupted call.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Re-exported: callers import these from here.
from rprm_ray.deepspeed_setup import (  # noqa: F401
    NonFiniteLossError,
    available_cpus,
    build_optimizer,
    check_finite_loss,
    cpu_threads_per_rank,
    deepspeed_config,
    default_num_threads,
    init_distributed,
    load_model,
    torch_extensions_dir,
    use_own_torch_extensions_dir,
)
from rprm_ray.trainer_checkpoints import Checkpointer, call_start, fingerprint, table_digest
from rprm_ray.training_rows import (  # noqa: F401
    TokenizedRow,
    collate,
    collate_packed,
    completion_nll,
    lr_at,
    pack_rows,
    shuffled_batches,
    tokenize_rows,
)

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
        from transformers import AutoTokenizer

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
        self.backend = init_distributed(trainer_cfg.deepspeed.backend)

        torch.manual_seed(trainer_cfg.seed)
        self._rng = random.Random(trainer_cfg.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ds_config = deepspeed_config(trainer_cfg)
        # The marker is kept as long as the model: transformers asks it whether ZeRO-3 is on.
        model, self._zero3_marker = load_model(self.model_dir, trainer_cfg, ds_config)
        optimizer = build_optimizer(model.parameters(), trainer_cfg, self.lr, adam_betas)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                 config=ds_config)
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

    def _checkpointer(self, checkpoint_dir: str | Path | None, kind: str, rows: pa.Table, n_steps: int,
                      peak_lr: float, rng_start: Any) -> Checkpointer | None:
        """The call's checkpointer (None without a directory or an interval)."""
        if checkpoint_dir is None or not self.cfg.checkpoint_interval_steps:
            return None
        # DPO's reference log-probs are left out: recomputed from the same starting weights (part
        # of the fingerprint) on a resume, their last bits may differ with the thread count.
        digest = table_digest(rows, frozenset({"ref_chosen_logp", "ref_rejected_logp"}))
        start = call_start(self.model_dir, self.global_step, rng_start)
        fp = fingerprint(kind, digest, n_steps, peak_lr, self.cfg, self.world_size, start)
        return Checkpointer(self.engine, checkpoint_dir, self.cfg.checkpoint_interval_steps, fp, n_steps,
                            self.rank, self.world_size, rng_start)

    # ---- SFT ---------------------------------------------------------------------------------

    def sft(
        self,
        table: pa.Table,
        steps: int | None = None,
        epochs: float | None = None,
        progress: bool | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> dict[str, float]:
        """Next-token loss on completion tokens of an `sft_examples` table. Returns the mean loss
        of the first and last 10% of optimizer steps and the step count (with a
        `checkpoint_dir`: also `resumed_from_step`, 0 for a fresh start)."""
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
        rng_start = self._rng.getstate()
        ckpt = self._checkpointer(checkpoint_dir, "sft", table, n_steps, self.lr, rng_start)
        batches = shuffled_batches(len(rows), self.cfg.micro_batch_size_per_device, self._rng,
                                   self.rank, self.world_size)
        start, state = ckpt.resume(batches, gas) if ckpt else (0, {})
        losses: list[float] = list(state.get("losses", []))
        self.global_step = state.get("global_step", self.global_step)
        old_progress, self.progress = self.progress, self.progress if progress is None else progress
        self.engine.train()
        with self._bar(n_steps, "sft") as bar:
            bar.update(start)
            for step in range(start, n_steps):
                self._set_lr(lr_at(step, n_steps, self.lr, self.cfg.warmup_ratio))
                step_loss = 0.0
                for _ in range(gas):
                    loss = completion_nll(self._logits, [rows[i] for i in next(batches)],
                                          self.tokenizer.pad_token_id, pack_capacity)
                    value = check_finite_loss(loss, "DeepSpeedTrainer.sft", step, self.world_size)
                    self.engine.backward(loss)
                    self.engine.step()
                    step_loss += value / gas
                losses.append(step_loss)
                self.global_step += 1
                if ckpt and ckpt.due(step + 1):
                    ckpt.save(step + 1, self.global_step, losses=losses)
                bar.update(1)
                if step % 10 == 0 or step == n_steps - 1:
                    bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
        self.progress = old_progress
        tenth = max(1, n_steps // 10)
        metrics = {
            "steps": float(n_steps),
            "loss_first": sum(losses[:tenth]) / tenth,
            "loss_last": sum(losses[-tenth:]) / tenth,
        }
        if ckpt:
            metrics["resumed_from_step"] = start
        return metrics

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
        checkpoint_dir: str | Path | None = None,
    ) -> dict[str, float]:
        """Sigmoid DPO (beta = trainer_cfg.dpo_beta; DPO-Positive when dpop_lambda > 0) plus
        dpo_nll_coef x NLL of chosen. Pairs without reference log-probs get them from the current
        model first. Returns means over all micro batches: loss, reward accuracy, margin, chosen
        and rejected rewards (with a `checkpoint_dir`: also `resumed_from_step`)."""
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
        rng_start = self._rng.getstate()
        ckpt = self._checkpointer(checkpoint_dir, "dpo", pairs, n_steps, peak, rng_start)
        batches = shuffled_batches(len(chosen), self.cfg.micro_batch_size_per_device, self._rng,
                                   self.rank, self.world_size)
        start, state = ckpt.resume(batches, gas) if ckpt else (0, {})
        sums = dict(state.get("sums") or {"loss": 0.0, "reward_accuracy": 0.0, "margin": 0.0,
                                          "chosen_reward": 0.0, "rejected_reward": 0.0, "nll": 0.0})
        n_micro = state.get("n_micro", 0)
        self.global_step = state.get("global_step", self.global_step)
        old_progress, self.progress = self.progress, self.progress if progress is None else progress
        self.engine.train()
        with self._bar(n_steps, "dpo") as bar:
            bar.update(start)
            for step in range(start, n_steps):
                self._set_lr(lr_at(step, n_steps, peak, self.cfg.warmup_ratio))
                for _ in range(gas):
                    idx = next(batches)
                    pc, pr, nll = self._pair_logps([chosen[i] for i in idx], [rejected[i] for i in idx])
                    loss, cr, rr = dpo_loss(
                        pc, pr, ref_c[idx].to(pc.device), ref_r[idx].to(pc.device), self.cfg.dpo_beta,
                        dpop_lambda=self.cfg.dpop_lambda,
                    )
                    total = loss + self.cfg.dpo_nll_coef * nll if self.cfg.dpo_nll_coef else loss
                    check_finite_loss(total, "DeepSpeedTrainer.dpo", step, self.world_size)
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
                if ckpt and ckpt.due(step + 1):
                    ckpt.save(step + 1, self.global_step, sums=sums, n_micro=n_micro)
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / n_micro:.4f}",
                                acc=f"{sums['reward_accuracy'] / n_micro:.2f}", refresh=False)
        self.progress = old_progress
        metrics = {k: v / n_micro for k, v in sums.items()}
        metrics["steps"] = float(n_steps)
        metrics["pairs"] = float(len(chosen))
        if ckpt:
            metrics["resumed_from_step"] = start
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

    def _rank0_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full weights in the training precision, on rank 0 only (None elsewhere): ZeRO-3
        gathers them once, layer by layer, onto rank 0; below ZeRO-3 every rank already holds
        them and only rank 0 copies."""
        if self.cfg.deepspeed.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()  # a collective: every rank
        if self.rank != 0:
            return None
        return {k: v.detach().to("cpu") for k, v in self.module.state_dict().items()}

    def save_with_checksum(self, out_dir: str | Path) -> str:
        """`save`, returning the saved weights' checksum (every rank returns rank 0's value).
        The weights are saved in the training precision (bf16 stays bf16)."""
        import torch

        from rprm_ray.tiny import mark_complete

        out = Path(out_dir)
        state = self._rank0_state_dict()
        checksum = ""
        if self.rank == 0:
            checksum = checksum_state_dict(state)
            out.mkdir(parents=True, exist_ok=True)
            self.module.save_pretrained(out, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(out)
            mark_complete(out, {"trained_from": str(self.model_dir), "global_step": self.global_step,
                                "checksum": checksum})
        if self.world_size > 1:
            shared = [checksum]
            torch.distributed.broadcast_object_list(shared, src=0)
            checksum = shared[0]
        return checksum
