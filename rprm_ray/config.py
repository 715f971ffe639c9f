"""The recipe: one typed schema for a whole run, validated in one place.

A recipe is YAML; `load_recipe(path, overrides)` applies `dotted.key=value` overrides and validates
everything before Ray or any engine starts. Every failure is a `RecipeError` whose single message
names the file, the dotted field and what is allowed.

Batch-size fields carry their unit in the name: `*_per_prompt`, `*_per_device`, `global_*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class RecipeError(ValueError):
    """A recipe that cannot run; the message names file, field and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Models


class TinyModelConfig(_Strict):
    """A locally built Llama-architecture model (no download). vLLM's CPU attention needs head_dim 64."""

    hidden_size: int = Field(128, ge=64)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_position_embeddings: int = Field(512, ge=64)

    @model_validator(mode="after")
    def _head_dim(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.hidden_size // self.num_heads != 64:
            raise ValueError(
                f"hidden_size / num_heads must be 64 (vLLM's CPU attention rejects other head sizes); "
                f"got {self.hidden_size}/{self.num_heads} = {self.hidden_size // self.num_heads}"
            )
        return self


class ModelSpec(_Strict):
    """Where weights come from: "tiny" builds one locally; anything else is a hub name or a directory."""

    name_or_path: str = "tiny"
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    # A hub id's revision (branch, tag or commit); null: the default branch.
    revision: str | None = None
    # A hub id missing from the cache gets a tiny model laid under it (`rprm-ray tiny`, this
    # spec's `tiny` size) instead of failing: for smoke recipes that must run anywhere offline.
    lay_tiny_if_missing: bool = False
    # How prompts reach the model: auto = through the tokenizer's chat template when it has one
    # (the paper prompt as the user turn), none = raw prompts, or a Jinja template file's path.
    chat_template: str = "auto"

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == "tiny"


class TeacherConfig(_Strict):
    """The 'stronger LLM' that writes seed critiques: the embedded programmatic teacher, a vLLM
    model, or an OpenAI-compatible endpoint (the key is read from `api_key_env`, never stored)."""

    kind: Literal["programmatic", "vllm", "openai"] = "programmatic"
    model: str | None = None
    url: str | None = None
    api_key_env: str | None = None
    revision: str | None = None  # of a hub-id `model` (kind vllm)
    critiques_per_step: int = Field(4, ge=1, le=64)
    temperature: float = Field(0.4, ge=0.0, le=2.0)
    # Each openai-kind request carries the API's `seed`, derived from this and its prompt (vLLM
    # honours it; hosted APIs at best effort), so a rerun samples the same critiques; null: unseeded.
    seed: int | None = 0
    # kind 'openai': the endpoint's API (chat: the server applies the model's chat template),
    # requests in flight at once, each request's time-out, retries on 429/5xx/time-outs with
    # exponential backoff (doubling from retry_backoff_s, at most retry_backoff_max_s; a server's
    # Retry-After is honoured), and how many answered requests go into one persisted shard
    # (kind 'vllm': labeled steps per persisted chunk).
    api: Literal["chat", "completions"] = "chat"
    max_concurrent_requests: int = Field(8, ge=1, le=1024)
    request_timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(6, ge=0, le=100)
    retry_backoff_s: float = Field(1.0, ge=0)
    retry_backoff_max_s: float = Field(60.0, ge=0)
    requests_per_shard: int = Field(64, ge=1)
    # Extra JSON fields of every request (the endpoint's own options, e.g. vLLM's
    # {"structured_outputs": {"regex": ...}} to hold a small teacher to the verdict format).
    extra_body: dict[str, Any] | None = None
    # The same for the pairwise judgments of PSRLM's EFT data, whose format differs from a
    # critique's (a small teacher held to `[[A]]`/`[[B]]`); null: `extra_body`.
    pairwise_extra_body: dict[str, Any] | None = None
    # Start vLLM's OpenAI-compatible server for `model` at `url`'s host and port for the run, and
    # stop it when the run ends (a self-contained run; `url` must be on this machine). Port 0: a
    # free port chosen when the run starts.
    launch: bool = False

    @model_validator(mode="after")
    def _needs(self) -> TeacherConfig:
        if self.kind == "vllm" and not self.model:
            raise ValueError("teacher.kind 'vllm' needs teacher.model (a hub name or a model directory)")
        if self.kind == "openai" and not (self.url and self.model):
            raise ValueError("teacher.kind 'openai' needs teacher.url and teacher.model")
        if self.launch and (self.kind != "openai" or ":" not in (self.url or "").split("//")[-1]):
            raise ValueError("teacher.launch starts a local server: it needs kind 'openai' and a url with a port "
                             "(e.g. http://127.0.0.1:8321/v1; port 0: a free one)")
        return self


class ModelsConfig(_Strict):
    # compact: the tiny char-level format; paper: R-PRM / PSRLM prompts for real chat models.
    prompt_style: Literal["compact", "paper"] = "compact"
    policy: ModelSpec = ModelSpec()
    # None: the policy judges itself (PSRLM self-rewarding); otherwise a separate R-PRM judge.
    judge: ModelSpec | None = ModelSpec()
    teacher: TeacherConfig = TeacherConfig()
    # Where hub ids are downloaded to and read from (a directory every node of the run reaches,
    # e.g. a shared volume on a cluster); null: the standard Hugging Face cache (HF_HOME/hub).
    hub_cache: Path | None = None
    # A prompt longer than a model's max_model_len_tokens minus the tokens it may write: skip it
    # (counted as skipped_too_long in the stage's metrics), or keep its last tokens (truncate_left,
    # vLLM's truncate_prompt_tokens rule: the start of the prompt is dropped).
    too_long: Literal["skip", "truncate_left"] = "skip"
    # Compact judge prompts (pointwise and pairwise) open with `J:` instead of the policy's `Q:`
    # (prompts.CompactStyle), so a model that is both policy and judge can tell the jobs apart.
    # null: on in loop.mode psrlm, where one model does both; off in the other modes, whose judge
    # is a model of its own (their measured figures were made with `Q:`). The paper style's judge
    # prompts differ from its policy prompt anyway.
    distinct_judge_prompts: bool | None = None


# --------------------------------------------------------------------------------------------
# The embedded task


class DatasetSources(_Strict):
    """Real data for `task.kind: dataset`: local JSON/JSONL files or hub names (with a network).

    Problems: rows with a question and a reference answer (GSM8K / MATH / NuminaMath style).
    Labeled steps: ProcessBench-format solutions (problem, steps, label = first wrong step or -1),
    e.g. PRM800K converted to that form, for R-PRM judge training and F1.
    """

    train_problems: str
    eval_problems: str
    train_labeled_solutions: str | None = None
    eval_labeled_solutions: str | None = None
    split: str = "train"  # hub split for train_problems (eval uses "test")


class TaskConfig(_Strict):
    """Where problems come from. `arith`: the embedded world, seeded multi-step integer problems
    (eval problems never appear in training: the generator de-duplicates splits by expression).
    `dataset`: real benchmark files or hub datasets named in `dataset`."""

    kind: Literal["arith", "dataset"] = "arith"
    dataset: DatasetSources | None = None
    seed: int = 0
    train_problems: int = Field(20000, ge=1)
    eval_problems: int = Field(400, ge=1)
    min_steps: int = Field(2, ge=1, le=8)
    max_steps: int = Field(3, ge=1, le=8)
    max_operand: int = Field(99, ge=2, le=9999)
    operators: list[Literal["+", "-", "*"]] = ["+", "-", "*"]
    max_multiplier: int = Field(9, ge=2, le=99)
    error_rate: float = Field(0.5, ge=0.0, le=1.0)  # fraction of labeled solutions with an injected error
    # task.kind dataset: use the first N solutions of each labeled (ProcessBench-format) file; null: all.
    max_labeled_solutions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _steps(self) -> TaskConfig:
        if self.kind == "dataset" and self.dataset is None:
            raise ValueError("task.kind 'dataset' needs task.dataset (train_problems, eval_problems, ...)")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must be <= max_steps ({self.max_steps})")
        if not self.operators:
            raise ValueError("operators must list at least one of '+', '-', '*'")
        return self


# --------------------------------------------------------------------------------------------
# Roles


class SamplingConfig(_Strict):
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=1)
    seed: int | None = 0


