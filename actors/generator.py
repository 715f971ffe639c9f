"""PolicyGenerator: the policy's sampling role, one engine per Ray actor; GeneratorPool: N of them.

Methods take and return Arrow tables (rprm_ray.batches), validated where they enter:
- `generate(problems, n)` -> solutions: n full solutions per problem, split into steps;
- `expand(prefixes, w)` -> candidates: w candidate next steps per prefix, each stopped at the
  step separator; `finished` when the step is the final (answer) step or the model ended the
  sequence;
- `update_weights(model_dir, expected_checksum)`: in place, within a timeout, then the engine's
  checksum is compared with the trainer's; a mismatch or a timeout names the replica and leaves
  it refusing work until a good update (its weights are not the ones the run believes).

Actor names carry the role ("policy-generator-0"; a run's roles prefix the run's name), so a dead
or failing actor says which role it was. Samples are seeded per prompt (see
rprm_ray.engines.base.prompt_seed), so results do not depend on how a pool splits a table, and a
chunk sent again after its actor died gives the same rows.

Every pool wait is bounded (`generator.start_timeout_s`, `call_timeout_s`; rprm_ray.waits). A dead
actor is replaced by the pool, not restarted by Ray: Ray would rebuild it from its constructor's
arguments, i.e. with the weights it started with, not the ones the pool loaded since.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from actors.metrics import RoleMetrics
from rprm_ray import batches, waits
from rprm_ray.config import GeneratorConfig, SamplingConfig
from rprm_ray.engines.base import check_model_dir

ROLE = "policy-generator"


@ray.remote
class PolicyGenerator:
    def __init__(
        self,
        model_dir: str,
        gen_cfg: GeneratorConfig,
        style: str,
        name: str = f"{ROLE}-0",
        engine_overrides: dict[str, Any] | None = None,
    ):
        from rprm_ray.engines import make_engine
        from rprm_ray.prompts import get_style

        self.name = name
        self.cfg = gen_cfg
        self.style = get_style(style)
        check_model_dir(model_dir, who=name)
        self.engine = make_engine(model_dir, gen_cfg.backend, gen_cfg, **(engine_overrides or {}))
        self.metrics = RoleMetrics(ROLE, replica=name)
        self._refusal: str | None = None  # set when the weights are not the ones expected
        self._load_thread: threading.Thread | None = None

    def ready(self) -> str:
        return self.name

    def stats(self) -> dict[str, float]:
        return dict(self.metrics.totals)

    # ---- sampling ---------------------------------------------------------------------------

    def generate(self, problems: pa.Table, n: int = 1, sampling: SamplingConfig | None = None) -> pa.Table:
        """n solutions per problem. `finished`: the model ended the sequence or wrote the final
        (answer) step; `correct` is left null (grading belongs to the task)."""
        where = f"{self.name}.generate"
        problems = batches.validate(problems, "problems", where=where)
        self._check_usable(where)
        if problems.num_rows == 0:
            return batches.empty("solutions")
        sampling = sampling or self.cfg.sampling
        questions = problems.column("question").to_pylist()
        outputs = self.engine.generate([self.style.policy_prompt(q) for q in questions], n, sampling)
        rows = []
        for problem_id, question, completions in zip(
            problems.column("problem_id").to_pylist(), questions, outputs, strict=True
        ):
            for sample_idx, c in enumerate(completions):
                steps = self.style.split_steps(c.text)
                rows.append(
                    {
                        "problem_id": problem_id,
                        "sample_idx": sample_idx,
                        "question": question,
                        "text": c.text,
                        "steps": steps,
                        "answer": self.style.extract_answer(steps),
                        "finished": c.finish_reason == "eos"
                        or any(self.style.is_final_step(s) for s in steps),
                        "correct": None,
                    }
                )
        self._count(problems.num_rows, outputs)
        return batches.from_rows(rows, "solutions")

    def expand(
        self, prefixes: pa.Table, w: int | None = None, sampling: SamplingConfig | None = None
    ) -> pa.Table:
        """w candidate next steps per prefix (candidate_id 0..w-1), in prefix order."""
        where = f"{self.name}.expand"
        prefixes = batches.validate(prefixes, "prefixes", where=where)
        self._check_usable(where)
        if prefixes.num_rows == 0:
            return batches.empty("candidates")
        w = w or self.cfg.candidates_per_step
        sampling = sampling or self.cfg.sampling
        questions = prefixes.column("question").to_pylist()
        prefix_steps = prefixes.column("prefix_steps").to_pylist()
        prompts = [self.style.render_prefix(q, s) for q, s in zip(questions, prefix_steps, strict=True)]
        # logprobs=0: only the sampled tokens' log-probs, for cumulative_logprob.
        logprobs = 0 if self.cfg.candidate_logprobs else None
        outputs = self.engine.generate(prompts, w, sampling, stop=self.style.step_stop, logprobs=logprobs)
        rows = []
        for problem_id, prefix_id, question, steps, completions in zip(
            prefixes.column("problem_id").to_pylist(),
            prefixes.column("prefix_id").to_pylist(),
            questions,
            prefix_steps,
            outputs,
            strict=True,
        ):
            for candidate_id, c in enumerate(completions):
                step = c.text.strip()
                rows.append(
                    {
                        "problem_id": problem_id,
                        "prefix_id": prefix_id,
                        "candidate_id": candidate_id,
                        "question": question,
                        "prefix_steps": steps,
                        "step": step,
                        # too_long: the prefix no longer fits the model; its search ends here.
                        "finished": c.finish_reason in ("eos", "too_long") or self.style.is_final_step(step),
                        "num_tokens": len(c.token_ids),
                        "cumulative_logprob": c.cumulative_logprob,
                    }
                )
        self._count(prefixes.num_rows, outputs)
        return batches.from_rows(rows, "candidates")

    def _count(self, rows_in: int, outputs: list[list[Any]]) -> None:
        rows_out = sum(len(cs) for cs in outputs)
        self.metrics.rows(rows_in, rows_out)
        self.metrics.count("tokens_generated", sum(len(c.token_ids) for cs in outputs for c in cs))
        self.metrics.count("skipped_too_long", sum(1 for cs in outputs if cs and cs[0].finish_reason == "too_long"))

    def _check_usable(self, where: str) -> None:
        if self._refusal:
            raise RuntimeError(f"{where}: refusing to sample: {self._refusal}")

    # ---- weights ----------------------------------------------------------------------------

    def weights_checksum(self) -> str:
        return self.engine.weights_checksum()

    def model_dir(self) -> str:
        return self.engine.model_dir

    def update_weights(
        self, model_dir: str, expected_checksum: str | None = None, timeout_s: float | None = None
    ) -> str:
        """Load `model_dir` in place; return the engine's checksum after the load."""
        where = f"{self.name}.update_weights"
        check_model_dir(model_dir, who=where)
        timeout_s = timeout_s or self.cfg.update_weights_timeout_s
        if self._load_thread is not None:
            # A load that timed out earlier may still be writing into the engine: never run two.
            self._load_thread.join(timeout_s)
            if self._load_thread.is_alive():
                raise TimeoutError(f"{where}: the previous update is still loading; restart this replica")
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                self.engine.load_weights(model_dir)
                result["checksum"] = self.engine.weights_checksum()
            except BaseException as exc:  # re-raised in the actor's thread below
                result["error"] = exc

        # A thread, so a hung load cannot hold the actor forever; the load itself cannot be
        # cancelled, hence the refusal below.
        worker = threading.Thread(target=load, name=f"{self.name}-load-weights", daemon=True)
        self._load_thread = worker
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self._refusal = (
                f"update_weights from {model_dir} did not finish within {timeout_s:g} s; the "
                "weights may be partly replaced (restart this replica)"
            )
            raise TimeoutError(f"{where}: {self._refusal}")
        if "error" in result:
            self._refusal = f"update_weights from {model_dir} failed: {result['error']}"
            raise RuntimeError(f"{where}: {self._refusal}") from result["error"]
        checksum = result["checksum"]
        if expected_checksum is not None and checksum != expected_checksum:
            self._refusal = (
                f"weights loaded from {model_dir} have checksum {checksum[:16]}…, expected "
                f"{expected_checksum[:16]}… (the trainer's checksum of the weights it saved)"
            )
            raise RuntimeError(f"{where}: {self._refusal}")
        self._refusal = None
        self.metrics.count("weight_updates")
        return checksum


