"""The byte tokenizer round-trips text and the tiny model is a valid HF checkpoint."""

from __future__ import annotations

import json

import pytest

from rprm_ray.config import ModelSpec, TinyModelConfig


@pytest.mark.parametrize(
    "text",
    ["Q:(3+4)*2\n3+4=7\n7*2=14\nA:14\n", " leading space", "tabs\tand\r\nCRLF", "é ü ∑ 数", ""],
)
def test_tokenizer_round_trips_and_has_one_token_per_byte(text: str) -> None:
    from rprm_ray.tiny import build_tokenizer

    tok = build_tokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    # Token-by-token decoding of ASCII (what an incremental detokenizer does) concatenates exactly.
    if text.isascii():
        assert "".join(tok.decode([i]) for i in ids) == text


def test_judge_tokenizer_has_the_verdict_prefix_as_one_token_and_round_trips() -> None:
    from rprm_ray.prompts import VERDICT_PREFIX, verdict_line
    from rprm_ray.tiny import JUDGE_VOCAB_SIZE, VERDICT_TOKEN_ID, build_tokenizer

    assert VERDICT_TOKEN_ID not in build_tokenizer().encode(verdict_line("No"))
    tok = build_tokenizer(verdict_token=True)
    assert len(tok) == JUDGE_VOCAB_SIZE == 260
    text = "C:11= 22=\nV:N\n" + verdict_line("No")
    ids = tok.encode(text)
    assert ids.count(VERDICT_TOKEN_ID) == 1
    assert len(ids) == len(text.encode()) - len(VERDICT_PREFIX) + 1
    assert tok.decode(ids) == text
    assert "".join(tok.decode([i]) for i in ids) == text
    # Only the whole prefix is the token: a part of it stays bytes.
    assert VERDICT_TOKEN_ID not in tok.encode(VERDICT_PREFIX[:-1])


def test_tokenizer_special_tokens_and_no_automatic_bos() -> None:
    from rprm_ray.tiny import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, build_tokenizer

    tok = build_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert len(tok) == VOCAB_SIZE == 259
    assert tok("ab")["input_ids"] == tok.encode("ab", add_special_tokens=False)
    assert tok.encode("A") == [3 + ord("A")]
    assert tok.decode([ord("x") + 3, EOS_ID], skip_special_tokens=True) == "x"


def test_build_tiny_model_loads_in_transformers(tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rprm_ray.tiny import VOCAB_SIZE, build_tiny_model

    out = build_tiny_model(TinyModelConfig(), tmp_path / "m", seed=1)
    assert (out / "model.safetensors").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head_dim"] == 64 and cfg["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    text = "Q:12+7\n"
    assert tok.decode(tok.encode(text)) == text
    ids = torch.tensor([tok.encode(text)])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, len(text), VOCAB_SIZE)
    n_params = sum(p.numel() for p in model.parameters())
    assert 400_000 < n_params < 700_000  # hidden 128, 2 layers, tied embeddings: about 0.56M


def test_ensure_model_builds_once_and_passes_hub_names_through(tmp_path) -> None:
    from rprm_ray.tiny import ensure_model

    spec = ModelSpec()
    first = ensure_model(spec, tmp_path, "policy-abc")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = ensure_model(spec, tmp_path, "policy-abc")
    assert second == first and (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["policy-abc"]  # no temporary leftovers
    assert ensure_model(ModelSpec(name_or_path="Qwen/Qwen2.5-Math-7B"), tmp_path, "x") == (
        "Qwen/Qwen2.5-Math-7B"
    )


def test_with_verdict_token_appends_one_row_and_keeps_the_policy_outputs(tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rprm_ray.prompts import VERDICT_PREFIX
    from rprm_ray.tiny import (
        JUDGE_VOCAB_SIZE,
        VERDICT_TOKEN_ID,
        VOCAB_SIZE,
        build_tiny_model,
        with_verdict_token,
    )

    policy_dir = build_tiny_model(TinyModelConfig(), tmp_path / "policy-sft-x", seed=1)
    judge_dir = with_verdict_token(policy_dir, tmp_path / "cache")
    assert judge_dir.name.startswith("policy-sft-x-") and judge_dir.name.endswith("-verdict-token")
    stamp = (judge_dir / "model.safetensors").stat().st_mtime_ns
    assert with_verdict_token(policy_dir, tmp_path / "cache") == judge_dir
    assert (judge_dir / "model.safetensors").stat().st_mtime_ns == stamp  # built once
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    judge = AutoModelForCausalLM.from_pretrained(judge_dir)
    rows = judge.get_input_embeddings().weight
    assert rows.shape[0] == JUDGE_VOCAB_SIZE
    torch.testing.assert_close(rows[:VOCAB_SIZE], policy.get_input_embeddings().weight)
    torch.testing.assert_close(rows[VERDICT_TOKEN_ID], rows[:VOCAB_SIZE].mean(dim=0))
    ids = torch.tensor([AutoTokenizer.from_pretrained(policy_dir).encode("Q:12+7\n")])
    torch.testing.assert_close(judge(input_ids=ids).logits[..., :VOCAB_SIZE], policy(input_ids=ids).logits)
    assert AutoTokenizer.from_pretrained(judge_dir).encode(VERDICT_PREFIX) == [VERDICT_TOKEN_ID]
    with pytest.raises(ValueError, match="not a tiny byte-vocabulary model"):
        with_verdict_token(judge_dir, tmp_path / "cache")


def test_tiny_config_rejects_head_dim_other_than_64() -> None:
    with pytest.raises(ValueError, match="64"):
        TinyModelConfig(hidden_size=128, num_heads=4)
