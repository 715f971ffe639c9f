"""The transformers backend on the tiny model: the Engine contract, checked against a direct
forward pass (no vLLM, no Ray)."""

from __future__ import annotations

import math

import pytest

from rprm_ray.config import GeneratorConfig, SamplingConfig

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=10, seed=0)
SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=3)


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    from rprm_ray.engines import make_engine

    engine = make_engine(tiny_model_dir, "transformers", GeneratorConfig())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def perturbed_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model with every weight moved by noise, saved by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    out = tmp_path_factory.mktemp("perturbed_hf")
    model.save_pretrained(out)
    return out


def test_n_completions_per_prompt_with_consistent_tokens(hf_engine) -> None:
    prompts = ["Q:(3+4)*2\n", "Q:12-5\n", "Q:9*9\n"]
    out = hf_engine.generate(prompts, 2, SAMPLED)
    assert [len(cs) for cs in out] == [2, 2, 2]
    for cs in out:
        for c in cs:
            assert 1 <= len(c.token_ids) <= SAMPLED.max_new_tokens
            assert c.tokens == [hf_engine.tokenizer.decode([t]) for t in c.token_ids]
            assert c.finish_reason in ("eos", "length")
            assert c.top_logprobs is None and c.cumulative_logprob is None


def test_same_seed_same_samples(hf_engine) -> None:
    a = hf_engine.generate(["Q:1+2\n"], 3, SAMPLED)
    b = hf_engine.generate(["Q:1+2\n"], 3, SAMPLED)
    c = hf_engine.generate(["Q:1+2\n"], 3, SAMPLED.model_copy(update={"seed": 4}))
    ids = lambda out: [x.token_ids for x in out[0]]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_stop_string_cuts_text_and_tokens(hf_engine) -> None:
    free = hf_engine.generate(["Q:1+2\n"], 1, GREEDY)[0][0]
    ascii_chars = [ch for ch in free.text if ch.isascii()]
    assert ascii_chars, f"greedy output has no ASCII character to stop at: {free.text!r}"
    stop = ascii_chars[0]
    cut = free.text.index(stop)

    stopped = hf_engine.generate(["Q:1+2\n"], 1, GREEDY, stop=[stop])[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    # Tokens end with the one that completed the stop string, as vLLM reports them.
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop in hf_engine.tokenizer.decode(stopped.token_ids)
    assert stop not in hf_engine.tokenizer.decode(stopped.token_ids[:-1])

    kept = hf_engine.generate(["Q:1+2\n"], 1, GREEDY, stop=[stop], include_stop=True)[0][0]
    assert kept.text == free.text[: cut + len(stop)]


def test_logprobs_match_a_direct_forward_pass(hf_engine) -> None:
    import torch

    prompt = "Q:(3+4)*2\n"
    c = hf_engine.generate([prompt], 1, SAMPLED, logprobs=3)[0][0]
    tok, model = hf_engine.tokenizer, hf_engine.model
    ids = tok.encode(prompt) + c.token_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    start = len(ids) - len(c.token_ids)
    direct = [float(logp[start - 1 + i, t]) for i, t in enumerate(c.token_ids)]
    assert c.cumulative_logprob == pytest.approx(sum(direct), abs=1e-4)
    assert len(c.top_logprobs) == len(c.token_ids)
    for i, (entry, token) in enumerate(zip(c.top_logprobs, c.tokens, strict=True)):
        assert 1 <= len(entry) <= 4  # top-3 plus the sampled token
        if token.isascii():
            assert entry[token] == pytest.approx(direct[i], abs=1e-4)
        else:  # partial UTF-8 bytes all decode to U+FFFD: the key holds the likeliest of them
            assert entry[token] >= direct[i] - 1e-4
        best = float(logp[start - 1 + i].max())
        assert max(entry.values()) == pytest.approx(best, abs=1e-4)
        assert all(v <= 0 for v in entry.values()) and math.isfinite(sum(entry.values()))


def test_load_weights_in_place_changes_outputs_and_checksum(hf_engine, tiny_model_dir, perturbed_dir) -> None:
    from transformers import AutoModelForCausalLM

    from rprm_ray.training import checksum_state_dict

    original = hf_engine.weights_checksum()
    assert original == checksum_state_dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict())
    before = hf_engine.generate(["Q:5+5\n"], 1, GREEDY, logprobs=0)[0][0]
    try:
        hf_engine.load_weights(perturbed_dir)
        expected = checksum_state_dict(AutoModelForCausalLM.from_pretrained(perturbed_dir).state_dict())
        assert hf_engine.weights_checksum() == expected != original
        after = hf_engine.generate(["Q:5+5\n"], 1, GREEDY, logprobs=0)[0][0]
        assert after.cumulative_logprob != pytest.approx(before.cumulative_logprob, abs=1e-3)
    finally:
        hf_engine.load_weights(tiny_model_dir)
    assert hf_engine.weights_checksum() == original
    again = hf_engine.generate(["Q:5+5\n"], 1, GREEDY, logprobs=0)[0][0]
    assert again.token_ids == before.token_ids


def test_load_weights_from_a_missing_directory_names_it(hf_engine, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        hf_engine.load_weights(tmp_path / "gone")
