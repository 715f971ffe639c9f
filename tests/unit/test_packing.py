"""SFT sequence packing: bins respect the capacity and keep every row once, and a packed micro
batch gives the padded batch's loss and gradients on a real (tiny) transformers model."""

from __future__ import annotations

import random

import pytest

from rprm_ray.training import TokenizedRow, collate_packed, completion_nll, pack_rows


def _rows(lengths: list[int], seed: int = 0) -> list[TokenizedRow]:
    rng = random.Random(seed)
    return [TokenizedRow(ids=[rng.randrange(3, 250) for _ in range(n)], n_prompt=rng.randrange(1, n))
            for n in lengths]


def test_bins_hold_every_row_once_within_the_capacity() -> None:
    rows = _rows([5, 9, 3, 7, 7, 2, 10, 4])
    bins = pack_rows(rows, capacity=12)
    assert sorted(id(r) for b in bins for r in b) == sorted(id(r) for r in rows)
    assert all(sum(len(r.ids) for r in b) <= 12 for b in bins)
    assert len(bins) == 4  # 47 tokens need 4 bins of 12; first-fit decreasing finds them
    too_long = pack_rows(_rows([20, 3]), capacity=12)
    assert [[len(r.ids) for r in b] for b in too_long] == [[20], [3]]  # a bin of its own


def test_packed_collation_restarts_positions_and_masks_each_rows_first_token() -> None:
    a = TokenizedRow(ids=[11, 12, 13], n_prompt=1)
    b = TokenizedRow(ids=[21, 22], n_prompt=0)
    ids, positions, mask = collate_packed([[a, b], [b]], pad_id=0)
    assert ids.tolist() == [[11, 12, 13, 21, 22], [21, 22, 0, 0, 0]]
    assert positions.tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # b's completion starts at its first token, but nothing of b's own predicts it.
    assert mask.tolist() == [[0, 1, 1, 0, 1], [0, 1, 0, 0, 0]]


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny_model_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False

    packed_calls = []

    def logits(ids, positions):
        packed_calls.append(positions is not None)
        return model(input_ids=ids, position_ids=positions).logits

    rows = _rows([40, 17, 33, 25, 8, 39, 12, 30], seed=3)
    grads = []
    for capacity in (None, 64):
        model.zero_grad()
        loss = completion_nll(logits, rows, pad_id=0, pack_capacity=capacity)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = grads
    assert packed_calls == [False, True]  # 4 bins of 64 tokens instead of 8 rows of 40: packed
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for g_pad, g_pack in zip(padded_grads, packed_grads, strict=True):
        assert torch.allclose(g_pad, g_pack, atol=1e-6, rtol=1e-4)