class GeneratorConfig(_Strict):
    backend: Literal["vllm", "transformers"] = "vllm"
    replicas: int = Field(1, ge=1)
    num_gpus_per_replica: float = Field(0.0, ge=0.0)  # all GPUs of one engine (>= tensor_parallel_size)
    num_cpus_per_replica: float = Field(1.0, ge=0.0)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    kv_cache_gib: int = Field(1, ge=1)  # VLLM_CPU_KVCACHE_SPACE on CPU nodes
    enable_prefix_caching: bool = True
    max_model_len_tokens: int = Field(512, ge=16)
    # Skip torch.compile (and CUDA graphs): a tiny model's vLLM engine starts in 14 s instead of 28 s
    # on CPU and decodes as fast (Python-bound); keep false on GPUs, where CUDA graphs pay.
    enforce_eager: bool = False
    candidates_per_step: int = Field(6, ge=2, le=64)  # PSRLM's w
    sampling: SamplingConfig = SamplingConfig(temperature=0.5, top_p=0.95, max_new_tokens=32)
    # Fill the candidates' cumulative_logprob. Off by default: vLLM then computes a log-prob per
    # generated token, which made tiny-model decoding 1.2-1.6x slower here; nothing in the loop reads it.
    candidate_logprobs: bool = False
    update_weights_timeout_s: float = Field(300.0, gt=0.0)
    # Bounded waits (rprm_ray.waits): an actor that has not started (engine loaded) within
    # start_timeout_s, or a call not answered within call_timeout_s, stops the stage with one line
    # naming the replica; a call whose actor died is sent to a fresh replacement call_retries times.
    start_timeout_s: float = Field(900.0, gt=0.0)
    call_timeout_s: float = Field(900.0, gt=0.0)
    call_retries: int = Field(2, ge=0)
    # Problems per persisted chunk of an evaluation pass (held-out pass@1, Best-of-N samples): a
    # stage killed midway resumes from its finished chunks (rprm_ray.shards).
    problems_per_chunk: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _tp(self) -> GeneratorConfig:
        _check_tensor_parallel(self.num_gpus_per_replica, self.tensor_parallel_size)
        return self