class GeneratorPool:
    """Driver-side view of N PolicyGenerator replicas: splits a table into contiguous chunks
    (one per replica, so one problem's prefixes tend to share a replica's prefix cache) and
    returns the results in the input's row order."""

    def __init__(
        self,
        model_dir: str | Path,
        gen_cfg: GeneratorConfig,
        style_name: str = "compact",
        role: str = ROLE,
        engine_overrides: dict[str, Any] | None = None,
    ):
        """Start `gen_cfg.replicas` actors named `<role>-<i>` and wait until each holds its
        engine (a start-up error or time-out is raised here, naming the replica)."""
        self.names = [f"{role}-{i}" for i in range(gen_cfg.replicas)]
        self.cfg = gen_cfg
        self.update_timeout_s = gen_cfg.update_weights_timeout_s
        self.style_name = style_name
        self.engine_overrides = engine_overrides
        self.model_dir = str(model_dir)  # the weights every replica holds (a replacement loads them)
        self.replacements = 0
        self.actors = [self._start(name) for name in self.names]
        try:
            self._wait_ready(self.actors, self.names)
        except Exception:
            self.shutdown()
            raise

    def _start(self, name: str) -> Any:
        return PolicyGenerator.options(
            name=name,
            num_cpus=self.cfg.num_cpus_per_replica,
            num_gpus=self.cfg.num_gpus_per_replica,
        ).remote(self.model_dir, self.cfg, self.style_name, name, self.engine_overrides)

    def _wait_ready(self, actors: list[Any], names: list[str]) -> None:
        waits.wait_each([a.ready.remote() for a in actors], waits.ray_wait, timeout_s=self.cfg.start_timeout_s,
                        role=ROLE, names=names, doing=f"starting its engine on {self.model_dir}",
                        done=waits.ray_done)

    def _replace(self, index: int) -> None:
        """A fresh actor in slot `index` (same name) holding the pool's current weights."""
        name = self.names[index]
        try:
            ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            pass
        # The dead actor's name is released asynchronously, and a node that just died may still
        # look alive to the scheduler (the replacement then dies too): retry until the deadline.
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while True:
            try:
                actor = self._start(name)
                self._wait_ready([actor], [name])
                break
            except ValueError:  # the name is still taken
                pass
            except Exception as exc:
                if not waits.is_replica_death(exc):
                    raise
                ray.kill(actor, no_restart=True)
            if time.monotonic() > deadline:
                raise waits.StuckError(waits.stuck_message(
                    ROLE, name, f"replacing a dead replica on {self.model_dir}", self.cfg.start_timeout_s))
            time.sleep(1.0)
        self.actors[index] = actor
        self.replacements += 1

    def generate(self, problems: pa.Table, n: int = 1, sampling: SamplingConfig | None = None) -> pa.Table:
        return self._scatter("generate", problems, "problems", "solutions", n, sampling)

    def expand(
        self, prefixes: pa.Table, w: int | None = None, sampling: SamplingConfig | None = None
    ) -> pa.Table:
        return self._scatter("expand", prefixes, "prefixes", "candidates", w, sampling)

    def _scatter(self, method: str, table: pa.Table, kind_in: str, kind_out: str, *args: Any) -> pa.Table:
        table = batches.validate(table, kind_in, where=f"GeneratorPool.{method}")
        parts = chunks(table.num_rows, len(self.actors))

        def send(i: int) -> Any:
            start, length = parts[i]
            return getattr(self.actors[i], method).remote(table.slice(start, length), *args)

        def describe(i: int) -> tuple[str, str]:
            start, length = parts[i]
            return self.names[i], f"{method} of {kind_in} rows {start}..{start + length - 1}"

        results = waits.gather(
            len(parts), send, waits.ray_wait, timeout_s=self.cfg.call_timeout_s,
            retries=self.cfg.call_retries, describe=describe, role=ROLE,
            on_death=lambda i, _exc: self._replace(i),
        )
        return batches.concat(results, kind_out)

    def update_weights(self, model_dir: str | Path, expected_checksum: str | None = None) -> list[str]:
        """Update every replica; returns their checksums (all equal to `expected_checksum` when
        given, else an error names the replica)."""
        refs = [
            a.update_weights.remote(str(model_dir), expected_checksum, self.update_timeout_s)
            for a in self.actors
        ]
        # The replicas enforce the timeout themselves; this is the backstop for a dead one.
        checksums = waits.wait_each(refs, waits.ray_wait, timeout_s=self.update_timeout_s + 60, role=ROLE,
                                    names=self.names, doing=f"loading weights from {model_dir}",
                                    done=waits.ray_done)
        self.model_dir = str(model_dir)
        return checksums

    def weights_checksums(self) -> list[str]:
        return waits.wait_each([a.weights_checksum.remote() for a in self.actors], waits.ray_wait,
                               timeout_s=self.cfg.call_timeout_s, role=ROLE, names=self.names,
                               doing="computing its weights checksum", done=waits.ray_done)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def chunks(num_rows: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous (start, length) slices covering `num_rows`, as even as possible, none empty."""
    parts = max(1, min(parts, num_rows))
    base, extra = divmod(num_rows, parts)
    out, start = [], 0
    for i in range(parts):
        length = base + (1 if i < extra else 0)
        out.append((start, length))
        start += length
    return out
