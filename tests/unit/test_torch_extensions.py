"""Each Python environment builds DeepSpeed's JIT ops into a directory of its own."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rprm_ray.training import torch_extensions_dir, use_own_torch_extensions_dir


def test_the_directory_follows_the_deepspeed_install_and_the_cache_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    here = torch_extensions_dir()
    assert here.parent == tmp_path / "torch_extensions" and here.name.startswith("rprm-ray-")
    assert torch_extensions_dir() == here

    class Elsewhere:  # the same package imported from another checkout's environment
        origin = "/other/checkout/.venv/lib/python3.11/site-packages/deepspeed/__init__.py"

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: Elsewhere)
    assert torch_extensions_dir() != here


def test_a_user_setting_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    use_own_torch_extensions_dir()
    assert Path(os.environ["TORCH_EXTENSIONS_DIR"]) == tmp_path / "mine"
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    use_own_torch_extensions_dir()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(torch_extensions_dir())
