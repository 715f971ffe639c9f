"""Locally built tokenizer and tiny Llama models (no download).

The tokenizer is byte-level BPE with no merges: every byte is one token, so any text round-trips
exactly and the tiny models learn a character-level task. Special tokens: `<pad>` (0), `<s>` (1),
`</s>` (2); bytes follow from id 3. One added token (id 259, not special: it decodes as its text)
is the R-PRM verdict prefix `Verification: Is the step correct (Yes/No)?`: byte by byte it was 43
of a compact critique's ~100 tokens, a fixed string the judge spent that share of its SFT compute
and decoding steps on (a real model's BPE writes it in about a dozen tokens).

BOS policy: `<s>` is NEVER added automatically (the tokenizer has no post-processor). Training,
transformers generation and vLLM all call the same tokenizer, so a prompt is always the same ids
everywhere; `</s>` is appended explicitly by the trainer after each completion and is the model's
stop token (`eos_token_id`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rprm_ray.prompts import VERDICT_PREFIX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from rprm_ray.config import ModelSpec, TinyModelConfig

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
VERDICT_TOKEN_ID = len(SPECIAL_TOKENS) + 256
VOCAB_SIZE = VERDICT_TOKEN_ID + 1
# Part of every tiny base model's cache key: a model built for another vocabulary is never reused.
TOKENIZER_VERSION = 2
_COMPLETE_MARKER = "tiny_model.json"  # written last: a directory without it is an interrupted build


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: one token per byte, the three special tokens and the verdict prefix."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(ByteLevel.alphabet(), key=_byte_of):
        vocab[ch] = len(vocab)
    assert len(vocab) == VERDICT_TOKEN_ID, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: with no merges the GPT-2 split regex changes nothing, it only costs time.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # normalized=False: matched on the raw text, so the prefix always encodes to this one id.
    tok.add_tokens([AddedToken(VERDICT_PREFIX, normalized=False, special=False)])
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=None,
        model_max_length=1 << 30,
        clean_up_tokenization_spaces=False,
    )


def _byte_of(ch: str) -> int:
    """The byte a ByteLevel alphabet character stands for (GPT-2's bytes_to_unicode inverse)."""
    code = ord(ch)
    if code >= 256:
        # Bytes GPT-2 could not print as themselves were shifted to 256 + k in byte order.
        return _unprintable_bytes()[code - 256]
    return code


def _unprintable_bytes() -> list[int]:
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    return [b for b in range(256) if b not in printable]


def build_tiny_model(tiny_cfg: TinyModelConfig, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny Llama (safetensors) plus the tokenizer into `out_dir`.

    head_dim is fixed at 64 because vLLM's CPU attention rejects smaller heads (TinyModelConfig
    validates hidden_size / num_heads == 64). Embeddings are tied to the LM head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=tiny_cfg.hidden_size,
        intermediate_size=tiny_cfg.intermediate_size,
        num_hidden_layers=tiny_cfg.num_layers,
        num_attention_heads=tiny_cfg.num_heads,
        num_key_value_heads=tiny_cfg.num_heads,
        head_dim=tiny_cfg.hidden_size // tiny_cfg.num_heads,
        max_position_embeddings=tiny_cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.bos_token_id = BOS_ID
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer().save_pretrained(out)
    return out


def ensure_model(spec: ModelSpec, cache_root: str | Path, key: str, seed: int = 0) -> Path | str:
    """The model a spec names: a tiny one is built once into `cache_root/key` and reused; a hub
    name or directory is returned unchanged (engines load those themselves).

    The build goes to a temporary sibling directory renamed into place, so a crash never leaves a
    half-written model that a later run would mistake for a finished one."""
    if not spec.is_tiny:
        return spec.name_or_path
    target = Path(cache_root) / key
    if (target / _COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        build_tiny_model(spec.tiny, tmp, seed=seed)
        (tmp / _COMPLETE_MARKER).write_text(
            json.dumps({"tiny": spec.tiny.model_dump(), "seed": seed}, indent=2)
        )
        if target.exists():  # an interrupted earlier build
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def mark_complete(model_dir: str | Path, info: dict) -> None:
    """Mark a directory written by someone else (e.g. a trained checkpoint) as a finished model."""
    Path(model_dir, _COMPLETE_MARKER).write_text(json.dumps(info, indent=2))


def is_complete(model_dir: str | Path) -> bool:
    return Path(model_dir, _COMPLETE_MARKER).is_file()