def _check_tensor_parallel(gpus: float, tp: int) -> None:
    if gpus and tp > gpus:
        raise ValueError(f"tensor_parallel_size ({tp}) needs at least that many GPUs per replica "
                         f"(num_gpus_per_replica is {gpus:g})")


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0.0)
    upscale_delay_s: float = Field(2.0, ge=0.0)
    downscale_delay_s: float = Field(10.0, ge=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class JudgeConfig(_Strict):
    backend: Literal["vllm", "transformers"] = "vllm"
    critiques_per_step: int = Field(1, ge=1, le=64)  # R-PRM's K
    # p_yes: softmax over Yes/No at the verdict position, read from the engine's logprobs;
    # yes_fraction: share of valid critiques whose verdict is Yes.
    score: Literal["p_yes", "yes_fraction"] = "p_yes"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=96)
    num_gpus_per_replica: float = Field(0.0, ge=0.0)  # all GPUs of one engine (>= tensor_parallel_size)
    num_cpus_per_replica: float = Field(1.0, ge=0.0)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0)
    kv_cache_gib: int = Field(1, ge=1)
    max_model_len_tokens: int = Field(512, ge=16)
    # Skip torch.compile (and CUDA graphs): a tiny model's vLLM engine starts in 14 s instead of 28 s
    # on CPU and decodes as fast (Python-bound); keep false on GPUs, where CUDA graphs pay.
    enforce_eager: bool = False
    max_batch_rows_per_request: int = Field(256, ge=1)
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    # Bounded waits (rprm_ray.waits). A replica gives up on an engine call after request_timeout_s
    # (one request of max_batch_rows_per_request rows) and reports itself unhealthy while the call
    # is stuck, so Serve replaces it; the client names the replica. start_timeout_s bounds a
    # deployment or weight update; a request whose replica died is sent again request_retries times.
    request_timeout_s: float = Field(600.0, gt=0.0)
    start_timeout_s: float = Field(900.0, gt=0.0)
    request_retries: int = Field(2, ge=0)
    health_check_period_s: float = Field(10.0, gt=0.0)
    health_check_timeout_s: float = Field(30.0, gt=0.0)
    # Labeled steps per persisted chunk of a judge pass (critique sampling for DPO, F1 evaluation):
    # a stage killed midway resumes from its finished chunks (rprm_ray.shards).
    steps_per_chunk: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _tp(self) -> JudgeConfig:
        _check_tensor_parallel(self.num_gpus_per_replica, self.tensor_parallel_size)
        return self


