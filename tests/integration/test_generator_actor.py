"""PolicyGenerator actors on a real Ray cluster with real vLLM: Arrow in, Arrow out, weight
updates checked against the trainer's checksum, and a two-replica pool that keeps row order."""

from __future__ import annotations

import pyarrow as pa
import pytest
import ray

from rprm_ray import batches
from rprm_ray.config import GeneratorConfig, SamplingConfig

pytestmark = pytest.mark.integration

STYLE = "compact"
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8, seed=0)
SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=8, seed=5)
# Half a CPU each: two replicas fit the 2-CPU test cluster beside other roles' actors. Candidate
# log-probs on: the weight-update test reads them.
CFG = GeneratorConfig(replicas=2, num_cpus_per_replica=0.5, candidates_per_step=3, sampling=SAMPLED,
                      candidate_logprobs=True)


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_model_dir):
    from actors.generator import GeneratorPool

    p = GeneratorPool(tiny_model_dir, CFG, style_name=STYLE, engine_overrides={"enforce_eager": True})
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def perturbed(tiny_model_dir, tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM

    from rprm_ray.training import checksum_state_dict

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    out = tmp_path_factory.mktemp("perturbed_actor")
    model.save_pretrained(out)
    return str(out), checksum_state_dict(model.state_dict())


def prefixes(n: int) -> pa.Table:
    rows = [
        {
            "problem_id": f"p{i // 2}",
            "prefix_id": f"p{i // 2}/{i % 2}",
            "question": f"({i}+{i + 3})*2",
            "prefix_steps": [] if i % 2 == 0 else [f"{i}+{i + 3}={2 * i + 3}"],
        }
        for i in range(n)
    ]
    return batches.from_rows(rows, "prefixes")


def test_actor_names_carry_the_role(pool) -> None:
    assert pool.names == ["policy-generator-0", "policy-generator-1"]
    assert ray.get([a.ready.remote() for a in pool.actors]) == pool.names
    assert ray.get_actor("policy-generator-1") is not None


def test_expand_returns_w_candidates_per_prefix(pool) -> None:
    from rprm_ray.prompts import get_style

    style = get_style(STYLE)
    table = prefixes(3)
    out = ray.get(pool.actors[0].expand.remote(table, 4))
    out = batches.validate(out, "candidates", where="test")
    assert out.num_rows == 12
    assert out.column("prefix_id").to_pylist() == [
        p for p in table.column("prefix_id").to_pylist() for _ in range(4)
    ]
    assert out.column("candidate_id").to_pylist() == [0, 1, 2, 3] * 3
    assert out.column("prefix_steps").to_pylist()[4:8] == [table.column("prefix_steps")[1].as_py()] * 4
    for row in out.to_pylist():
        assert "\n" not in row["step"]  # stopped at the step separator
        assert 1 <= row["num_tokens"] <= SAMPLED.max_new_tokens
        assert row["cumulative_logprob"] < 0
        if style.is_final_step(row["step"]):
            assert row["finished"]
    stats = ray.get(pool.actors[0].stats.remote())
    assert stats["rows_in"] >= 3 and stats["rows_out"] >= 12 and stats["tokens_generated"] >= 12


def test_generate_returns_n_solutions_split_into_steps(pool) -> None:
    from rprm_ray.prompts import get_style

    style = get_style(STYLE)
    problems = batches.from_rows(
        [
            {"problem_id": f"q{i}", "question": f"{i}*7", "answer": str(7 * i), "source": "test"}
            for i in range(2)
        ],
        "problems",
    )
    out = ray.get(pool.actors[1].generate.remote(problems, 2))
    assert out.num_rows == 4
    assert out.column("sample_idx").to_pylist() == [0, 1, 0, 1]
    for row in out.to_pylist():
        assert row["steps"] == style.split_steps(row["text"])
        assert row["answer"] == style.extract_answer(row["steps"])
        assert row["correct"] is None


def test_empty_input_gives_empty_output(pool) -> None:
    out = ray.get(pool.actors[0].expand.remote(batches.empty("prefixes"), 3))
    assert out.num_rows == 0 and out.schema.equals(batches.schema("candidates"))
    assert pool.expand(batches.empty("prefixes")).num_rows == 0


def test_bad_input_names_the_replica_and_the_column(pool) -> None:
    bad = prefixes(2).drop_columns(["prefix_steps"])
    with pytest.raises(
        batches.BatchError, match=r"policy-generator-0\.expand: prefixes: missing column 'prefix_steps'"
    ):
        ray.get(pool.actors[0].expand.remote(bad, 2))


def test_two_replicas_return_rows_in_input_order(pool) -> None:
    table = prefixes(5)
    pooled = pool.expand(table, 2, SAMPLED)
    single = ray.get(pool.actors[0].expand.remote(table, 2, SAMPLED))
    # Samples are seeded per prompt: the split across replicas changes nothing, not even sampling.
    assert pooled.equals(single)
    assert pooled.column("prefix_id").to_pylist() == [
        p for p in table.column("prefix_id").to_pylist() for _ in range(2)
    ]
    per_replica = [ray.get(a.stats.remote())["rows_in"] for a in pool.actors]
    assert all(n > 0 for n in per_replica)  # both replicas did work


def test_weight_update_matches_the_trainer_checksum(pool, perturbed, tiny_model_dir) -> None:
    new_dir, trainer_checksum = perturbed
    original = pool.weights_checksums()
    assert original[0] == original[1] != trainer_checksum
    canary = prefixes(1)
    before = ray.get(pool.actors[0].expand.remote(canary, 1, GREEDY))
    try:
        assert pool.update_weights(new_dir, trainer_checksum) == [trainer_checksum] * 2
        after = ray.get(pool.actors[0].expand.remote(canary, 1, GREEDY))
        assert after.column("cumulative_logprob")[0].as_py() != pytest.approx(
            before.column("cumulative_logprob")[0].as_py(), abs=1e-3
        )
    finally:
        pool.update_weights(str(tiny_model_dir), original[0])
    restored = ray.get(pool.actors[0].expand.remote(canary, 1, GREEDY))
    assert restored.equals(before)


def test_checksum_mismatch_names_the_replica_and_stops_it_sampling(pool, perturbed, tiny_model_dir) -> None:
    new_dir, _ = perturbed
    actor = pool.actors[1]
    original = ray.get(actor.weights_checksum.remote())
    with pytest.raises(RuntimeError, match=r"policy-generator-1\.update_weights: .*checksum .*expected 0000"):
        ray.get(actor.update_weights.remote(new_dir, "0" * 64))
    with pytest.raises(RuntimeError, match="refusing to sample"):
        ray.get(actor.expand.remote(prefixes(1), 1))
    assert ray.get(actor.update_weights.remote(str(tiny_model_dir), original)) == original
    assert ray.get(actor.expand.remote(prefixes(1), 1)).num_rows == 1


def test_update_timeout_names_the_replica_and_a_later_update_recovers(
    pool, perturbed, tiny_model_dir
) -> None:
    new_dir, _ = perturbed
    actor = pool.actors[1]
    original = ray.get(actor.weights_checksum.remote())
    with pytest.raises(TimeoutError, match=r"policy-generator-1\.update_weights: .*did not finish within"):
        ray.get(actor.update_weights.remote(new_dir, None, 1e-6))
    with pytest.raises(RuntimeError, match="refusing to sample"):
        ray.get(actor.expand.remote(prefixes(1), 1))
    # The next update waits for the timed-out load before loading again.
    assert ray.get(actor.update_weights.remote(str(tiny_model_dir), original)) == original
    assert ray.get(actor.expand.remote(prefixes(1), 1)).num_rows == 1


def test_chunks_cover_rows_contiguously() -> None:
    from actors.generator import chunks

    assert chunks(5, 2) == [(0, 3), (3, 2)]
    assert chunks(1, 3) == [(0, 1)]
    assert chunks(0, 2) == [(0, 0)]
    assert sum(n for _, n in chunks(17, 4)) == 17


def test_missing_model_dir_names_the_role_and_the_path(pool, ray_cluster, tmp_path) -> None:
    from actors.generator import GeneratorPool

    gone = tmp_path / "no-such-model"
    with pytest.raises(
        FileNotFoundError, match=rf"policy-generator-0\.update_weights: model directory not found: {gone}"
    ):
        ray.get(pool.actors[0].update_weights.remote(str(gone)))
    one = CFG.model_copy(update={"replicas": 1, "num_cpus_per_replica": 0.0})
    with pytest.raises(
        ray.exceptions.RayActorError, match=rf"policy-generator-bad-0: model directory not found: {gone}"
    ):
        GeneratorPool(gone, one, style_name=STYLE, role="policy-generator-bad")
