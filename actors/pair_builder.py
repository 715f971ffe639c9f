"""PairBuilder: the Ray actor that turns judgments into DPO preference pairs.

All logic lives in `rprm_ray.pairs`; this actor validates what crosses its boundary, counts what it
built for the dashboard, and keeps the seed so retries build the same pairs.
"""

from __future__ import annotations

import pyarrow as pa
import ray

from actors.metrics import RoleMetrics
from rprm_ray import batches, pairs
from rprm_ray.config import PairsConfig

ROLE = "PairBuilder"


# Its calls are pure functions of their input and the seed: a restarted actor (and a retried call)
# gives the same pairs.
@ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3)
class PairBuilder:
    def __init__(self, pairs_cfg: PairsConfig, style_name: str):
        self.cfg = pairs_cfg
        self.style_name = style_name
        self.metrics = RoleMetrics("pair_builder")

    def critique_pairs(self, critiques: pa.Table) -> pa.Table:
        """R-PRM: per labeled step, agreeing critiques = chosen, disagreeing = rejected."""
        critiques = batches.validate(critiques, "critiques", where=f"{ROLE}.critique_pairs")
        out = pairs.critique_pairs(
            critiques,
            max_pairs_per_step=self.cfg.max_pairs_per_step,
            balance_verdicts=self.cfg.balance_verdicts,
            paper_filter=self.cfg.paper_filter,
            seed=self.cfg.seed,
        )
        self.metrics.rows(critiques.num_rows, out.num_rows)
        self.metrics.count("pairs_built", out.num_rows)
        return out

    def step_pairs(self, candidates: pa.Table, judgments: pa.Table) -> tuple[pa.Table, pa.Table]:
        """PSRLM: (best, worst) step per prefix by pairwise wins; ties give no pair (rollback)."""
        candidates = batches.validate(candidates, "candidates", where=f"{ROLE}.step_pairs")
        judgments = batches.validate(judgments, "pairwise_judgments", where=f"{ROLE}.step_pairs")
        out, outcomes = pairs.step_pairs(candidates, judgments, style=self.style_name)
        self.metrics.rows(candidates.num_rows, out.num_rows)
        self.metrics.count("pairs_built", out.num_rows)
        return out, outcomes