class PairsConfig(_Strict):
    max_pairs_per_step: int = Field(4, ge=1)  # cap on the chosen x rejected product per labeled step
    balance_verdicts: bool = True  # truncate Yes-chosen and No-chosen pairs to 1:1
    paper_filter: bool = False  # R-PRM's optional --filter (keep 2 pairs when chosen <= 1/3 of valid)
    # Chosen critiques only among those that reach their verdict by their own stated comparison
    # (Task.critique_is_sound: the compact judge's lines; a no-op for natural-language critiques).
    # Off: on the demo it made the judge's DPO stronger and its F1 lower (docs/results.md)
    sound_chosen_only: bool = False
    seed: int = 42
    call_timeout_s: float = Field(600.0, gt=0.0)  # one PairBuilder call (rprm_ray.waits)


class DeepSpeedConfig(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    offload_optimizer: bool = False
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, gloo on CPU
    # Recompute activations in the backward pass (long critiques of a 7B judge fit at ~30% more compute).
    gradient_checkpointing: bool = False


# TrainerConfig fields an SFT never reads (its cache key leaves them out).
SFT_IRRELEVANT_TRAINER_FIELDS = frozenset({
    "dpo_lr", "dpo_beta", "dpo_nll_coef", "dpop_lambda", "dpo_epochs",
    "setup_timeout_s", "call_timeout_s", "checkpoint_interval_steps"})


class TrainerConfig(_Strict):
    num_workers: int = Field(1, ge=1)  # DeepSpeed ranks (Ray actors in one rendezvous)
    num_gpus_per_worker: float = Field(0.0, ge=0.0)
    num_cpus_per_worker: float = Field(1.0, ge=0.0)
    micro_batch_size_per_device: int = Field(64, ge=1)  # sequences (DPO: pairs)
    global_batch_size: int = Field(64, ge=1)  # sequences per optimizer step across all workers
    lr: float = Field(3e-3, gt=0.0)
    dpo_lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    max_seq_len_tokens: int = Field(256, ge=8)
    # SFT packs a micro batch's rows into sequences of up to max_seq_len_tokens (block-diagonal
    # attention: the padded batch's loss and gradients without computing pads; see training.py
    # for when it is faster). A changed summation order also changes a long run's trajectory.
    pack_sequences: bool = False
    dpo_beta: float = Field(0.1, gt=0.0)
    dpo_nll_coef: float = Field(0.0, ge=0.0)
    dpop_lambda: float = Field(0.0, ge=0.0)  # DPO-Positive penalty; 0 = plain sigmoid DPO
    dpo_epochs: int = Field(1, ge=1)
    grad_clip: float = Field(1.0, gt=0.0)
    seed: int = 0
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    # Bounded waits (rprm_ray.waits): rank start-up and rendezvous, and one training call (a whole
    # SFT / DPO stage, hence the day); on expiry one line names the ranks that did not answer.
    setup_timeout_s: float = Field(900.0, gt=0.0)
    call_timeout_s: float = Field(86400.0, gt=0.0)
    # Every this many optimizer steps a training stage saves a resumable DeepSpeed checkpoint
    # (weights, optimizer, step, data order: rprm_ray.trainer_checkpoints) under
    # <run>/<stage>/trainer_ckpt/; a stage rerun after a kill continues from it, and it is removed
    # when the stage finishes. null: none (a killed stage retrains from step 0). 200: the tiny
    # model's checkpoint takes well under a second, and a kill costs at most 200 steps.
    checkpoint_interval_steps: int | None = Field(
        200, ge=1, description="optimizer steps between a training stage's resumable checkpoints; null: none")

    @model_validator(mode="after")
    def _batches(self) -> TrainerConfig:
        per_step = self.micro_batch_size_per_device * self.num_workers
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"micro_batch_size_per_device x num_workers ({per_step})"
            )
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size_per_device * self.num_workers)

    def sft_fingerprint(self) -> dict:
        """The fields that determine an SFT's weights, for model cache keys: the DPO settings and
        the bounded waits and checkpoint spacing (what a kill costs) leave a cached SFT valid."""
        return self.model_dump(mode="json", exclude=SFT_IRRELEVANT_TRAINER_FIELDS)


