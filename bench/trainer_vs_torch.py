"""The DeepSpeed trainer against a plain PyTorch loop: SFT and DPO optimizer steps per second on the
same model, rows, micro batch, optimizer and schedule, ZeRO stages side by side.

What is compared (each in this process, one rank, the same thread count):
- `torch`: `torch.optim.AdamW` over the HF model, the loss computed by the same functions the trainer
  uses (`training.completion_nll`, `dpo.dpo_loss`), `clip_grad_norm_`, `step`, `zero_grad`;
- `deepspeed zero0/1/2`: `training.DeepSpeedTrainer.sft` / `.dpo` with `trainer.deepspeed.zero_stage`.
Variants run in turn for `--rounds` rounds (median steps/s), so the machine's load hits all alike; each
timing excludes model loading and DeepSpeed's initialisation (a short warm-up runs first). The target
is DeepSpeed ≥ 0.9x of plain PyTorch: the trainer's abstraction should cost little.

    .venv/bin/python bench/trainer_vs_torch.py [--hidden 128] [--layers 2] [--steps 60] [--rounds 2]
    .venv/bin/python bench/trainer_vs_torch.py --smoke      # seconds: a broken benchmark fails CI

Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_arith.yaml"
STAGES = (0, 1, 2)


def trainer_cfg(zero_stage: int, micro: int):
    from rprm_ray.config import load_recipe

    recipe = load_recipe(RECIPE, [f"trainer.deepspeed.zero_stage={zero_stage}",
                                  f"trainer.micro_batch_size_per_device={micro}",
                                  f"trainer.global_batch_size={micro}"])
    return recipe.trainer


def data(n_rows: int):
    """SFT rows (policy prompts and reference solutions) and DPO pairs (a reference solution
    against the same solution with one digit slipped) from the embedded world."""
    import pyarrow as pa

    from rprm_ray import batches
    from rprm_ray.config import load_recipe
    from rprm_ray.tasks import arith, arith_tables

    train, _ = arith.make_splits(load_recipe(RECIPE, [f"task.train_problems={n_rows}"]).task)
    sft = arith_tables.policy_sft_table(train).slice(0, n_rows)
    slip = str.maketrans("0123456789", "1234567890")
    rows = [{"pair_id": f"p{i}", "kind": "step", "problem_id": f"q{i}", "prompt": p, "chosen": c,
             "rejected": c.translate(slip), "ref_chosen_logp": None, "ref_rejected_logp": None}
            for i, (p, c) in enumerate(zip(sft.column("prompt").to_pylist(),
                                           sft.column("completion").to_pylist(), strict=True))]
    return sft, batches.from_rows(rows, "preference_pairs") if rows else pa.table({})


class TorchLoop:
    """The plain loop: what DeepSpeedTrainer does, without DeepSpeed."""

    def __init__(self, model_dir: Path, cfg) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.config.use_cache = False
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.98))
        self.rng = random.Random(cfg.seed)

    def _logits(self, ids, position_ids=None):
        return self.model(input_ids=ids, position_ids=position_ids).logits

    def _step(self, loss, lr: float) -> None:
        import torch

        for group in self.opt.param_groups:
            group["lr"] = lr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def sft(self, table, steps: int) -> None:
        from rprm_ray import training

        rows = training.tokenize_rows(self.tok, table.column("prompt").to_pylist(),
                                      table.column("completion").to_pylist(), self.cfg.max_seq_len_tokens)
        it = training.shuffled_batches(len(rows), self.cfg.micro_batch_size_per_device, self.rng)
        self.model.train()
        for step in range(steps):
            loss = training.completion_nll(self._logits, [rows[i] for i in next(it)], self.tok.pad_token_id, None)
            self._step(loss, training.lr_at(step, steps, self.cfg.lr, self.cfg.warmup_ratio))

    def _pair_logps(self, chosen, rejected):
        from rprm_ray import training
        from rprm_ray.dpo import token_logps

        ids, mask = training.collate(chosen + rejected, self.tok.pad_token_id)
        logp = token_logps(self._logits(ids), ids) * mask[:, 1:].float()
        seq = logp.sum(dim=-1)
        n = len(chosen)
        return seq[:n], seq[n:], -logp[:n].sum() / mask[:n, 1:].float().sum().clamp(min=1)

    def add_reference_logps(self, pairs):
        """The pairs with their reference log-probs from the current model (as the trainer's)."""
        import pyarrow as pa
        import torch

        chosen, rejected = self._pair_rows(pairs)
        with torch.no_grad():
            ref_c, ref_r, _ = self._pair_logps(chosen, rejected)
        out = pairs
        for name, values in (("ref_chosen_logp", ref_c), ("ref_rejected_logp", ref_r)):
            out = out.set_column(out.schema.get_field_index(name), name,
                                 pa.array(values.double().tolist(), type=pa.float64()))
        return out

    def _pair_rows(self, pairs):
        from rprm_ray import training

        prompts = pairs.column("prompt").to_pylist()
        max_len = self.cfg.max_seq_len_tokens
        return (training.tokenize_rows(self.tok, prompts, pairs.column("chosen").to_pylist(), max_len),
                training.tokenize_rows(self.tok, prompts, pairs.column("rejected").to_pylist(), max_len))

    def dpo(self, pairs) -> None:
        """One epoch over `pairs` (reference log-probs filled), as `DeepSpeedTrainer.dpo`."""
        import torch

        from rprm_ray import training
        from rprm_ray.dpo import dpo_loss

        chosen, rejected = self._pair_rows(pairs)
        ref_c = torch.tensor(pairs.column("ref_chosen_logp").to_pylist(), dtype=torch.float32)
        ref_r = torch.tensor(pairs.column("ref_rejected_logp").to_pylist(), dtype=torch.float32)
        micro = self.cfg.micro_batch_size_per_device
        steps = -(-len(chosen) // micro)
        it = training.shuffled_batches(len(chosen), micro, self.rng)
        self.model.train()
        for step in range(steps):
            idx = next(it)
            pc, pr, nll = self._pair_logps([chosen[i] for i in idx], [rejected[i] for i in idx])
            loss, _, _ = dpo_loss(pc, pr, ref_c[idx], ref_r[idx], self.cfg.dpo_beta, dpop_lambda=self.cfg.dpop_lambda)
            self._step(loss + self.cfg.dpo_nll_coef * nll, training.lr_at(step, steps, self.cfg.dpo_lr,
                                                                           self.cfg.warmup_ratio))


def build_model(hidden: int, layers: int, out: Path) -> Path:
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.tiny import build_tiny_model

    heads = max(1, hidden // 64)  # vLLM's CPU attention wants head_dim 64; kept for comparability
    cfg = TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=4 * hidden)
    return build_tiny_model(cfg, out, seed=0)


def time_variant(name: str, model: Path, sft, pairs, steps: int, micro: int) -> tuple[float, float]:
    """(SFT steps/s, DPO steps/s) of one variant. Construction, a warm-up and the DPO reference pass
    are excluded: both sides compute reference log-probs the same way, once, before DPO."""
    if name == "torch":
        runner = TorchLoop(model, trainer_cfg(0, micro))
        do_sft = lambda n: runner.sft(sft, n)  # noqa: E731
        do_dpo = runner.dpo
    else:
        from rprm_ray.training import DeepSpeedTrainer

        runner = DeepSpeedTrainer(model, trainer_cfg(int(name[-1]), micro), progress=False)
        do_sft = lambda n: runner.sft(sft, steps=n)  # noqa: E731
        do_dpo = lambda p: runner.dpo(p, epochs=1)  # noqa: E731
    do_sft(2)  # warm-up: allocator, first-step costs
    start = time.perf_counter()
    do_sft(steps)
    sft_rate = steps / (time.perf_counter() - start)
    # One DPO epoch over `steps` micro batches of pairs (plus a 2-batch warm-up).
    warm, timed = (runner.add_reference_logps(pairs.slice(a, n * micro))
                   for a, n in ((0, 2), (2 * micro, steps)))
    do_dpo(warm)
    start = time.perf_counter()
    do_dpo(timed)
    return sft_rate, steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro", type=int, default=32, help="rows (DPO: pairs) per micro batch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a few steps of each variant, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.micro = 3, 1, 8

    import torch

    from rprm_ray.training import default_num_threads, init_distributed

    torch.set_num_threads(default_num_threads())
    init_distributed("gloo")  # DeepSpeed's process group, also set up for the plain loop: same cost
    sft, pairs = data(max(64, (args.steps + 2) * args.micro))
    variants = ["torch"] + [f"deepspeed zero{s}" for s in STAGES]
    rates: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.hidden, args.layers, Path(tmp) / "model")
        params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM
                     .from_pretrained(model).parameters())
        for round_ in range(args.rounds):
            for v in variants:
                rates[v].append(time_variant(v, model, sft, pairs, args.steps, args.micro))
                print(f"round {round_ + 1}: {v:16s} SFT {rates[v][-1][0]:6.2f}  DPO {rates[v][-1][1]:6.2f} steps/s",
                      flush=True)
    medians = {v: (statistics.median(r[0] for r in rates[v]), statistics.median(r[1] for r in rates[v]))
               for v in variants}
    base = medians["torch"]
    print(f"\n{params / 1e6:.2f}M parameters, micro batch {args.micro}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} round(s)")
    print(f"  {'variant':16s} {'SFT steps/s':>12s} {'÷ torch':>8s} {'DPO steps/s':>12s} {'÷ torch':>8s}")
    for v in variants:
        s, d = medians[v]
        print(f"  {v:16s} {s:12.2f} {s / base[0]:8.2f} {d:12.2f} {d / base[1]:8.2f}")
    return medians


if __name__ == "__main__":
    main()
