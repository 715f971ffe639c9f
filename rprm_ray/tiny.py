"""Locally built tokenizer and tiny Llama models (no download).

The tokenizer is byte-level BPE with no merges: every byte is one token, so any text round-trips
exactly and the tiny models learn a character-level task. Special tokens: `<pad>` (0), `<s>` (1),
`</s>` (2); bytes follow from id 3.

Judges get one more token (id 259, not special: it decodes as its text): the R-PRM verdict prefix
`Verification: Is the step correct (Yes/No)?`. Byte by byte it was 43 of a compact critique's ~100
tokens, a fixed string the judge spent that share of its SFT compute and decoding steps on (a real
model's BPE writes it in about a dozen tokens). Policies keep the plain byte vocabulary: they never
write the verdict line, and a 260-row embedding changes a policy's initial weights and with them
its SFT trajectory (measured: M1 56.0% instead of 73.75%). A judge started from a trained policy
gets the token appended (`with_verdict_token`).

BOS policy: `<s>` is NEVER added automatically (the tokenizer has no post-processor). Training,
transformers generation and vLLM all call the same tokenizer, so a prompt is always the same ids
everywhere; `</s>` is appended explicitly by the trainer after each completion and is the model's
stop token (`eos_token_id`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rprm_ray.prompts import VERDICT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedTokenizerFast

    from rprm_ray.config import ModelSpec, TinyModelConfig

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
VOCAB_SIZE = len(SPECIAL_TOKENS) + 256
VERDICT_TOKEN_ID = VOCAB_SIZE
JUDGE_VOCAB_SIZE = VOCAB_SIZE + 1
_COMPLETE_MARKER = "tiny_model.json"  # written last: a directory without it is an interrupted build


def build_tokenizer(verdict_token: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: one token per byte and the three special tokens; with
    `verdict_token`, the verdict prefix as one token too (a judge's)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(ByteLevel.alphabet(), key=_byte_of):
        vocab[ch] = len(vocab)
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: with no merges the GPT-2 split regex changes nothing, it only costs time.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if verdict_token:
        # normalized=False: matched on the raw text, so the prefix always encodes to this one id.
        tok.add_tokens([AddedToken(VERDICT_PREFIX, normalized=False, special=False)])
        assert tok.get_vocab_size() == JUDGE_VOCAB_SIZE, tok.get_vocab_size()
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


def build_tiny_model(tiny_cfg: TinyModelConfig, out_dir: str | Path, seed: int = 0,
                     verdict_token: bool = False) -> Path:
    """Write a randomly initialised tiny Llama (safetensors) plus the tokenizer into `out_dir`
    (with `verdict_token`: a judge's, one row more).

    head_dim is fixed at 64 because vLLM's CPU attention rejects smaller heads (TinyModelConfig
    validates hidden_size / num_heads == 64). Embeddings are tied to the LM head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=JUDGE_VOCAB_SIZE if verdict_token else VOCAB_SIZE,
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
    build_tokenizer(verdict_token).save_pretrained(out)
    return out


def ensure_model(spec: ModelSpec, cache_root: str | Path, key: str, seed: int = 0,
                 verdict_token: bool = False) -> Path | str:
    """The model a spec names: a tiny one is built once into `cache_root/key` and reused; a hub
    name or directory is returned unchanged (engines load those themselves)."""
    if not spec.is_tiny:
        return spec.name_or_path
    info = {"tiny": spec.tiny.model_dump(), "seed": seed, "verdict_token": verdict_token}
    return _build_once(Path(cache_root) / key, info,
                       lambda tmp: build_tiny_model(spec.tiny, tmp, seed=seed, verdict_token=verdict_token))


def with_verdict_token(model_dir: str | Path, cache_root: str | Path) -> Path:
    """A judge's starting point from a trained tiny policy: its weights with the verdict-prefix
    token appended (its embedding row the mean of the others), built once into the cache under
    the policy directory's name and a hash of its full path (run directories name theirs "model")."""
    src = Path(model_dir)
    where = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:8]
    return _build_once(Path(cache_root) / f"{src.name}-{where}-verdict-token", {"from": str(src)},
                       lambda tmp: _append_verdict_token(src, tmp))


def _append_verdict_token(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    rows = model.get_input_embeddings().num_embeddings
    if rows != VOCAB_SIZE:
        raise ValueError(f"{src}: not a tiny byte-vocabulary model ({rows} embedding rows, expected {VOCAB_SIZE})")
    model.resize_token_embeddings(JUDGE_VOCAB_SIZE, mean_resizing=False)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight[VERDICT_TOKEN_ID] = weight[:VOCAB_SIZE].mean(dim=0)
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer(verdict_token=True).save_pretrained(out)


def _build_once(target: Path, info: dict, build: Callable[[Path], object]) -> Path:
    """`build(tmp)` into a temporary sibling of `target` renamed into place, unless `target` is
    complete already: a crash never leaves a half-written model that a later run would mistake
    for a finished one."""
    if (target / _COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2))
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