class BootstrapConfig(_Strict):
    """Initial supervised training: the policy on reference solutions (PSRLM's IFT) and the judge
    on teacher critiques (R-PRM seed SFT), optionally mixed (the papers start from a math model)."""

    policy_sft_steps: int = Field(1500, ge=0)
    judge_sft_steps: int = Field(2500, ge=0)
    judge_mix_policy_data: bool = True
    # The judge's SFT packs its micro batches (null: trainer.pack_sequences). Its rows vary in
    # length, so packing saves compute there; the policy's short rows gain nothing from it.
    judge_pack_sequences: bool | None = None
    pairwise_judge_examples: int = Field(4000, ge=0)  # PSRLM EFT-style examples mixed into M1
    # arith: rows of the judge's first line alone (its worked step, `R:`) mixed into the SFT that
    # trains the judge: psrlm's M1 (beside the pairwise judgments, which teach that line once per
    # pair), else the R-PRM judge's (beside the critiques); tasks/arith_tables.worked_step_table.
    worked_step_examples: int = Field(0, ge=0)
    # The judge's DPO (R-PRM A5) samples critiques on solutions of this many training problems kept
    # out of its SFT; null: loop.problems_per_iteration.
    judge_dpo_problems: int | None = Field(None, ge=1)
    # Whose solutions: labeled (the task's labeled solutions) | own (M1's sampled solutions, labelled
    # by the world's step labeler, as R-PRM samples on real model outputs: guided mode, arith);
    # null: own where possible.
    judge_dpo_solutions: Literal["labeled", "own"] | None = None
    judge_dpo_temperature: float = Field(1.0, gt=0.0)  # the judge's sampled critiques for its DPO pairs


