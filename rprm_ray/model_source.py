"""Where a command's model comes from: a model directory, a run directory or a hub name.

`rprm-ray serve JUDGE`, `search --policy-model / --judge-model` and `export` all take the same
three forms. A run directory (`runs/<name>`, holding manifest.json) stands for the run's latest
weights of the role (manifest state `judge_dir` / `policy_dir`) and brings its recipe along.
`fetch_hub_model` is the one place a hub name becomes a local directory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rprm_ray.data import DataError

if TYPE_CHECKING:
    from rprm_ray.config import Recipe

Role = Literal["judge", "policy"]


@dataclass(frozen=True)
class ModelSource:
    model_dir: str
    origin: str  # "model", "run <dir>", "hub <name>": said on progress lines
    recipe: Recipe | None = None  # the run's recipe, when a run directory was given
    run_dir: Path | None = None


def looks_like_hub_name(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/")


def fetch_hub_model(name: str, what: str) -> str:
    """A hub model's local snapshot directory, through the project's one model resolution
    (`rprm_ray.hub.resolve_model`: the HF cache, once per process, offline from the cache)."""
    from rprm_ray.hub import ModelResolutionError, resolve_model

    try:
        return str(resolve_model(name, where=what))
    except ModelResolutionError as exc:  # offline, unknown repo, gated repo: all end the same way
        raise DataError(f"no such directory, and {exc}") from None


def run_recipe(run_dir: Path, what: str) -> tuple[Any, Recipe]:
    """(manifest, recipe) of a run directory."""
    from rprm_ray.config import RecipeError, recipe_from_dict
    from rprm_ray.manifest import Manifest, ManifestError

    try:
        manifest = Manifest.load(run_dir)
        return manifest, recipe_from_dict(manifest.data.get("recipe") or {}, source=str(manifest.path))
    except (ManifestError, RecipeError) as exc:
        raise DataError(f"{what} {run_dir}: {exc}") from None


def run_model_dir(state: dict[str, Any], key: str, recorded_run_dir: Path, run_dir: Path, what: str) -> Path:
    """The model directory manifest state `key` names. Stages record paths as the run saw them
    (`runs/<name>/...`, relative to where it started); the copy under `run_dir` wins, so a run is
    usable from anywhere."""
    stored = state.get(key)
    if not stored:
        raise DataError(
            f"{what} {run_dir}: the run has no {'policy' if key == 'policy_dir' else 'trained judge'} yet "
            f"(manifest.json state has no {key!r}; finish the run's {key.split('_')[0]} stages first)"
        )
    tried = []
    with contextlib.suppress(ValueError):
        tried.append(run_dir / Path(stored).relative_to(recorded_run_dir))
    tried.append(Path(stored))
    for candidate in tried:
        if (candidate / "config.json").is_file():
            return candidate
    raise DataError(
        f"{what} {run_dir}: the run's {key} {stored} is not a model directory "
        f"(looked for config.json in {', '.join(str(p) for p in dict.fromkeys(tried))})"
    )


def resolve_model(text: str, role: Role, what: str) -> ModelSource:
    """`text` as a model directory (has config.json), a run directory (has manifest.json: its
    latest `role` weights; for the judge of a self-judging run, the policy) or a hub name. `what`
    names the argument in error messages ("--judge", "JUDGE", ...)."""
    path = Path(text)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(str(path.resolve()), "model")
        if (path / "manifest.json").is_file():
            manifest, recipe = run_recipe(path, what)
            state = manifest.state
            key = "policy_dir" if role == "policy" or (recipe.judge_model is None and "judge_dir" not in state) else "judge_dir"
            model_dir = run_model_dir(state, key, recipe.run_dir, path, what)
            return ModelSource(str(model_dir.resolve()), f"run {path}", recipe, path)
        raise DataError(f"{what} {text}: neither a model directory (no config.json) nor a run directory (no manifest.json)")
    if path.exists():
        raise DataError(f"{what} {text}: not a directory")
    if looks_like_hub_name(text):
        return ModelSource(fetch_hub_model(text, what), f"hub {text}")
    raise DataError(f"{what} {text}: no such model or run directory")
