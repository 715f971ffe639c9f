"""The run directory's manifest: which stages finished, what they wrote, what they measured.

`runs/<name>/manifest.json` is rewritten atomically after every stage, so a run killed at any
moment resumes from the last finished stage and never trusts a half-written output.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any


class ManifestError(RuntimeError):
    pass


def non_finite_metrics(metrics: Any, prefix: str = "") -> list[str]:
    """Dotted names of the NaN / infinite numbers in a (nested) metrics mapping."""
    if isinstance(metrics, dict):
        return [bad for k, v in metrics.items()
                for bad in non_finite_metrics(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(metrics, (list, tuple)):
        return [bad for i, v in enumerate(metrics) for bad in non_finite_metrics(v, f"{prefix}.{i}")]
    # numbers.Real covers numpy scalars too (np.float32 is no subclass of float).
    if isinstance(metrics, numbers.Real) and not isinstance(metrics, int) and not math.isfinite(float(metrics)):
        return [f"{prefix}={float(metrics)}"]
    return []


def recipe_fingerprint(recipe_json: dict[str, Any]) -> str:
    text = json.dumps(recipe_json, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted fields where two recipe dumps differ, as `field: old -> new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{where}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
            else:
                out.extend(recipe_differences(old[key], new[key], where))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, recipe_json: dict[str, Any]) -> Manifest:
        m = cls(
            run_dir / "manifest.json",
            {
                "recipe_fingerprint": recipe_fingerprint(recipe_json),
                "recipe": recipe_json,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "stages": {},
                "state": {},
            },
        )
        m.save()
        return m

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        path = run_dir / "manifest.json"
        if not path.is_file():
            raise ManifestError(f"{run_dir}: no manifest.json; is this a run directory?")
        # Never replaced silently: the manifest is the only record of which stages finished.
        advice = ("its finished stages cannot be known: restore it from a copy, or start a new run "
                  "with --set name=...")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: corrupt manifest (not UTF-8 at byte {exc.start}); {advice}") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: corrupt manifest (line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg}); {advice}") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict) \
                or not isinstance(data.get("state"), dict) or "recipe_fingerprint" not in data:
            raise ManifestError(f"{path}: corrupt manifest (no stages / state / recipe_fingerprint); {advice}")
        for key, entry in data["stages"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("outputs"), dict)
                    and isinstance(entry.get("metrics"), dict)):
                raise ManifestError(f"{path}: corrupt entry for stage {key}; rerun it with --rerun {key}")
        return cls(path, data)

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def is_done(self, key: str) -> bool:
        return key in self.data["stages"]

    def stage(self, key: str) -> dict[str, Any]:
        return self.data["stages"][key]

    def record(self, key: str, outputs: dict[str, str], metrics: dict[str, Any], seconds: float,
               state: dict[str, Any]) -> None:
        bad = non_finite_metrics(metrics)
        if bad:
            raise ManifestError(f"stage {key}: non-finite metrics ({', '.join(bad[:4])}): "
                                f"not recorded as finished")
        self.data["stages"][key] = {
            "outputs": outputs,
            "metrics": metrics,
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "state": state,  # this stage's own contribution: `forget` replays what remains
        }
        # `state` is what later stages need to continue (current policy / judge model dirs).
        self.data["state"].update(state)
        self.save()

    def forget(self, key: str) -> list[str]:
        """Forget stage `key` and every stage recorded after it (they were computed from its
        outputs), so a resume reruns them. The run state is rebuilt from the stages that remain.
        Returns the forgotten keys."""
        keys = list(self.data["stages"])
        if key not in keys:
            known = ", ".join(keys) or "none"
            raise ManifestError(f"{self.path}: no finished stage {key!r} to rerun (finished: {known})")
        kept, dropped = keys[: keys.index(key)], keys[keys.index(key):]
        if any("state" not in self.data["stages"][k] for k in kept):
            raise ManifestError(f"{self.path}: written by an older version (no per-stage state): "
                                f"start a new run instead of rerunning {key}")
        state: dict[str, Any] = {}
        for k in kept:
            state.update(self.data["stages"][k]["state"])
        for k in dropped:
            del self.data["stages"][k]
        self.data["state"] = state
        self.save()
        return dropped

    @property
    def state(self) -> dict[str, Any]:
        return self.data["state"]

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {k: v["metrics"] for k, v in self.data["stages"].items()}
