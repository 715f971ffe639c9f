"""Session-scoped fixtures shared by every test module.

Expensive things (a tiny model, a Ray cluster, a vLLM engine) are built once per test session and
shared; no test starts its own engine or cluster."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Real benchmark files (ProcessBench, MATH, ...) beside the repo; skip when absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared data directory not found: {SHARED_DATA_DIR.resolve()}")
    return SHARED_DATA_DIR.resolve()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Llama (hidden 128, 2 heads of 64, 2 layers) + byte tokenizer,
    loadable by transformers and vLLM. Untrained: its generations are noise. A judge's vocabulary
    (the bytes and the verdict-prefix token), so the engines' tests cover that token too."""
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.tiny import build_tiny_model

    return build_tiny_model(TinyModelConfig(), tmp_path_factory.mktemp("tiny_model"), seed=0, verdict_token=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster per session. Logical CPUs: 4, as `rprm-ray run` reserves for a run's
    generator, judge and trainer at once (engines idle while the trainer works), on 2 cores."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
            _metrics_export_port=RAY_METRICS_PORT,
        )
    yield
    ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Where the session cluster's node exports Prometheus metrics (`ray_metrics_url`).
RAY_METRICS_PORT = _free_port()


@pytest.fixture(scope="session")
def ray_metrics_url(ray_cluster) -> str:
    """The session cluster's Prometheus endpoint, as a scraper would read it."""
    import ray

    return f"http://{ray.util.get_node_ip_address()}:{RAY_METRICS_PORT}/metrics"


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path):
    """One `vllm.LLM` on the tiny model per session.

    vLLM starts its engine core in a child process; under pytest the parent is pytest's own
    `__main__`, which is safe to re-import, so the default multiprocessing works. The uni executor
    keeps the model in that one child (no extra worker process)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    llm = LLM(
        model=str(tiny_model_dir),
        dtype="float32",
        max_model_len=512,
        seed=0,
        enforce_eager=True,
        distributed_executor_backend="uni",
    )
    yield llm
    del llm
    gc.collect()  # drops the engine-core client, which stops the child process


@pytest.fixture(scope="session")
def micro_runs(ray_cluster, tmp_path_factory: pytest.TempPathFactory):
    """End-to-end runs of the micro world (tests/micro_world.py), one per mode, each made on the
    session's cluster the first time a test asks for it and shared by every test after."""
    from micro_world import MicroRuns

    return MicroRuns(tmp_path_factory.mktemp("micro_runs"))

@pytest.fixture(scope="session")
def hub_tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A hub cache holding `tiny-org/paper-smoke`, laid by `rprm-ray tiny` (the paper-smoke size:
    4,096 positions, byte tokenizer with a ChatML-style chat template): (cache dir, hub id)."""
    from rprm_ray.cli import main

    cache = tmp_path_factory.mktemp("hub_cache")
    assert main(["tiny", "tiny-org/paper-smoke", "--cache", str(cache)]) == 0
    return cache, "tiny-org/paper-smoke"
