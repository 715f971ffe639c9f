"""Engine helpers without any engine: seeds, stop strings, settings, checksums, weight records."""

from __future__ import annotations

import json

import pytest

from rprm_ray.config import GeneratorConfig, JudgeConfig
from rprm_ray.engines.base import (
    EngineSettings,
    check_model_dir,
    combine_digests,
    make_engine,
    prompt_seed,
    tensor_digest,
    truncate_at_stop,
)


def test_prompt_seed_depends_on_seed_and_prompt_only() -> None:
    assert prompt_seed(None, "Q:1+2\n") is None
    a = prompt_seed(0, "Q:1+2\n")
    assert a == prompt_seed(0, "Q:1+2\n")
    assert a != prompt_seed(1, "Q:1+2\n")
    assert a != prompt_seed(0, "Q:1+3\n")
    assert 0 <= a < 2**31


@pytest.mark.parametrize(
    ("text", "stop", "include", "expected"),
    [
        ("7*2=14\nA:14\n", ["\n"], False, ("7*2=14", True)),
        ("7*2=14\nA:14\n", ["\n"], True, ("7*2=14\n", True)),
        ("ab||cd##", ["##", "||"], False, ("ab", True)),  # the earliest match wins, not the first listed
        ("abc", ["x"], False, ("abc", False)),
        ("abc", None, False, ("abc", False)),
    ],
)
def test_truncate_at_stop(text, stop, include, expected) -> None:
    assert truncate_at_stop(text, stop, include) == expected


def test_settings_come_from_the_role_config() -> None:
    gen = GeneratorConfig(enable_prefix_caching=False, max_model_len_tokens=300, kv_cache_gib=2)
    s = EngineSettings.from_role(gen, dtype="bfloat16", enforce_eager=True)
    assert (s.enable_prefix_caching, s.max_model_len_tokens, s.kv_cache_gib) == (False, 300, 2)
    assert (s.dtype, s.enforce_eager) == ("bfloat16", True)
    judge = JudgeConfig(tensor_parallel_size=2, gpu_memory_utilization=0.8)
    s = EngineSettings.from_role(judge)
    assert (s.tensor_parallel_size, s.gpu_memory_utilization, s.enable_prefix_caching) == (2, 0.8, True)
    assert not s.enforce_eager and EngineSettings.from_role(JudgeConfig(enforce_eager=True)).enforce_eager
    with pytest.raises(TypeError):
        EngineSettings.from_role(gen, not_a_setting=1)


def test_make_engine_rejects_unknown_backend(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown engine backend 'tgi'"):
        make_engine(tmp_path, "tgi", GeneratorConfig())


def test_check_model_dir_names_the_caller_and_the_path(tmp_path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"policy-generator-0: model directory not found: {missing}"):
        check_model_dir(missing, who="policy-generator-0")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_model_dir(tmp_path)


def test_per_tensor_digests_combine_to_the_trainers_checksum() -> None:
    import torch

    from rprm_ray.training import checksum_state_dict

    g = torch.Generator().manual_seed(0)
    embed = torch.randn(10, 4, generator=g)
    sd = {
        "model.embed_tokens.weight": embed,
        "lm_head.weight": embed,  # tied: listed twice by state_dict(), once in the files
        "model.norm.weight": torch.randn(4, generator=g).to(torch.bfloat16),
    }
    assert combine_digests(tensor_digest(t) for t in sd.values()) == checksum_state_dict(sd)
    without_tied = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    assert combine_digests(tensor_digest(t) for t in without_tied.values()) == checksum_state_dict(sd)
    sd["model.norm.weight"] = sd["model.norm.weight"] + 1
    assert combine_digests(tensor_digest(t) for t in without_tied.values()) != checksum_state_dict(sd)


def test_checkpoint_record_matches_the_model_state_dict(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    from rprm_ray.engines.weights import read_record
    from rprm_ray.training import checksum_model_dir, checksum_state_dict

    record = read_record(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(record) == {n for n in model.state_dict() if n != "lm_head.weight"}
    checksum = combine_digests(d for _, d in record.values())
    assert checksum == checksum_state_dict(model.state_dict()) == checksum_model_dir(tiny_model_dir)
    for name, tensor in model.state_dict().items():
        if name in record:
            assert record[name] == (tuple(tensor.shape), tensor_digest(tensor))


def test_sharded_checkpoint_files_follow_the_index(tmp_path) -> None:
    from rprm_ray.engines.weights import safetensors_files

    (tmp_path / "b.safetensors").write_bytes(b"")
    (tmp_path / "a.safetensors").write_bytes(b"")
    index = {"weight_map": {"x": "b.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert [f.name for f in safetensors_files(tmp_path)] == ["a.safetensors", "b.safetensors"]
    index["weight_map"]["w"] = "c.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="missing shard: c.safetensors"):
        safetensors_files(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        safetensors_files(empty)


def _record(tensors):
    return {name: (tuple(t.shape), tensor_digest(t)) for name, t in tensors.items()}


def test_fused_and_padded_parameters_are_checked_against_their_hf_tensors() -> None:
    import torch

    from rprm_ray.engines.weights import verify_resident

    g = torch.Generator().manual_seed(0)
    hf = {
        "layers.0.attn.q_proj.weight": torch.randn(4, 3, generator=g),
        "layers.0.attn.k_proj.weight": torch.randn(2, 3, generator=g),
        "layers.0.attn.v_proj.weight": torch.randn(2, 3, generator=g),
        "embed.weight": torch.randn(5, 3, generator=g),
    }
    record = _record(hf)
    packed = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}
    qkv = torch.cat([hf[f"layers.0.attn.{p}_proj.weight"] for p in "qkv"])
    padded = torch.cat([hf["embed.weight"], torch.zeros(3, 3)])  # vocab padded to 8 rows
    engine_params = [
        ("layers.0.attn.qkv_proj.weight", qkv),
        ("embed.weight", padded),
        ("layers.0.mlp.down_proj.weight", torch.empty(0)),  # moved into a packed kernel
        ("rotary.cache", torch.ones(2)),  # no HF counterpart
    ]
    result = verify_resident(iter(engine_params), record, packed)
    assert result == {"verified": 4, "not_resident": 2, "mismatched": []}

    stale = qkv.clone()
    stale[5, 0] += 1e-3  # a row of k_proj
    result = verify_resident(iter([("layers.0.attn.qkv_proj.weight", stale)]), record, packed)
    assert result["mismatched"] == ["layers.0.attn.k_proj.weight"]
    assert result["verified"] == 2
