"""DPO math against numbers worked out by hand with the math module."""

from __future__ import annotations

import math

import pytest
import torch


def _log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def test_sequence_logps_shifts_and_masks() -> None:
    from rprm_ray.dpo import sequence_logps

    # Vocabulary of 3, sequence of 4 tokens: [0, 2, 1, 1]; prompt = first 2 tokens.
    rows = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.5], [0.3, -1.0, 0.0], [5.0, 5.0, 5.0]]
    logits = torch.tensor([rows])
    labels = torch.tensor([[0, 2, 1, 1]])
    mask = torch.tensor([[0, 0, 1, 1]])
    # Token 2 (=1) is predicted by position 1, token 3 (=1) by position 2; position 3 predicts nothing.
    expected = _log_softmax(rows[1])[1] + _log_softmax(rows[2])[1]
    got = sequence_logps(logits, labels, mask)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # Unmasking the second token adds log p(labels[1]=2 | position 0).
    mask2 = torch.tensor([[0, 1, 1, 1]])
    assert sequence_logps(logits, labels, mask2).item() == pytest.approx(
        expected + _log_softmax(rows[0])[2], abs=1e-6
    )


def test_sequence_logps_ignores_padding_rows_independently() -> None:
    from rprm_ray.dpo import sequence_logps

    logits = torch.zeros(2, 3, 4)  # uniform: every token has log-prob -log 4
    labels = torch.tensor([[1, 2, 3], [1, 2, 0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    got = sequence_logps(logits, labels, mask).tolist()
    assert got == pytest.approx([-2 * math.log(4), -math.log(4)], abs=1e-6)


def test_sequence_logps_rejects_mismatched_shapes() -> None:
    from rprm_ray.dpo import sequence_logps

    with pytest.raises(ValueError, match="loss_mask"):
        sequence_logps(torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4))


def test_dpo_loss_matches_hand_computation() -> None:
    from rprm_ray.dpo import dpo_loss

    beta = 0.1
    pc, pr = [-10.0, -4.0], [-12.0, -3.0]
    rc, rr = [-11.0, -5.0], [-11.5, -2.0]
    # pair 0: chosen ratio 1.0, rejected ratio -0.5 -> z = 0.1 * 1.5 = 0.15
    # pair 1: chosen ratio 1.0, rejected ratio -1.0 -> z = 0.1 * 2.0 = 0.20
    hand = [-math.log(1 / (1 + math.exp(-0.15))), -math.log(1 / (1 + math.exp(-0.20)))]
    loss, cr, rj = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta)
    assert loss.item() == pytest.approx(sum(hand) / 2, abs=1e-6)
    assert cr.tolist() == pytest.approx([0.1, 0.1])
    assert rj.tolist() == pytest.approx([-0.05, -0.1])
    assert not cr.requires_grad


def test_dpo_loss_is_log2_at_reference_and_gradient_prefers_chosen() -> None:
    from rprm_ray.dpo import dpo_loss

    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    loss.backward()
    # d/dpc of -log sigma(beta (pc - pr)) at 0 = -beta * sigma(0) = -0.25; opposite for pr.
    assert pc.grad.item() == pytest.approx(-0.25, abs=1e-6)
    assert pr.grad.item() == pytest.approx(0.25, abs=1e-6)



def test_dpop_penalises_only_a_chosen_completion_below_the_reference() -> None:
    from rprm_ray.dpo import dpo_loss

    beta, lam = 0.1, 5.0
    # pair 0: chosen fell 2.0 nats below the reference -> z = beta * (-2 - (-1) - 5 * 2) = -1.1
    # pair 1: chosen rose 1.0 above it -> no penalty, z = beta * (1 - (-1)) = 0.2
    pc, pr = [-12.0, -4.0], [-13.0, -3.0]
    rc, rr = [-10.0, -5.0], [-12.0, -2.0]
    hand = [-math.log(1 / (1 + math.exp(1.1))), -math.log(1 / (1 + math.exp(-0.2)))]
    loss, cr, _ = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta, dpop_lambda=lam)
    assert loss.item() == pytest.approx(sum(hand) / 2, abs=1e-6)
    # The rewards reported stay the plain DPO log-ratios.
    assert cr.tolist() == pytest.approx([-0.2, 0.1])
    plain, _, _ = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta)
    assert loss.item() > plain.item()

    # Below the reference, the chosen log-prob's gradient is (1 + lambda) times plain DPO's.
    grads = []
    for lam_ in (0.0, lam):
        c = torch.tensor([-12.0], requires_grad=True)
        loss, _, _ = dpo_loss(c, torch.tensor([-13.0]), torch.tensor([-10.0]), torch.tensor([-12.0]),
                              beta=beta, dpop_lambda=lam_)
        loss.backward()
        grads.append(c.grad.item() / (1 - torch.sigmoid(torch.tensor(beta * (-1.0 - lam_ * 2.0))).item()))
    assert grads[1] == pytest.approx((1 + lam) * grads[0], rel=1e-5)

