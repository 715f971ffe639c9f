"""Tokenised training rows, collation, sequence packing, data-parallel batching and the learning-
rate schedule: the pure parts of the training loop (unit-tested without DeepSpeed).

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
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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
