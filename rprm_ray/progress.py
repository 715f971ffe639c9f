"""Progress bars for long work, readable both on a terminal and in forwarded logs."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar on stderr. Off a terminal (a Ray actor's forwarded log, CI, a captured
    subprocess) stderr is a pipe read line by line: redraw every 15 s there, or the log fills
    with ten progress lines a second."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                mininterval=0.1 if interactive else 15.0)
