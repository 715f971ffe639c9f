"""How sure is a difference of two accuracies measured on the same problems?

On 400 held-out problems one accuracy figure moves by about +-2 points between sampling seeds, so
the report prints each compared pair with a paired bootstrap interval: problems are resampled
with replacement (the same resample for both sides, which keeps their per-problem correlation)
and the difference of the means is read at the interval's quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) in percentage points, with its bootstrap interval."""

    points: float
    low: float
    high: float
    level: float
    problems: int

    def as_dict(self) -> dict[str, float]:
        return {"points": self.points, "low": self.low, "high": self.high, "level": self.level,
                "problems": self.problems}

    def text(self) -> str:
        return f"{self.points:+.1f} points, {self.level:.0%} CI [{self.low:+.1f}, {self.high:+.1f}]"


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> Difference:
    """`a` and `b`: per-problem scores in [0, 1] (1/0 correctness, or a fraction of samples
    correct), aligned problem by problem."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} scores against {len(b)}; pair them by problem")
    if not a:
        raise ValueError("paired_difference: no problems")
    if not 0 < level < 1:
        raise ValueError(f"paired_difference: level {level} is not in (0, 1)")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Difference(100 * float(diff.mean()), 100 * float(low), 100 * float(high), level, len(diff))


def mean_interval(scores: Sequence[float], *, resamples: int = 10_000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval, in percent, of the mean of per-item scores in [0, 1]."""
    d = paired_difference(scores, [0.0] * len(scores), resamples=resamples, level=level, seed=seed)
    return d.low, d.high
