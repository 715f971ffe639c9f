"""Per-role counters and gauges for the Ray dashboard (`ray.util.metrics`), shared by all actors.

Every metric is named `rprm_<name>` and tagged with the role (and the replica, where there are
several), so the dashboard can break a number down by role. Ray rejects increments of zero or
less; those are skipped here, so callers can pass counts straight through. Running totals are
kept locally too (`totals`), which is what an actor's `stats()` returns and what tests read.
"""

from __future__ import annotations

import re

from ray.util import metrics

TAG_KEYS = ("role", "replica")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# One metric object per name and process: Ray wants a single definition per metric name.
_counters: dict[str, metrics.Counter] = {}
_gauges: dict[str, metrics.Gauge] = {}


def _metric_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r}: use letters, digits and underscores")
    return f"rprm_{name}"


def _counter(name: str) -> metrics.Counter:
    full = _metric_name(name)
    if full not in _counters:
        _counters[full] = metrics.Counter(full, description=name.replace("_", " "), tag_keys=TAG_KEYS)
    return _counters[full]


def _gauge(name: str) -> metrics.Gauge:
    full = _metric_name(name)
    if full not in _gauges:
        _gauges[full] = metrics.Gauge(full, description=name.replace("_", " "), tag_keys=TAG_KEYS)
    return _gauges[full]


class RoleMetrics:
    """Counters and gauges of one role (and replica)."""

    def __init__(self, role: str, replica: str = ""):
        self.tags = {"role": role, "replica": replica}
        self.totals: dict[str, float] = {}

    def count(self, name: str, value: float = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + value
        if value > 0:
            _counter(name).inc(value, tags=self.tags)

    def rows(self, rows_in: int, rows_out: int) -> None:
        """Rows a call received and returned."""
        self.count("rows_in", rows_in)
        self.count("rows_out", rows_out)

    def gauge(self, name: str, value: float) -> None:
        self.totals[name] = value
        _gauge(name).set(value, tags=self.tags)
