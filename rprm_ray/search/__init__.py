"""PRM-guided search, engine- and judge-agnostic: every strategy takes
(problems, generator, judge, cfg, style) and returns a results table (base.RESULTS_SCHEMA),
advancing the whole batch of prompts with one generator call and one judge call per level."""

from __future__ import annotations

from rprm_ray.search.base import RESULTS_SCHEMA, PairwiseJudge, StepGenerator, StepScorer, accuracy
from rprm_ray.search.beam import run_beam
from rprm_ray.search.best_of_n import run_best_of_n
from rprm_ray.search.greedy import greedy_search, run_greedy
from rprm_ray.search.self_judged import run_self_judged, self_judged_search

# strategy name (SearchConfig.strategy) -> function; self_judged needs a PairwiseJudge, the
# others a StepScorer.
STRATEGIES = {
    "bon": run_best_of_n,
    "beam": run_beam,
    "greedy": run_greedy,
    "self_judged": run_self_judged,
}

__all__ = [
    "RESULTS_SCHEMA",
    "STRATEGIES",
    "PairwiseJudge",
    "StepGenerator",
    "StepScorer",
    "accuracy",
    "greedy_search",
    "run_beam",
    "run_best_of_n",
    "run_greedy",
    "run_self_judged",
    "self_judged_search",
]
