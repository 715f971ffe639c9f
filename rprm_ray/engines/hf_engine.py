"""The transformers backend behind the Engine interface: for machines without vLLM and as the
baseline in benchmarks.

Prompts are generated in left-padded batches. Stop strings end a sequence early through
transformers' `stop_strings` criteria and are then cut from the text after decoding, exactly as
vLLM reports them (token_ids end with the token that completed the stop string). Log-probs are
the raw model distribution (log-softmax of the logits before temperature / top-p), as vLLM's.
Seeding is per call (`torch.manual_seed(sampling.seed)`), not per prompt as in vLLM, so the same
prompt in a different batch gives different samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rprm_ray.engines.base import (
    Completion,
    EngineSettings,
    FinishReason,
    LengthGuard,
    check_model_dir,
    checkpoint_dtype,
    checksum_state_dict,
    truncate_at_stop,
)

if TYPE_CHECKING:
    import torch

    from rprm_ray.config import SamplingConfig

_BATCH_PROMPTS = 16  # prompts per forward batch (x n samples each)


class HFEngine:
    backend = "transformers"

    def __init__(self, model_dir: str | Path, settings: EngineSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = check_model_dir(model_dir, "transformers engine")
        self.settings = settings
        self.model_dir = str(path)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, settings.dtype or checkpoint_dtype(path))
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_dir, trust_remote_code=settings.trust_remote_code
        )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=self.dtype, trust_remote_code=settings.trust_remote_code, use_safetensors=True
        ).to(self.device)
        self.model.eval()
        self._eos_ids = self._eos_token_ids()
        self.guard = LengthGuard(self.tokenizer, settings.max_model_len_tokens, settings.too_long)
        self._decoded: dict[int, str] = {}

    def _eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else {eos}

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
        return self.guard.generate(prompts, n, sampling.max_new_tokens,
                                   lambda kept: self._generate(kept, n, sampling, stop, logprobs, include_stop))

    def _generate(self, prompts: list[str], n: int, sampling: SamplingConfig, stop: list[str] | None,
                  logprobs: int | None, include_stop: bool) -> list[list[Completion]]:
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        results: list[list[Completion]] = []
        for start in range(0, len(prompts), _BATCH_PROMPTS):
            batch = prompts[start : start + _BATCH_PROMPTS]
            results.extend(self._generate_batch(batch, n, sampling, stop, logprobs, include_stop))
        return results

    @staticmethod
    def _greedy(sampling: SamplingConfig) -> bool:
        return sampling.temperature == 0.0

    def _generate_batch(
        self,
        prompts: list[str],
        n: int,
        sampling: SamplingConfig,
        stop: list[str] | None,
        logprobs: int | None,
        include_stop: bool,
    ) -> list[list[Completion]]:
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "num_return_sequences": n,
            "return_dict_in_generate": True,
            "output_logits": True,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._eos_ids),
        }
        if self._greedy(sampling):
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if stop:
            kwargs["stopping_criteria"] = _stop_string_criteria(
                self.tokenizer, list(stop), enc["input_ids"].shape[1]
            )
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        generated = out.sequences[:, enc["input_ids"].shape[1] :].tolist()
        # Raw log-probs of each step: [steps, batch*n, vocab] -> per sequence lists below.
        step_logps = [torch.log_softmax(logits.float(), dim=-1) for logits in out.logits]
        completions = [
            self._completion(row, ids, step_logps, stop, logprobs, include_stop)
            for row, ids in enumerate(generated)
        ]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _decode(self, token_id: int) -> str:
        text = self._decoded.get(token_id)
        if text is None:
            text = self._decoded[token_id] = self.tokenizer.decode([token_id])
        return text

    def _completion(
        self,
        row: int,
        ids: list[int],
        step_logps: list[torch.Tensor],
        stop: list[str] | None,
        logprobs: int | None,
        include_stop: bool,
    ) -> Completion:
        token_ids, finish = self._cut(ids, stop)
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if finish == "stop":
            text, _ = truncate_at_stop(text, stop, include_stop)
        cumulative, top = None, None
        if logprobs is not None:
            cumulative, top = 0.0, []
            for t, token_id in enumerate(token_ids):
                logp = step_logps[t][row]
                cumulative += float(logp[token_id])
                entry: dict[str, float] = {}
                if logprobs > 0:
                    values, indices = logp.topk(logprobs)
                    for value, index in zip(values.tolist(), indices.tolist(), strict=True):
                        key = self._decode(index)
                        entry[key] = max(value, entry.get(key, float("-inf")))
                key = self._decode(token_id)
                entry[key] = max(float(logp[token_id]), entry.get(key, float("-inf")))
                top.append(entry)
        return Completion(
            text=text,
            token_ids=token_ids,
            cumulative_logprob=cumulative,
            finish_reason=finish,
            tokens=[self._decode(t) for t in token_ids],
            top_logprobs=top,
        )

    def _cut(self, ids: list[int], stop: list[str] | None) -> tuple[list[int], FinishReason]:
        """Generated ids up to and including EOS or the token completing a stop string."""
        text = ""
        for i, token_id in enumerate(ids):
            if token_id in self._eos_ids:
                return ids[: i + 1], "eos"
            if stop:
                text = self.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
                if truncate_at_stop(text, stop, False)[1]:
                    return ids[: i + 1], "stop"
        return ids, "length"

    # ---- weights --------------------------------------------------------------------------

    def load_weights(self, model_dir: str | Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        path = check_model_dir(model_dir, "transformers engine.load_weights")
        fresh = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=self.dtype, trust_remote_code=self.settings.trust_remote_code, use_safetensors=True
        )
        with torch.no_grad():
            # strict: a checkpoint of another architecture must fail, not half-load.
            self.model.load_state_dict(fresh.state_dict(), strict=True)
        del fresh
        self.model_dir = str(path)

    def weights_checksum(self) -> str:
        return checksum_state_dict(self.model.state_dict())

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


def _stop_string_criteria(tokenizer: Any, stop: list[str], prompt_len: int) -> Any:
    """Stop each sequence once its decoded continuation contains a stop string.

    transformers' own `stop_strings` matches on vocabulary strings; with the tiny byte-level
    tokenizer it ended sequences that contained none of the stop strings, so decode instead."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class DecodedStop(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [any(s in text for s in stop) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([DecodedStop()])
