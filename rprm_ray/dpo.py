"""Log-prob and DPO loss math (pure torch; imported only by code that trains).

Conventions: `labels` are the input ids themselves; position t of `logits` predicts token t+1, so
the shift happens here, once. `loss_mask[b, t]` is 1 where token t of row b is a completion token
(the prompt and padding are 0); the first token can never be scored (nothing predicts it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token: [B, T-1], entry t = log p(labels[:, t+1] | labels[:, :t+1])."""
    import torch

    logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    return torch.gather(logp, 2, labels[:, 1:].unsqueeze(-1)).squeeze(-1)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Sum over completion tokens of log p(token | prefix): one value per row, shape [B]."""
    if logits.shape[:2] != labels.shape or labels.shape != loss_mask.shape:
        raise ValueError(
            f"sequence_logps: logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and "
            f"loss_mask {tuple(loss_mask.shape)} must agree on [batch, time]"
        )
    return (token_logps(logits, labels) * loss_mask[:, 1:].float()).sum(dim=-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    dpop_lambda: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO (Rafailov et al.): mean of -log sigma(beta * (log-ratio chosen - log-ratio
    rejected)). Returns (loss, chosen_rewards, rejected_rewards); rewards are beta * log-ratio
    per pair, detached (for metrics: accuracy = chosen > rejected, margin = difference).

    `dpop_lambda` > 0 is DPO-Positive (Pal et al. 2024, "Smaug"): inside the sigmoid, subtract
    lambda * max(0, ref log-prob of chosen - policy log-prob of chosen): the chosen completion
    is pushed back up whenever it falls below the reference.
    Plain DPO lowers both log-probs when chosen and rejected differ in a few tokens (a step whose
    result differs by one digit), which is the case of step pairs."""
    import torch.nn.functional as F

    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    logits = chosen_ratio - rejected_ratio
    if dpop_lambda:
        logits = logits - dpop_lambda * (-chosen_ratio).clamp(min=0)
    loss = -F.logsigmoid(beta * logits).mean()
    return loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()
