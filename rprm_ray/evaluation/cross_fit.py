"""Choosing a setting without looking at the figure it will be reported with (two-fold
cross-fitting).

The items (problems, labeled solutions) fall in two halves by position (even, odd); each half
uses the option that scores best on the *other* half (ties: the earlier option). A figure over all
items with these per-item choices is an honest "with the setting chosen on held-out data": no item
takes part in choosing its own setting. Best-of-N's aggregation (`evaluation/bon.py`) and the
judge's critique temperature (`stages/judge.py`) are chosen this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Option = TypeVar("Option")


def cross_fitted_choice(items: Sequence[Item], options: Sequence[Option],
                        score: Callable[[Option, Sequence[Item]], float]) -> tuple[list[Option], tuple[Option, Option]]:
    """(the option each item uses, the option of the even half and of the odd half); `score`
    (option, items) -> a figure where higher is better."""
    if not options:
        raise ValueError("cross_fitted_choice: no options to choose from")
    halves = (items[0::2], items[1::2])

    def best_on(half: Sequence[Item]) -> Option:
        return max(options, key=lambda option: (score(option, half), -options.index(option)))

    used = (best_on(halves[1]), best_on(halves[0]))  # even items use the odd half's choice
    return [used[i % 2] for i in range(len(items))], used
