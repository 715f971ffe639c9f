"""The run directory's manifest: which stages finished, what they wrote, what they measured.

`runs/<name>/manifest.json` is rewritten atomically after every stage, so a run killed at any
moment resumes from the last finished stage and never trusts a half-written output.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any


class ManifestError(RuntimeError):
    pass


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
        try:
            return cls(path, json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from None

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def is_done(self, key: str) -> bool:
        return key in self.data["stages"]

    def stage(self, key: str) -> dict[str, Any]:
        return self.data["stages"][key]

    def record(self, key: str, outputs: dict[str, str], metrics: dict[str, Any], seconds: float,
               state: dict[str, Any]) -> None:
        self.data["stages"][key] = {
            "outputs": outputs,
            "metrics": metrics,
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # `state` is what later stages need to continue (current policy / judge model dirs).
        self.data["state"].update(state)
        self.save()

    @property
    def state(self) -> dict[str, Any]:
        return self.data["state"]

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {k: v["metrics"] for k, v in self.data["stages"].items()}