class LoopConfig(_Strict):
    mode: Literal["rprm", "psrlm", "guided"] = "guided"
    iterations: int = Field(2, ge=0)
    problems_per_iteration: int = Field(256, ge=1)
    # constant: every iteration searches problems_per_iteration problems; linear: iteration k
    # searches k x problems_per_iteration (PSRLM's 400 / 800 / 1,200 for M2 / M3 / M4).
    problems_growth: Literal["constant", "linear"] = "constant"
    max_steps_per_solution: int = Field(20, ge=1)  # PSRLM's cap (also bounds rollbacks)
    rollback_on_tie: bool = True
    # psrlm: who judges the search's candidate pairs. self: the current model (PSRLM); frozen_m1:
    # M1 throughout, a control that shows what the judge's own improvement adds.
    pairwise_judge: Literal["self", "frozen_m1"] = "self"
    # A control for the iterations' gain (guided and psrlm): after iteration k, M1's SFT is
    # continued from the previous control model for as many optimizer steps as that iteration's
    # step DPO took, at its learning rate, on M1's own training rows, and scored by pass@1 beside
    # M(k+1). A self-rewarding gain counts only beyond this control's (stages
    # iter_k/sft_control{,_eval}).
    sft_control: bool = False
    # Guided mode: a step pair needs best score - worst score >= this. 0 pairs any difference (the
    # papers); the tiny judge's P(Yes) is nearly binary, so a gap of 0.00001 is two accepted steps.
    step_pair_min_margin: float = Field(0.0, ge=0.0, le=1.0)
    # Peak lr of the policy's step-wise DPO; null: trainer.dpo_lr (which the judge's DPO uses).
    step_dpo_lr: float | None = Field(None, gt=0)
    # The step DPO's NLL-on-chosen weight; null: trainer.dpo_nll_coef. A self-judge's chosen steps
    # are right less often than a trained judge's, and the NLL term copies the wrong ones.
    step_dpo_nll_coef: float | None = Field(None, ge=0)
    # Training problems held back from M1's SFT (its solutions and, in psrlm, its pairwise
    # judgments) for the iterations to search: the first N of the train split, so the problems a
    # search meets are new to the model (iteration k searches the k-th problems_per_iteration of
    # them, cycling when there are fewer). 0: none held back (iterations search problems M1 was
    # trained on); null: iterations x problems_per_iteration in psrlm, 0 in the other modes.
    search_pool_problems: int | None = Field(None, ge=0)

    def problems_in_iteration(self, iteration: int) -> int:
        """How many problems iteration `iteration` (1-based) searches."""
        return self.problems_per_iteration * (iteration if self.problems_growth == "linear" else 1)

    def problems_searched_before(self, iteration: int) -> int:
        """How many problems the iterations before `iteration` searched together."""
        return sum(self.problems_in_iteration(k) for k in range(1, iteration))


class SearchConfig(_Strict):
    strategy: Literal["bon", "beam", "greedy", "self_judged"] = "bon"
    samples_per_prompt: int = Field(8, ge=1)  # Best-of-N's N, beam search's N beams
    beam_width: int = Field(4, ge=1)  # M: candidates kept per beam step
    candidates_per_step: int = Field(8, ge=1)  # greedy guided search's w
    max_depth: int = Field(20, ge=1)
    aggregation: Literal["min", "last", "prod", "mean"] = "min"
    filter_duplicates: bool = True
    # Beam search keeps no open beam scored below this while another beam of its prompt scores at
    # least this (the slots refill from the accepted ones); null: plain top N/M, as search-and-learn.
    beam_prune_below: float | None = Field(None, ge=0.0, le=1.0)
    batch_prompts: int = Field(64, ge=1)  # prompts advanced together per depth level
    # Chunks of batch_prompts in flight at once (threads): one chunk's generator calls overlap another's
    # judge calls, so both engines work; results do not depend on it (per-prompt seeds).
    concurrent_chunks: int = Field(1, ge=1)
    sampling: SamplingConfig = SamplingConfig(temperature=1.0, max_new_tokens=32)

    @model_validator(mode="after")
    def _beams(self) -> SearchConfig:
        if self.strategy == "beam" and self.samples_per_prompt % self.beam_width:
            raise ValueError(
                f"beam search needs samples_per_prompt ({self.samples_per_prompt}) to be a multiple "
                f"of beam_width ({self.beam_width})"
            )
        return self


