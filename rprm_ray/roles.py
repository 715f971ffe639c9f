"""Roles: the driver's lazy handles on the Ray actors of one run.

Stages ask for a role *with given weights* (`roles.generator(model_dir)`); the first request
starts the actor, later requests with other weights update it in place (checksum-verified), so a
resumed run and an uninterrupted one end up with the same weights in every role. This module and
`loop.py` are the only core modules that touch `actors/` (lazily, inside methods).

Runs are isolated: the judge's Serve application and every named actor carry the run's name
(`<run>.judge`, `<run>.policy-generator-0`, ...), so two runs share a cluster without touching each
other's roles, and a run's shutdown removes only its own. Before its first role starts, a run
removes what a killed driver of the same run left behind (the Serve application outlives its
driver; a detached actor would too).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rprm_ray.config import Recipe, TrainerConfig

log = logging.getLogger("rprm_ray.roles")


def init_ray(recipe: Recipe) -> None:
    """Connect to `resources.address`, or start a local cluster bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    res = recipe.resources
    env = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(recipe.generator.kv_cache_gib),
                        "TOKENIZERS_PARALLELISM": "false",
                        # vLLM's per-engine INFO banner drowns the run's own progress lines.
                        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                        # Serve's components log to their files under the session's logs/serve/ only:
                        # the judge's per-request access lines stay off the console.
                        "RAY_SERVE_LOG_TO_STDERR": os.environ.get("RAY_SERVE_LOG_TO_STDERR", "0")}}
    if res.address:
        ray.init(address=res.address, runtime_env=env, log_to_driver=True)
        return
    # Logical CPUs: engines idle while the trainer works, so the roles may share the cores.
    demand = (recipe.generator.replicas * recipe.generator.num_cpus_per_replica
              + recipe.judge.autoscaling.max_replicas * recipe.judge.num_cpus_per_replica
              + recipe.trainer.num_workers * recipe.trainer.num_cpus_per_worker + 1)
    num_cpus = res.num_cpus or max(int(demand + 0.999), os.cpu_count() or 1)
    ray.init(num_cpus=num_cpus, num_gpus=res.num_gpus, include_dashboard=True,
             dashboard_host=res.dashboard_host, runtime_env=env, log_to_driver=True)


class Roles:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.run_name = recipe.name
        self._cleaned = False
        self._generator: Any = None
        self._generator_dir: str | None = None
        self._judge: Any = None
        self._judge_dir: str | None = None
        self._pair_builder: Any = None

    def style(self, role: str) -> Any:
        """The role's prompt style, rendered through its chat template (`chat.role_style`)."""
        from rprm_ray.chat import role_style

        return role_style(self.recipe, role)

    def name(self, role: str) -> str:
        """The cluster-wide name of this run's `role` (a Serve app or a named actor)."""
        return f"{self.run_name}.{role}"

    def clean_leftovers(self) -> list[str]:
        """Remove this run's judge application and named actors still on the cluster (left by a
        killed driver of the same run); returns what was removed. Runs once per Roles."""
        if self._cleaned:
            return []
        self._cleaned = True
        removed = remove_run_leftovers(self.run_name)
        for what in removed:
            log.warning("removed %s, left on the cluster by an earlier driver of run %s", what, self.run_name)
        return removed

    # ---- PolicyGenerator ------------------------------------------------------------------
    def generator(self, model_dir: str | Path) -> Any:
        from actors.generator import GeneratorPool

        model_dir = str(model_dir)
        if self._generator is None:
            self.clean_leftovers()
            self._generator = GeneratorPool(model_dir, self.recipe.generator, style_name=self.style("policy"),
                                            role=self.name("policy-generator"),
                                            engine_overrides={"too_long": self.recipe.models.too_long})
        elif self._generator_dir != model_dir:
            self._generator.update_weights(model_dir, checksum_of(model_dir))
        self._generator_dir = model_dir
        return self._generator

    # ---- ProcessJudge (Serve) -------------------------------------------------------------
    def judge(self, model_dir: str | Path) -> Any:
        from actors.judge import deploy_judge

        model_dir = str(model_dir)
        if self._judge is None:
            self.clean_leftovers()
            self._judge = deploy_judge(self.recipe, model_dir, name=self.name("judge"), style_name=self.style("judge"))
        elif self._judge_dir != model_dir:
            self._judge.update_weights(model_dir, checksum_of(model_dir))
        self._judge_dir = model_dir
        return self._judge

    # ---- PairBuilder ----------------------------------------------------------------------
    def pair_builder(self) -> Any:
        if self._pair_builder is None:
            from actors.pair_builder import PairBuilder

            self.clean_leftovers()
            self._pair_builder = PairBuilder.options(name=self.name("pair-builder")).remote(
                self.recipe.pairs, self.style("policy"))
        return self._pair_builder

    # ---- Trainer --------------------------------------------------------------------------
    def trainer(self, model_dir: str | Path, name: str, cfg: TrainerConfig | None = None) -> Any:
        """A DeepSpeed trainer group initialised from `model_dir` (with `cfg`, default the recipe's
        trainer); the caller shuts it down."""
        from actors.trainer import TrainerGroup

        self.clean_leftovers()
        return TrainerGroup(model_dir, cfg or self.recipe.trainer, name=self.name(name))

    def shutdown(self) -> None:
        import ray

        if self._judge is not None:
            self._judge.shutdown()
        if self._generator is not None:
            self._generator.shutdown()
        if self._pair_builder is not None:
            ray.kill(self._pair_builder)
        self._generator = self._judge = self._pair_builder = None


def remove_run_leftovers(run_name: str) -> list[str]:
    """Delete the Serve application and kill the named actors of run `run_name` (names
    `<run>.<role>`) on the connected cluster; returns what was removed."""
    import ray

    prefix = f"{run_name}."
    removed = []
    try:
        from ray import serve

        apps = serve.status().applications
    except Exception:  # no Serve instance on this cluster: no application to remove
        apps = {}
    for app in apps:
        if app.startswith(prefix):
            serve.delete(app)
            removed.append(f"Serve application {app}")
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry["namespace"]
        if name.startswith(prefix):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
                removed.append(f"actor {name}")
            except ValueError:  # died meanwhile
                pass
    return removed


def checksum_of(model_dir: str | Path) -> str:
    """The checksum a trainer reported when it saved `model_dir` (written beside the weights)."""
    path = Path(model_dir) / "checksum.txt"
    if path.is_file():
        return path.read_text().strip()
    from rprm_ray.training import checksum_model_dir

    return checksum_model_dir(model_dir)
