"""`rprm-ray serve JUDGE [--host H] [--port P] [--recipe FILE] [--set k=v ...]`: the process judge as
an HTTP service (Ray Serve), in the foreground until Ctrl-C or SIGTERM.

JUDGE is a model directory, a run directory (its latest judge, with the run's recipe) or a hub
name. The judge's settings (sampling, K, autoscaling, batch sizes, aggregation for /get_reward)
come from --recipe, else the run's recipe, else the defaults; --set overrides any of them.
Routes and bodies: rprm_ray.serving. Without `resources.address` the command starts its own
local Ray cluster and shuts it down on exit, leaving no process behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rprm_ray.data import DataError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("judge", metavar="JUDGE", help="a model directory, a run directory (runs/<name>) or a hub name")
    p.add_argument("--host", default=None, help="address to bind (default: resources.serve_host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: resources.serve_port, 8000)")
    p.add_argument("--recipe", type=Path, default=None, metavar="FILE",
                   help="recipe whose judge / search / resources settings to use (default: the run's, else defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set judge.autoscaling.max_replicas=4")
    p.add_argument("--prompt-style", choices=("compact", "paper"), default=None,
                   help="judge prompt format (default: the recipe's models.prompt_style; paper for a bare model)")


class _Stop(Exception):
    """Raised by the SIGINT / SIGTERM handler to unwind into the clean-up."""


def settings(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(recipe, model source, prompt style) from the command line; raises DataError / RecipeError."""
    from rprm_ray.config import RecipeError, apply_overrides, load_recipe, recipe_from_dict
    from rprm_ray.evaluation.judged import default_max_model_len
    from rprm_ray.model_source import resolve_model

    source = resolve_model(args.judge, "judge", "JUDGE")
    if args.recipe is not None:
        recipe = load_recipe(args.recipe, args.overrides)
    elif source.recipe is not None:
        recipe = recipe_from_dict(apply_overrides(source.recipe.model_dump(mode="json"), args.overrides,
                                                  str(source.run_dir)), str(source.run_dir))
    else:
        data: dict[str, Any] = {}
        given = {o.split("=", 1)[0].strip() for o in args.overrides}
        if "judge.max_model_len_tokens" not in given:
            # No recipe says how long prompts may be: allow the model's own context.
            data = {"judge": {"max_model_len_tokens": default_max_model_len(source.model_dir)}}
        recipe = recipe_from_dict(apply_overrides(data, args.overrides, "--set"), "--set")
    has_recipe = args.recipe is not None or source.recipe is not None
    style = args.prompt_style or (recipe.models.prompt_style if has_recipe else "paper")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise RecipeError(f"--port {args.port}: expected 1..65535")
    return recipe, source, style


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DataError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def run(args: argparse.Namespace) -> int:
    recipe, source, style = settings(args)
    host = args.host or recipe.resources.serve_host
    port = args.port or recipe.resources.serve_port
    local = recipe.resources.address is None
    if local:
        _check_port_free(host, port)

    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def take_signals_back() -> None:
        # ray.init installs Ray's own fatal-signal handler (SIGTERM: dump a stack, abort), which
        # would skip the clean-up: ours must be the one installed once Ray is up.
        for sig in previous:
            signal.signal(sig, stop)

    try:
        from ray import serve

        from actors.judge_http import APP_NAME, build_app

        print(f"rprm-ray serve: starting the judge {source.model_dir} ({source.origin}), prompt style {style}",
              file=sys.stderr, flush=True)
        _init_ray(recipe)
        take_signals_back()
        spec = (source.recipe or recipe).models
        judge_spec = spec.judge or spec.policy
        overrides = {"dtype": judge_spec.dtype, "trust_remote_code": judge_spec.trust_remote_code}
        # Serve's driver-side INFO lines (e.g. that serve.run joins the Serve instance started just
        # above) say nothing to the user; warnings and errors still show.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        serve.start(http_options={"host": host, "port": port})
        app = build_app(recipe.judge, source.model_dir, style, recipe.search.aggregation, overrides, source.origin)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # a replica that cannot start (weights, memory, engine)
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise DataError(f"the judge did not start: {first.strip()[:300]} (replica logs: Ray's "
                            "session logs, logs/serve/)") from None
        take_signals_back()
        print(f"rprm-ray serve: judge ready at http://{host}:{port}  "
              "(POST /v1/score, POST /get_reward, GET /healthz); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)  # until a signal raises _Stop
    except _Stop as exc:
        print(f"rprm-ray serve: {exc}: stopping", file=sys.stderr, flush=True)
    finally:
        # Further signals must not interrupt the clean-up.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        _shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _init_ray(recipe: Any) -> None:
    """Connect to `resources.address`, or start a local cluster (no dashboard: the service needs
    none)."""
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(recipe.judge.kv_cache_gib), "TOKENIZERS_PARALLELISM": "false",
                        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}}
    res = recipe.resources
    if res.address:
        ray.init(address=res.address, runtime_env=env, log_to_driver=False)
        return
    auto = recipe.judge.autoscaling
    demand = auto.max_replicas * recipe.judge.num_cpus_per_replica + 1
    # address="local": always a new cluster of this process's own, never one a `ray start` left on
    # this machine (which plain ray.init() would join, and whose Serve the clean-up would stop).
    ray.init(address="local", num_cpus=res.num_cpus or max(int(demand + 0.999), os.cpu_count() or 1), num_gpus=res.num_gpus,
             include_dashboard=False, runtime_env=env, log_to_driver=False, configure_logging=False)


def _shutdown() -> None:
    """Delete the application (Serve stops each replica gracefully: it closes its engine), then
    stop the local cluster (controller and proxy go with it) or leave the shared one."""
    import ray

    if not ray.is_initialized():
        return
    from ray import serve
    from ray.serve.exceptions import RayServeException

    from actors.judge_http import APP_NAME

    try:
        serve.delete(APP_NAME)
    except RayServeException:  # stopped before Serve started: nothing to delete
        pass
    finally:
        ray.shutdown()  # stops the cluster this process started; only disconnects from a shared one
