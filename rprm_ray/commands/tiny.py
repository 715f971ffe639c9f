"""`rprm-ray tiny ORG/NAME`: a tiny model laid into the Hugging Face cache under a hub id.

The real path (hub ids, the offline cache, chat templates, an OpenAI-compatible teacher) then runs
with no network: e.g. `HF_HUB_OFFLINE=1 rprm-ray run recipes/paper_smoke.yaml
--set models.policy.name_or_path=ORG/NAME`. The model is random (its outputs are noise); its
tokenizer is the byte-level one of `rprm_ray.tiny` (the verdict prefix one token) with a ChatML-style
chat template."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The paper-smoke size: the tiny world's model with room for paper-style prompts, which a byte
# tokenizer spells out character by character (the R-PRM judge template alone is ~2,400 bytes).
PAPER_SMOKE_POSITIONS = 4096


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo_id", help="the hub id to lay the model under, ORG/NAME")
    p.add_argument("--cache", type=Path, default=None,
                   help="hub cache directory (default: the standard one, HF_HOME/hub)")
    p.add_argument("--max-position-embeddings", type=int, default=PAPER_SMOKE_POSITIONS)
    p.add_argument("--hidden-size", type=int, default=128, help="a multiple of 64 (vLLM's CPU head size)")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat-template", action="store_true", help="a tokenizer without a chat template")
    p.add_argument("--no-verdict-token", action="store_true",
                   help="spell the judge's verdict prefix byte by byte (default: one token, as tiny judges have)")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rprm_ray.config import TinyModelConfig
    from rprm_ray.hub import CHATML_TEMPLATE, ModelResolutionError, lay_tiny_model

    try:
        cfg = TinyModelConfig(hidden_size=args.hidden_size, num_layers=args.num_layers,
                              num_heads=max(1, args.hidden_size // 64), intermediate_size=4 * args.hidden_size,
                              max_position_embeddings=args.max_position_embeddings)
        path = lay_tiny_model(args.repo_id, cache=args.cache, tiny_cfg=cfg, seed=args.seed,
                              chat_template=None if args.no_chat_template else CHATML_TEMPLATE,
                              verdict_token=not args.no_verdict_token)
    except (ValidationError, ModelResolutionError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{args.repo_id}: {path}")
    return 0
