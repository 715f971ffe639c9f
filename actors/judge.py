"""ProcessJudge: the R-PRM / PSRLM process judge as an elastic Ray Serve deployment.

Each replica holds one engine (vLLM by default). Methods take and return Arrow tables:
`score_steps(labeled_steps, k)` -> (critiques, step_scores) and `compare(candidates)` ->
pairwise_judgments; all parsing and scoring lives in `rprm_ray.judging`. Replicas scale between the
recipe's min and max with the number of ongoing requests (`judge.autoscaling`).

New weights (self-rewarding: judge = policy, or a freshly DPO-trained judge) arrive as a
`user_config` {"model_dir", "checksum"}: Serve calls `reconfigure` on every live replica, which
loads the weights in place and checks the engine's checksum, and replicas started later load the
same weights before they take traffic. Serve only reconfigures in place when the deployment's
version is unchanged; `serve.run` otherwise draws a random version and replaces every replica, so
the driver pins one version per `JudgeClient` (see `_bind`).

Driver side: `deploy_judge(...)` starts Serve bound to 127.0.0.1 (unless the recipe says otherwise)
and returns a `JudgeClient`, which splits large tables into requests of
`judge.max_batch_rows_per_request` rows, sends them concurrently (so the autoscaler sees the
load) and puts the results back together in row order.

Bounded waits (rprm_ray.waits): a replica gives up on an engine call after the request's time-out
(`judge.request_timeout_s`) with one line naming itself, and `check_health` reports it unhealthy
while that call is stuck, so Serve replaces it. The client bounds start-up, weight updates and
every request, and sends a request again (`judge.request_retries`) when its replica died; results
are stored per request, so every row comes back exactly once.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray import serve
from ray.exceptions import RayTaskError

from actors.metrics import RoleMetrics
from rprm_ray import batches, judging, waits
from rprm_ray.config import JudgeConfig, Recipe, SamplingConfig

ROLE = "ProcessJudge"


@serve.deployment(name=ROLE)
class ProcessJudge:
    """One replica: one engine, one request at a time on it (engines are not thread-safe and
    Serve runs sync methods in a thread pool)."""

    def __init__(self, judge_cfg: dict[str, Any], style_name: str, engine_overrides: dict[str, Any]):
        from rprm_ray.prompts import get_style

        self.cfg = JudgeConfig.model_validate(judge_cfg)
        self.style = get_style(style_name)
        self.engine_overrides = engine_overrides  # dtype / trust_remote_code from the model spec
        self.engine: Any = None  # built by the first reconfigure, from the user_config's model_dir
        self.checksum: str | None = None
        self._lock = threading.Lock()
        self._busy: tuple[str, float, float] | None = None  # (what, since, time-out) of the engine call
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.metrics = RoleMetrics("judge", replica=self.replica_id)

    def __del__(self) -> None:
        # Serve calls this when it stops a replica: closing the engine stops vLLM's engine-core
        # child process with it, so a stopped application leaves no process behind.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    # ---- weights ------------------------------------------------------------------------------

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the weights `user_config` names (in place when an engine is running) and check the
        engine's checksum against the expected one, when given."""
        model_dir = user_config.get("model_dir")
        expected = user_config.get("checksum")
        if not model_dir:
            raise ValueError(f"{ROLE}.reconfigure: user_config needs 'model_dir', got {user_config!r}")
        with self._lock:
            if self.engine is None:
                from rprm_ray.engines import make_engine

                self.engine = make_engine(model_dir, self.cfg.backend, self.cfg, **self.engine_overrides)
            elif model_dir != self.engine.model_dir or (expected and expected != self.checksum):
                self.engine.load_weights(model_dir)
            else:
                return
            self.checksum = self.engine.weights_checksum()
        if expected and self.checksum != expected:
            raise RuntimeError(
                f"{ROLE}.reconfigure: weights loaded from {model_dir} have checksum "
                f"{self.checksum[:12]}…, expected {expected[:12]}…"
            )
        self.metrics.count("judge_weight_loads")

    def info(self) -> dict[str, Any]:
        """Which replica answered, which weights it holds, and its running totals."""
        return {
            "totals": dict(self.metrics.totals),
            "replica_id": self.replica_id,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "model_dir": self.engine.model_dir,
            "checksum": self.checksum,
        }

    # ---- health -------------------------------------------------------------------------------

    def check_health(self) -> None:
        """Serve's periodic probe: unhealthy while an engine call runs past its time-out (a hung
        engine), so Serve stops routing here and replaces the replica."""
        busy = self._busy
        if busy is not None:
            doing, since, timeout_s = busy
            if time.monotonic() - since > timeout_s:
                raise RuntimeError(f"{ROLE} replica {self.replica_id}: engine stuck in {doing} for "
                                   f"{time.monotonic() - since:.0f} s (time-out {timeout_s:g} s)")

    def _on_engine(self, doing: str, timeout_s: float | None, fn: Any) -> Any:
        """Run `fn` on the engine, one call at a time, giving up after `timeout_s`: the call runs
        in a worker thread (it cannot be cancelled) that releases the engine when it returns."""
        timeout_s = timeout_s or self.cfg.request_timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            busy = self._busy
            held = f"; the engine is still in {busy[0]} since {time.monotonic() - busy[1]:.0f} s" if busy else ""
            raise waits.StuckError(f"{ROLE} replica {self.replica_id}: {doing} waited {timeout_s:g} s "
                                   f"for the engine{held}")
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["value"] = fn()
            except BaseException as exc:  # re-raised in the request's thread below
                result["error"] = exc
            finally:
                self._busy = None
                self._lock.release()

        self._busy = (doing, time.monotonic(), timeout_s)
        worker = threading.Thread(target=work, name=f"{ROLE}-engine", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self.metrics.count("judge_engine_timeouts")
            raise waits.StuckError(f"{ROLE} replica {self.replica_id}: engine gave no answer within "
                                   f"{timeout_s:g} s while {doing}; the replica reports itself unhealthy")
        if "error" in result:
            raise result["error"]
        return result["value"]

    # ---- judging ------------------------------------------------------------------------------

    def score_steps(
        self, labeled_steps: pa.Table, k: int | None = None, sampling: SamplingConfig | None = None,
        timeout_s: float | None = None,
    ) -> tuple[pa.Table, pa.Table]:
        """Pointwise R-PRM: K critiques per step (K = judge.critiques_per_step and sampling =
        judge.sampling unless given); the engine call is given up after `timeout_s`
        (judge.request_timeout_s unless given)."""
        critiques, scores = self._on_engine(
            f"score_steps of {labeled_steps.num_rows} steps",
            timeout_s,
            lambda: judging.score_steps(
                self.engine,
                self.style,
                labeled_steps,
                k or self.cfg.critiques_per_step,
                sampling or self.cfg.sampling,
                self.cfg.score,
                where=f"{ROLE}.score_steps",
            ),
        )
        counts = judging.critique_counts(critiques)
        self.metrics.rows(labeled_steps.num_rows, critiques.num_rows)
        self.metrics.count("judge_critiques", counts.total)
        self.metrics.count("judge_invalid_critiques", counts.invalid)
        return critiques, scores

    def compare(
        self, candidates: pa.Table, sampling: SamplingConfig | None = None, timeout_s: float | None = None
    ) -> pa.Table:
        """Pairwise PSRLM: every pair of candidates of a prefix, in both orders."""
        where = f"{ROLE}.compare"
        requests = judging.pairwise_requests(candidates, where=where)
        completions = self._on_engine(
            f"compare of {len(requests)} pairs", timeout_s,
            lambda: judging.write_pairwise(self.engine, self.style, requests, sampling or self.cfg.sampling),
        )
        judgments = judging.pairwise_rows(requests, completions, where=where)
        counts = judging.pairwise_counts(judgments)
        self.metrics.rows(candidates.num_rows, judgments.num_rows)
        self.metrics.count("judge_invalid_pairwise", counts.invalid)
        self.metrics.count("judge_position_inconsistent", counts.position_inconsistent)
        return judgments


# ------------------------------------------------------------------------------------------------
# Driver side


def _serve_options(cfg: JudgeConfig) -> dict[str, Any]:
    auto = cfg.autoscaling
    autoscaling: dict[str, Any] = {
        "min_replicas": auto.min_replicas,
        "max_replicas": auto.max_replicas,
        "target_ongoing_requests": auto.target_ongoing_requests,
        "upscale_delay_s": auto.upscale_delay_s,
        "downscale_delay_s": auto.downscale_delay_s,
    }
    if auto.initial_replicas is not None:
        autoscaling["initial_replicas"] = auto.initial_replicas
    return {
        "autoscaling_config": autoscaling,
        # One request runs on the engine while one more waits in the replica; the rest wait at the
        # handle, where the autoscaler counts them and a new replica can take them.
        "max_ongoing_requests": max(2, math.ceil(auto.target_ongoing_requests)),
        "health_check_period_s": cfg.health_check_period_s,
        "health_check_timeout_s": cfg.health_check_timeout_s,
        "ray_actor_options": {
            "num_cpus": cfg.num_cpus_per_replica,
            "num_gpus": cfg.num_gpus_per_replica,
            # vLLM's own logging set-up (logging.config.dictConfig) closes every handler in the
            # process, Serve's log-file handler included: the replica's access lines would then
            # reach no file. Without it, vLLM's warnings go through Python's default handler to
            # stderr, which Serve keeps in the replica's log file.
            "runtime_env": {"env_vars": {"VLLM_CONFIGURE_LOGGING": "0"}},
        },
    }


class JudgeClient:
    """Driver-side access to a deployed ProcessJudge application."""

    def __init__(
        self, name: str, cfg: JudgeConfig, style_name: str, model_dir: str, engine_overrides: dict[str, Any]
    ):
        self.name = name
        self.cfg = cfg
        self.style_name = style_name
        self.engine_overrides = engine_overrides
        self.model_dir = model_dir
        self.checksum: str | None = None
        self._version = f"{ROLE}-{uuid.uuid4().hex[:12]}"
        self.handle: Any = None
        self.retries = 0  # requests sent again because their replica died

    def _bind(self) -> Any:
        # `version` pins the deployment's code version for this client's lifetime, which is what
        # makes a user_config change a lightweight in-place reconfigure (Ray 2.60 hides the
        # argument behind `_internal`; the integration test checks replicas survive an update).
        deployment = ProcessJudge.options(
            user_config={"model_dir": self.model_dir, "checksum": self.checksum},
            version=self._version,
            _internal=True,
            **_serve_options(self.cfg),
        )
        return deployment.bind(self.cfg.model_dump(mode="json"), self.style_name, self.engine_overrides)

    def _run(self, doing: str = "starting") -> None:
        """Deploy (or update) the application and wait, at most judge.start_timeout_s, until it runs."""
        target = serve.RunTarget(target=self._bind(), name=self.name, route_prefix=None)
        [self.handle] = serve.run_many([target], wait_for_applications_running=False)
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while True:
            app = serve.status().applications.get(self.name)
            status = getattr(app.status, "value", str(app.status)) if app else "NOT_STARTED"
            if status == "RUNNING":
                return
            message = waits.first_line(Exception(app.message)) if app and app.message else ""
            if status == "DEPLOY_FAILED":
                raise RuntimeError(f"{ROLE} app '{self.name}': {doing} failed (stage "
                                   f"{waits.current_stage()}): {message}")
            if time.monotonic() > deadline:
                raise waits.StuckError(waits.stuck_message(
                    ROLE, f"app '{self.name}'", f"{doing} on {self.model_dir}", self.cfg.start_timeout_s,
                    detail=f"replicas {self.replica_states() or 'none'}" + (f"; {message}" if message else "")))
            time.sleep(0.5)

    def _wait(self, response: Any, seconds: float) -> Any:
        """rprm_ray.waits' `wait` for a Serve response; a replica's own time-out comes back as one
        line with the app and the stage added."""
        try:
            return response.result(timeout_s=seconds)
        except RayTaskError as exc:
            if isinstance(exc.cause, waits.StuckError):
                raise waits.StuckError(f"{exc.cause} (app '{self.name}', stage {waits.current_stage()})") from None
            raise
        except TimeoutError:
            raise waits.WaitExpired from None

    def _gather(self, method: str, parts: list[tuple[pa.Table, tuple[Any, ...]]], unit: str) -> list[Any]:
        """One request per part, bounded and retried on a dead replica (rprm_ray.waits.gather)."""
        # The replica bounds its engine call by request_timeout_s and may first wait that long for
        # its engine (one more request waits in each replica); past both, the replica is stuck.
        timeout_s = self.cfg.request_timeout_s
        starts = [0]
        for table, _ in parts:
            starts.append(starts[-1] + table.num_rows)

        def send(i: int) -> Any:
            table, args = parts[i]
            return getattr(self.handle, method).remote(table, *args, timeout_s=timeout_s)

        def describe(i: int) -> tuple[str, str]:
            return f"app '{self.name}'", f"{method} of {unit} rows {starts[i]}..{starts[i + 1] - 1}"

        return waits.gather(len(parts), send, self._wait, timeout_s=2 * timeout_s + 30,
                            retries=self.cfg.request_retries, describe=describe, role=ROLE,
                            on_death=lambda i, _exc: self._count_retry())

    def _count_retry(self) -> None:
        self.retries += 1

    # ---- judging ------------------------------------------------------------------------------

    def score_steps(
        self, labeled_steps: pa.Table, k: int | None = None, sampling: SamplingConfig | None = None
    ) -> tuple[pa.Table, pa.Table]:
        """(critiques, step_scores) in `labeled_steps` row order; see ProcessJudge.score_steps."""
        steps = batches.validate(labeled_steps, "labeled_steps", where=f"{ROLE}.score_steps")
        if steps.num_rows == 0:
            return batches.empty("critiques"), batches.empty("step_scores")
        size = self.cfg.max_batch_rows_per_request
        chunks = [steps.slice(i, size) for i in range(0, steps.num_rows, size)]
        results = self._gather("score_steps", [(chunk, (k, sampling)) for chunk in chunks], "labeled_steps")
        return (
            batches.concat([c for c, _ in results], "critiques"),
            batches.concat([s for _, s in results], "step_scores"),
        )

    def compare(self, candidates: pa.Table, sampling: SamplingConfig | None = None) -> pa.Table:
        """pairwise_judgments, prefixes in first-appearance order; see ProcessJudge.compare."""
        table = batches.validate(candidates, "candidates", where=f"{ROLE}.compare")
        if table.num_rows == 0:
            return batches.empty("pairwise_judgments")
        chunks = judging.prefix_chunks(table, self.cfg.max_batch_rows_per_request)
        results = self._gather("compare", [(chunk, (sampling,)) for chunk in chunks], "candidates")
        return batches.concat(results, "pairwise_judgments")

    # ---- weights and replicas -----------------------------------------------------------------

    def update_weights(
        self, model_dir: str | Path, checksum: str | None = None, timeout_s: float | None = None
    ) -> str:
        """Push new weights to every replica (in place) and wait, at most `timeout_s`
        (judge.start_timeout_s unless given), until the replicas that answer report them. Returns
        the checksum the replicas hold."""
        timeout_s = timeout_s or self.cfg.start_timeout_s
        self.model_dir = str(Path(model_dir).resolve())
        self.checksum = checksum
        self._run(doing=f"loading weights from {self.model_dir}")
        deadline = time.monotonic() + timeout_s
        while True:
            infos = self.replica_info()
            held = {i["checksum"] for i in infos.values()}
            dirs = {i["model_dir"] for i in infos.values()}
            if dirs == {self.model_dir} and len(held) == 1 and (checksum is None or held == {checksum}):
                self.checksum = held.pop()
                return self.checksum
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{ROLE} '{self.name}': replicas still hold other weights after {timeout_s:.0f}s: "
                    f"{ {rid: (i['model_dir'], (i['checksum'] or '')[:12]) for rid, i in infos.items()} }"
                )
            time.sleep(1.0)

    def replica_info(self, probes: int = 8) -> dict[str, dict[str, Any]]:
        """`info()` of the replicas that answered `probes` concurrent calls, by replica id."""
        responses = [self.handle.info.remote() for _ in range(probes)]
        infos = waits.wait_each(responses, self._wait, timeout_s=self.cfg.request_timeout_s, role=ROLE,
                                names=[f"app '{self.name}'"] * probes, doing="reporting its weights (info)")
        return {i["replica_id"]: i for i in infos}

    def replica_states(self) -> dict[str, int]:
        """Replica counts by state ("RUNNING", "STARTING", ...) from serve.status()."""
        app = serve.status().applications.get(self.name)
        if app is None or ROLE not in app.deployments:
            return {}
        states = app.deployments[ROLE].replica_states
        return {getattr(state, "value", str(state)): int(n) for state, n in states.items()}

    def running_replicas(self) -> int:
        return self.replica_states().get("RUNNING", 0)

    def shutdown(self) -> None:
        serve.delete(self.name)