# ---- the trainer's collation: the loss sees completion tokens (and EOS) only ----------------


def test_sft_collation_masks_prompt_and_padding() -> None:
    from rprm_ray.tiny import EOS_ID, PAD_ID, build_tokenizer
    from rprm_ray.training import collate, tokenize_rows

    tok = build_tokenizer()
    rows = tokenize_rows(tok, ["Q:1+2\n", "Q:10*3\n"], ["A:3\n", "10*3=30\nA:30\n"], max_len=64)
    ids, mask = collate(rows, PAD_ID)
    assert ids.shape == mask.shape == (2, len("Q:10*3\n10*3=30\nA:30\n") + 1)
    first = ids[0].tolist()
    n_prompt, n_completion = len("Q:1+2\n"), len("A:3\n") + 1  # + EOS
    assert tok.decode(first[:n_prompt]) == "Q:1+2\n"
    assert first[n_prompt + n_completion - 1] == EOS_ID
    assert mask[0].tolist() == [0] * n_prompt + [1] * n_completion + [0] * (
        ids.shape[1] - n_prompt - n_completion
    )
    assert first[n_prompt + n_completion :] == [PAD_ID] * (ids.shape[1] - n_prompt - n_completion)
    assert mask[1].sum().item() == len("10*3=30\nA:30\n") + 1


def test_tokenize_rows_truncates_right_and_keeps_prompt_boundary() -> None:
    from rprm_ray.tiny import build_tokenizer
    from rprm_ray.training import tokenize_rows

    tok = build_tokenizer()
    (row,) = tokenize_rows(tok, ["Q:1\n"], ["abcdefgh"], max_len=6, append_eos=False)
    assert row.n_prompt == 4 and tok.decode(row.ids) == "Q:1\nab"


def test_lr_schedule_warms_up_then_decays_to_floor() -> None:
    from rprm_ray.training import lr_at

    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, 100, 1.0, 0.1) == pytest.approx(0.1)  # floor = 10% of peak


def test_shuffled_batches_cover_each_row_once_per_epoch_and_reshuffle() -> None:
    import itertools
    import random

    from rprm_ray.training import shuffled_batches

    gen = shuffled_batches(105, size=10, rng=random.Random(1))
    epoch = list(itertools.islice(gen, 11))  # 10 full batches and one of 5
    assert [len(b) for b in epoch] == [10] * 10 + [5]
    assert sorted(i for b in epoch for i in b) == list(range(105))
    second = list(itertools.islice(gen, 11))
    assert sorted(i for b in second for i in b) == list(range(105)) and second != epoch


def test_shuffled_batches_give_each_rank_its_own_rows() -> None:
    import itertools
    import random

    from rprm_ray.training import shuffled_batches

    world = 3
    per_rank = [list(itertools.islice(shuffled_batches(120, size=10, rng=random.Random(7), rank=r,
                                                       world_size=world), 4)) for r in range(world)]
    for step in range(4):
        rows = [set(per_rank[r][step]) for r in range(world)]
        assert all(len(r) == 10 for r in rows)
        assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])
    epoch = [i for r in range(world) for b in per_rank[r] for i in b]
    assert sorted(epoch) == list(range(120))  # 4 steps x 3 ranks x 10 rows = one epoch
    with pytest.raises(ValueError, match="rank 3 outside world size 3"):
        next(shuffled_batches(10, 2, random.Random(0), rank=3, world_size=3))
