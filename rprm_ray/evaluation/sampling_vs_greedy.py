"""Where K sampled critiques and the greedy critique decide a step differently, and who is right.

R-PRM's inference-time scaling averages P(Yes) over K sampled critiques of a step. That beats the
greedy critique only where the greedy one is wrong and most of the sampled mass is right: the
greedy path and the bulk of the distribution part ways. Where the greedy critique is wrong with
confidence (its R line works a digit out wrongly and the samples mostly do the same), averaging
cannot repair it; where it is right, every sample that slips adds a chance of breaking it. So the
K-curve is explained by two counts over the labeled steps:

- `fixed`: steps the greedy critique decides wrongly and the K-sample mean decides rightly;
- `broken`: steps the greedy critique decides rightly and the K-sample mean decides wrongly;

K samples beat greedy at the step level exactly when fixed > broken. A step is decided "right"
when (score >= threshold) equals its label; the score is `judging.step_score_rows`' (the judge's
`score` mode over valid critiques). Steps with no valid critique on either side count as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rprm_ray.judging import ScoreMode, step_score_rows
from rprm_ray.scoring import step_score


@dataclass(frozen=True)
class SamplingVsGreedy:
    k: int
    steps: int
    greedy_wrong: int
    fixed: int  # greedy wrong, K-sample mean right
    broken: int  # greedy right, K-sample mean wrong
    sampled_critiques: int
    sampled_critiques_wrong: int  # single sampled critiques deciding their step wrongly

    @property
    def sample_error_rate(self) -> float:
        """Share of single sampled critiques that decide their step wrongly (percent)."""
        return 100.0 * self.sampled_critiques_wrong / self.sampled_critiques if self.sampled_critiques else 0.0

    @property
    def greedy_error_rate(self) -> float:
        return 100.0 * self.greedy_wrong / self.steps if self.steps else 0.0


def _decided_right(critiques: pa.Table, mode: ScoreMode, threshold: float) -> dict[tuple[str, int], bool]:
    """Per (solution_id, step_idx): whether the step's score decides its label rightly."""
    labels = {(r["solution_id"], r["step_idx"]): r["label"]
              for r in critiques.select(["solution_id", "step_idx", "label"]).to_pylist()}
    decided = {}
    for r in step_score_rows(critiques, mode, where="sampling_vs_greedy").to_pylist():
        key = (r["solution_id"], r["step_idx"])
        decided[key] = r["score"] is not None and (r["score"] >= threshold) == labels[key]
    return decided


def sampling_vs_greedy(greedy: pa.Table, sampled: pa.Table, k: int, mode: ScoreMode = "p_yes",
                       threshold: float = 0.5) -> SamplingVsGreedy:
    """Compare the greedy critiques with the first `k` sampled critiques (`sample_idx` < k) of
    the same labeled steps (both `critiques` tables with their `label` column)."""
    first_k = sampled.filter(pc.less(sampled.column("sample_idx"), k))
    greedy_right = _decided_right(greedy, mode, threshold)
    mean_right = _decided_right(first_k, mode, threshold)
    singles = (step_score([r["p_yes"]], [r["verdict"] if r["valid"] else None], mode)
               for r in first_k.select(["p_yes", "verdict", "valid"]).to_pylist())
    singles_wrong = sum(score is None or (score >= threshold) != label
                        for score, label in zip(singles, first_k.column("label").to_pylist(), strict=True))
    keys = list(greedy_right)
    return SamplingVsGreedy(
        k=k, steps=len(keys),
        greedy_wrong=sum(not greedy_right[key] for key in keys),
        fixed=sum(not greedy_right[key] and mean_right.get(key, False) for key in keys),
        broken=sum(greedy_right[key] and not mean_right.get(key, False) for key in keys),
        sampled_critiques=first_k.num_rows, sampled_critiques_wrong=singles_wrong)