def deploy_judge(
    recipe_or_judge_cfg: Recipe | JudgeConfig,
    model_dir: str | Path,
    *,
    name: str = "judge",
    style_name: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> JudgeClient:
    """Start Serve (HTTP bound to 127.0.0.1 unless the recipe or `host` says otherwise), deploy
    the ProcessJudge application `name` on `model_dir`, wait until it runs, return its client.
    With a Recipe, the prompt style and the engine's dtype / trust_remote_code come from its
    `models` section (the judge's spec, or the policy's when the policy judges itself); with a
    bare JudgeConfig the style defaults to "compact". Needs a connected Ray cluster."""
    engine_overrides: dict[str, Any] = {}
    if isinstance(recipe_or_judge_cfg, Recipe):
        recipe = recipe_or_judge_cfg
        cfg = recipe.judge
        spec = recipe.judge_model or recipe.models.policy
        engine_overrides = {"dtype": spec.dtype, "trust_remote_code": spec.trust_remote_code,
                            "too_long": recipe.models.too_long}
        style_name = style_name or recipe.models.prompt_style
        host = host or recipe.resources.serve_host
        port = port or recipe.resources.serve_port
    else:
        cfg = recipe_or_judge_cfg
    path = Path(model_dir).resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{ROLE}: model directory {path} has no config.json")
    serve.start(http_options={"host": host or "127.0.0.1", "port": port or 8000})
    client = JudgeClient(name, cfg, style_name or "compact", str(path), engine_overrides)
    client._run()
    client.checksum = client.replica_info(probes=1).popitem()[1]["checksum"]
    return client