class EvaluationConfig(_Strict):
    eval_problems: int | None = Field(None, ge=1)  # None: all of task.eval_problems
    bon_samples_per_prompt: list[int] = [1, 2, 4, 8]
    critiques_per_step: list[int] = [1, 2, 4, 8]  # F1 vs K
    # Sampling temperature of the F1-vs-K critiques. A list: each half of an evaluation set's
    # solutions uses the temperature that scores best (F1 at the largest K) on the other half
    # (evaluation/cross_fit.py), so the curve is never tuned on the solutions it is reported on.
    critique_temperature: float | list[float] = 1.0
    # psrlm: the self-judge's pairwise accuracy per iteration is measured on the policy's own
    # candidate steps for this many held-out problems (the first of the eval split); null: as many
    # as pass@1 uses; 0: not measured. Needs a world with step labels (arith).
    self_judge_problems: int | None = Field(None, ge=0)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    processbench_files: list[Path] = []
    math_files: list[Path] = []

    @field_validator("critique_temperature")
    @classmethod
    def _temperatures(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values or any(t <= 0 for t in values) or len(set(values)) != len(values):
            raise ValueError(f"critique_temperature must be a temperature > 0 or a list of distinct ones, not {value}")
        return value

    @property
    def critique_temperatures(self) -> list[float]:
        t = self.critique_temperature
        return list(t) if isinstance(t, list) else [t]


class ResourcesConfig(_Strict):
    address: str | None = None  # None: start a local cluster
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)
    dashboard_host: str = "127.0.0.1"
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(8000, ge=1, le=65535)


class TrackingConfig(_Strict):
    """Send the run's metrics and the report's plots to an experiment tracker. TensorBoard: event
    files on local disk, no server or account; `tensorboard --logdir <dir>` shows them."""

    backend: Literal["tensorboard"] = "tensorboard"
    dir: Path | None = None  # None: <run dir>/tensorboard; a relative path is under the run dir
    log_plots: bool = True  # the report's PNG plots as images, when the report is written


