"""The README's commands work as written.

Every `rprm-ray ...` line in the README's bash blocks names a subcommand that exists and options its
parser accepts (synopsis lines with placeholders are checked this way); the cheap ones that need no
cluster, model or network (`--dry-run`, `--help`, `--version`) are run for real. `make` targets the
README shows exist in the Makefile."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def logical_lines(block: str) -> list[str]:
    """Lines with backslash continuations joined and trailing comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


def readme_commands() -> list[str]:
    return [ln for b in bash_blocks(README.read_text()) for ln in logical_lines(b)]


def rprm_lines() -> list[str]:
    return [ln for ln in readme_commands() if ln.startswith("rprm-ray ")]


def options_of(line: str) -> tuple[list[str], list[str]]:
    """(subcommand words, --options) of a synopsis line; placeholders and alternatives ignored."""
    words = re.sub(r"[\[\]()|]", " ", line).split()[1:]
    sub = []
    for w in words:
        if w.startswith("-") or not re.fullmatch(r"[a-z][a-z_-]*", w):
            break
        sub.append(w)
    opts = sorted({m for m in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", line)})
    return sub, opts


def help_text(words: list[str]) -> str:
    from rprm_ray.cli import build_parser

    parser = build_parser()
    # Walk the subparsers the way argparse would, to the deepest parser the words name.
    current = parser
    for w in words:
        actions = [a for a in current._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not actions or w not in actions[0].choices:
            break
        current = actions[0].choices[w]
    return current.format_help()


def test_readme_has_the_two_quick_start_commands():
    cmds = readme_commands()
    assert "make demo" in cmds and "make test" in cmds
    makefile = (REPO / "Makefile").read_text()
    for target in {c.split()[1] for c in cmds if c.startswith("make ")}:
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"Makefile has no target {target}"


@pytest.mark.parametrize("line", rprm_lines())
def test_readme_rprm_line_names_real_subcommands_and_options(line: str):
    words, opts = options_of(line)
    from rprm_ray.cli import COMMANDS

    if not words:  # a top-level option (`rprm-ray --version`)
        top = help_text([])
        for opt in opts:
            assert opt in top, f"README line uses {opt}, which `rprm-ray --help` does not list: {line}"
        return

    assert words[0] in COMMANDS, f"README shows unknown command {words[0]!r}: {line}"
    text = help_text(words)
    for opt in opts:
        if opt in ("-h",):
            continue
        assert opt in text, f"README line uses {opt}, which `rprm-ray {' '.join(words)} --help` does not list: {line}"


def cheap(line: str) -> bool:
    return ("--dry-run" in line or line.endswith("--help") or line.endswith("--version")) and not re.search(
        r"[A-Z_]{3,}|<|\$", line.split(" --")[0]
    )


@pytest.mark.parametrize("line", [ln for ln in rprm_lines() if cheap(ln)])
def test_readme_cheap_commands_run(line: str):
    args = shlex.split(line)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "rprm_ray.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"`{line}` exited {proc.returncode}: {proc.stderr[-2000:]}"


def test_readme_speaks_of_the_project_only():
    text = README.read_text()
    assert not re.search(r"\bsession \d+\b", text, flags=re.I), "README mentions a work session"
    assert not re.search(r"`(w\d+|jp\d+|v\d)`", text), "README names an internal run"
    assert "/tmp/" not in text and "/work/" not in text, "README names a machine path"
