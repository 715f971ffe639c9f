"""One generation interface (`Engine`) with a vLLM backend (default) and a transformers backend.

Importing this package is cheap: the backends import vLLM / transformers only when built."""

from rprm_ray.engines.base import Completion, Engine, EngineSettings, make_engine

__all__ = ["Completion", "Engine", "EngineSettings", "make_engine"]