class Recipe(_Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    run_root: Path = Path("runs")
    model_cache: Path = Path("models")  # bootstrapped tiny models, keyed by the recipe
    task: TaskConfig = TaskConfig()
    models: ModelsConfig = ModelsConfig()
    generator: GeneratorConfig = GeneratorConfig()
    judge: JudgeConfig = JudgeConfig()
    pairs: PairsConfig = PairsConfig()
    trainer: TrainerConfig = TrainerConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    loop: LoopConfig = LoopConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig | None = None  # None: no tracker

    @property
    def judge_model(self) -> ModelSpec | None:
        """The separate R-PRM judge's model; None where the policy judges itself (mode psrlm, whose
        self-rewarding policy is its own judge whatever models.judge says, or models.judge null)."""
        return None if self.loop.mode == "psrlm" else self.models.judge

    @model_validator(mode="after")
    def _cross(self) -> Recipe:
        if self.loop.mode in ("rprm", "guided") and self.models.judge is None:
            raise ValueError(f"loop.mode '{self.loop.mode}' needs models.judge (a separate R-PRM judge)")
        if self.task.kind == "arith" and self.models.prompt_style != "compact":
            raise ValueError("task.kind 'arith' is written in the compact style: set models.prompt_style: compact")
        if self.task.kind == "dataset" and self.models.teacher.kind == "programmatic" and self.loop.mode != "psrlm":
            raise ValueError("models.teacher.kind 'programmatic' only knows the arith task; use 'vllm' or 'openai'")
        if (self.task.kind == "dataset" and self.loop.mode == "psrlm" and self.bootstrap.pairwise_judge_examples
                and self.models.teacher.kind == "programmatic"):
            raise ValueError("loop.mode 'psrlm' on a dataset needs models.teacher (kind 'vllm' or 'openai') to write "
                             "its pairwise judge examples, and task.dataset.train_labeled_solutions to pair steps "
                             "from; or set bootstrap.pairwise_judge_examples: 0")
        if self.models.teacher.kind == "openai" and self.models.prompt_style == "compact":
            raise ValueError("models.teacher.kind 'openai' writes a critique in one call; the compact judge is shown "
                             "the step after its own first line: use 'programmatic' or 'vllm'")
        if self.bootstrap.judge_dpo_solutions == "own" and (self.loop.mode != "guided" or self.task.kind != "arith"):
            raise ValueError("bootstrap.judge_dpo_solutions 'own' needs a policy (loop.mode guided) and a world "
                             "that labels any step (task.kind arith)")
        if self.loop.pairwise_judge != "self" and self.loop.mode != "psrlm":
            raise ValueError(f"loop.pairwise_judge '{self.loop.pairwise_judge}' is a psrlm control; mode "
                             f"'{self.loop.mode}' judges with its R-PRM judge")
        if self.bootstrap.worked_step_examples and self.task.kind != "arith":
            raise ValueError("bootstrap.worked_step_examples teaches the judge its own worked step: it needs "
                             "task.kind arith (the world that works steps out)")
        if self.loop.sft_control and self.loop.mode == "rprm":
            raise ValueError("loop.sft_control is a control for the policy's iterations; mode 'rprm' trains no "
                             "policy (use loop.mode guided or psrlm)")
        pool = self.search_pool_problems
        largest = self.loop.problems_in_iteration(max(1, self.loop.iterations))
        if pool and pool < largest:
            raise ValueError(f"loop.search_pool_problems ({pool}) must be at least the problems of the largest "
                             f"iteration ({largest}: loop.problems_per_iteration, loop.problems_growth), "
                             "or 0 to hold none back")
        if pool and pool >= self.task.train_problems:  # (a dataset's train_problems is its most)
            raise ValueError(f"loop.search_pool_problems: {pool} training problems held back for the searches "
                             f"(iterations x problems_per_iteration when null) leave none of task.train_problems "
                             f"({self.task.train_problems}) for M1's SFT")
        if self.evaluation.eval_problems and self.evaluation.eval_problems > self.task.eval_problems:
            raise ValueError("evaluation.eval_problems cannot exceed task.eval_problems")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.name

    @property
    def search_pool_problems(self) -> int:
        """loop.search_pool_problems, resolved (null in psrlm: every problem the iterations search)."""
        explicit = self.loop.search_pool_problems
        if explicit is not None:
            return explicit
        return self.loop.problems_searched_before(self.loop.iterations + 1) if self.loop.mode == "psrlm" else 0

    @property
    def judge_dpo_on_own_solutions(self) -> bool:
        """bootstrap.judge_dpo_solutions, resolved (null: own in guided mode on arith)."""
        explicit = self.bootstrap.judge_dpo_solutions
        if explicit is not None:
            return explicit == "own"
        return self.loop.mode == "guided" and self.task.kind == "arith"

    @property
    def distinct_judge_prompts(self) -> bool:
        """models.distinct_judge_prompts, resolved (null: psrlm mode only)."""
        explicit = self.models.distinct_judge_prompts
        return self.loop.mode == "psrlm" if explicit is None else explicit


# --------------------------------------------------------------------------------------------
# Loading


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{source}: --set {dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=3` -> ("a.b", 3); the value is parsed as YAML so numbers, bools and lists work."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def _format_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(recipe)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check spelling; see recipes/tiny_arith.yaml for every field)"
    elif err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    elif "input" in err and err["type"] not in ("missing", "value_error"):
        msg = f"{msg} (got {err['input']!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {field}: {msg}{more}"


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong and where (1-based line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}"


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> dict[str, Any]:
    """`data` (a recipe mapping, changed in place) with `dotted.key=value` overrides applied."""
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value, source)
    return data


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_error(source, exc)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read YAML, apply `dotted.key=value` overrides, validate. Raises RecipeError only."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise RecipeError(f"{source}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: {yaml_error_line(exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    recipe = recipe_from_dict(apply_overrides(data, overrides, source), source)
    for field in ("processbench_files", "math_files"):
        for i, f in enumerate(getattr(recipe.evaluation, field)):
            if not Path(f).is_file():
                raise RecipeError(f"{source}: evaluation.{field}.{i}: file not found: {f}")
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
