"""How well a self-rewarding policy judges its own candidate steps (the psrlm report's pairwise
accuracy), without Ray.

The pairs are the policy's own: candidate next steps it sampled after one prefix, labelled by the
world's step labeler for this evaluation only (the search never sees a label). A pair is kept
when exactly one of its two steps is right, the only pairs with a right answer to the question
"which step is better". Each pair is judged in both orders (AB, BA); a judgment is right when
it names the right step, and an invalid judgment (no single `[[A]]`/`[[B]]`) is wrong.

- accuracy: right judgments / all judgments (both orders of every pair);
- pair accuracy: pairs judged right in both orders / pairs;
- position consistency: pairs whose two valid judgments name the same step / pairs judged validly
  in both orders (`judging.pairwise_counts`' rate);
- slot-A rate: valid judgments naming slot A / valid judgments (0.5 for a judge without position
  bias, since every pair is shown both ways);
- own step against greedy step (`OwnStepAccuracy`): at the judged prefixes, how often the step the
  judge works out for itself (its `R:` line) is right, beside the policy's greedy step there;
- overrule precision (`GreedyOverrules`): of the valid judgments of pairs holding the policy's own
  greedy next step, those naming the other step, and how often that step is the right one. Only
  these judgments can change greedy decoding through step DPO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from rprm_ray import batches

# (question, previous steps, step) -> is the step right? (e.g. the arith world's expected step)
StepLabeler = Callable[[str, list[str], str], bool]


def discordant_pairs(candidates: pa.Table, is_right: StepLabeler,
                     max_pairs_per_prefix: int | None = None) -> tuple[pa.Table, dict[str, int]]:
    """Pairs of distinct candidates of one prefix with exactly one right step, as a `candidates`
    table of two rows per pair (its own prefix_id `<prefix_id>|<a>-<b>`, candidate ids kept), and
    {pair prefix_id: candidate_id of the right step}. `judging.pairwise_requests` on the table
    asks for every pair in both orders. Identical step texts count once (the search filters
    duplicates too); at most `max_pairs_per_prefix` pairs per prefix, in candidate order."""
    table = batches.validate(candidates, "candidates", where="discordant_pairs")
    by_prefix: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_prefix.setdefault(row["prefix_id"], []).append(row)
    rows: list[dict] = []
    right_of: dict[str, int] = {}
    for prefix_id, group in by_prefix.items():
        distinct: dict[str, dict] = {}
        for row in sorted(group, key=lambda r: r["candidate_id"]):
            if row["step"].strip():
                distinct.setdefault(row["step"].strip(), row)
        labelled = [(row, is_right(row["question"], list(row["prefix_steps"]), row["step"]))
                    for row in distinct.values()]
        kept = 0
        for i, (a, a_ok) in enumerate(labelled):
            for b, b_ok in labelled[i + 1:]:
                if a_ok == b_ok or (max_pairs_per_prefix is not None and kept >= max_pairs_per_prefix):
                    continue
                kept += 1
                pair_id = f"{prefix_id}|{a['candidate_id']}-{b['candidate_id']}"
                rows += [{**a, "prefix_id": pair_id}, {**b, "prefix_id": pair_id}]
                right_of[pair_id] = a["candidate_id"] if a_ok else b["candidate_id"]
    out = batches.from_rows(rows, "candidates") if rows else batches.empty("candidates")
    return out, right_of


def _prefix_of(pair_id: str) -> str:
    """The prefix a `discordant_pairs` pair was drawn at (its id is `<prefix_id>|<a>-<b>`)."""
    return pair_id.rsplit("|", 1)[0]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class SelfJudgeAccuracy:
    pairs: int
    judgments: int
    right: int  # judgments naming the right step
    invalid: int
    both_orders_right: int
    consistent: int  # pairs whose two valid judgments agree
    consistent_checked: int  # pairs judged validly in both orders
    slot_a: int  # valid judgments naming slot A
    # Per pair, the share of its judgments that name the right step (for the interval).
    per_pair: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def accuracy(self) -> float | None:
        return _share(self.right, self.judgments)

    @property
    def pair_accuracy(self) -> float | None:
        return _share(self.both_orders_right, self.pairs)

    @property
    def position_consistency(self) -> float | None:
        return _share(self.consistent, self.consistent_checked)

    @property
    def slot_a_rate(self) -> float | None:
        return _share(self.slot_a, self.judgments - self.invalid)

    def accuracy_interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """Bootstrap interval of the accuracy in percent, resampling pairs (a pair's two orders
        are not independent judgments)."""
        if not self.per_pair:
            return None
        from rprm_ray.evaluation.stats import mean_interval

        return mean_interval(self.per_pair, level=level)

    def as_dict(self) -> dict[str, float | int | None]:
        counts = {name: getattr(self, name) for name in ("pairs", "judgments", "right", "invalid",
                                                         "both_orders_right", "consistent", "consistent_checked",
                                                         "slot_a")}
        interval = self.accuracy_interval()
        return {**counts, "accuracy": self.accuracy, "pair_accuracy": self.pair_accuracy,
                "position_consistency": self.position_consistency, "slot_a_rate": self.slot_a_rate,
                "accuracy_interval": list(interval) if interval else None}

    def text(self) -> str:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        return (f"accuracy {pct(self.accuracy)} ({self.right}/{self.judgments} judgments, {self.invalid} invalid); "
                f"right in both orders {pct(self.pair_accuracy)} of {self.pairs} pairs; position consistency "
                f"{pct(self.position_consistency)} ({self.consistent}/{self.consistent_checked}); slot A named in "
                f"{pct(self.slot_a_rate)} of valid judgments")


def self_judge_accuracy(judgments: pa.Table, right_of: dict[str, int]) -> SelfJudgeAccuracy:
    """Score `pairwise_judgments` of the pairs `discordant_pairs` made (`right_of` from it). A
    judgment of a pair it does not know is an error: the figures would silently mix pairs."""
    table = batches.validate(judgments, "pairwise_judgments", where="self_judge_accuracy")
    by_pair: dict[str, dict[str, dict]] = {}
    right = invalid = slot_a = 0
    for i, row in enumerate(table.to_pylist()):
        if row["prefix_id"] not in right_of:
            raise batches.BatchError(f"self_judge_accuracy: pairwise_judgments row {i} judges prefix_id "
                                     f"{row['prefix_id']!r}, which is not one of the labelled pairs")
        by_pair.setdefault(row["prefix_id"], {})[row["order"]] = row
        if not row["valid"]:
            invalid += 1
            continue
        right += row["winner"] == right_of[row["prefix_id"]]
        in_slot_a = row["candidate_a"] if row["order"] == "AB" else row["candidate_b"]
        slot_a += row["winner"] == in_slot_a
    both = consistent = checked = 0
    per_pair = []
    for pair_id, orders in by_pair.items():
        winners = [orders[o]["winner"] if orders[o]["valid"] else None for o in ("AB", "BA") if o in orders]
        if len(winners) == 2 and None not in winners:
            checked += 1
            consistent += winners[0] == winners[1]
        both += len(winners) == 2 and all(w == right_of[pair_id] for w in winners)
        per_pair.append(sum(w == right_of[pair_id] for w in winners) / len(winners))
    return SelfJudgeAccuracy(pairs=len(right_of), judgments=table.num_rows, right=right, invalid=invalid,
                             both_orders_right=both, consistent=consistent, consistent_checked=checked,
                             slot_a=slot_a, per_pair=tuple(per_pair))


@dataclass(frozen=True)
class GreedyOverrules:
    """The judgments of pairs in which one candidate is the policy's own greedy next step: the
    only judgments through which step DPO can change what greedy decoding writes. Naming the
    other step overrules the policy; an overrule is right exactly when the greedy step was the
    wrong one. Step DPO on self-judged pairs can lift greedy pass@1 only if overrules are right
    well over half the time (`precision`); `catch_rate` is the share of the greedy step's
    mistakes that the judge catches."""

    judgments: int  # valid judgments of pairs holding the greedy step
    overrules: int  # of those, naming the other step
    greedy_wrong: int  # valid judgments of pairs whose greedy step is the wrong one
    caught: int  # of those, naming the right step (= the right overrules)

    @property
    def precision(self) -> float | None:
        return _share(self.caught, self.overrules)

    @property
    def catch_rate(self) -> float | None:
        return _share(self.caught, self.greedy_wrong)


def greedy_overrules(judgments: pa.Table, pairs: pa.Table, right_of: dict[str, int],
                     greedy_next: dict[str, str]) -> GreedyOverrules:
    """Count `GreedyOverrules` over `pairwise_judgments` of the pairs `discordant_pairs` made
    (`pairs`, `right_of`), given the greedy next step of each original prefix (`greedy_next`,
    {prefix_id: step}; the pairs' ids are `<prefix_id>|<a>-<b>`)."""
    greedy_id: dict[str, int] = {}
    for row in pairs.to_pylist():
        prefix_id = _prefix_of(row["prefix_id"])
        if prefix_id in greedy_next and row["step"].strip() == greedy_next[prefix_id].strip():
            greedy_id[row["prefix_id"]] = row["candidate_id"]
    counted = overrules = greedy_wrong = caught = 0
    for row in judgments.to_pylist():
        greedy = greedy_id.get(row["prefix_id"])
        if greedy is None or not row["valid"]:
            continue
        counted += 1
        overrules += row["winner"] != greedy
        if right_of[row["prefix_id"]] != greedy:
            greedy_wrong += 1
            caught += row["winner"] != greedy
    return GreedyOverrules(judgments=counted, overrules=overrules, greedy_wrong=greedy_wrong, caught=caught)


@dataclass(frozen=True)
class OwnStepAccuracy:
    """At the prefixes whose candidate pairs the judge compared: how often the step it works out
    for itself (the compact judge's `R:` line, which its verdicts follow) is right, beside how
    often the policy's own greedy step there is right. A self-judge can only improve on its
    policy where its own step is the better of the two."""

    prefixes: int
    own_right: int
    greedy_right: int

    @property
    def own_accuracy(self) -> float | None:
        return _share(self.own_right, self.prefixes)

    @property
    def greedy_accuracy(self) -> float | None:
        return _share(self.greedy_right, self.prefixes)


def own_step_accuracy(judgments: pa.Table, pairs: pa.Table, greedy_next: dict[str, str], is_right: StepLabeler,
                      read_own_step: Callable[[str], str | None]) -> OwnStepAccuracy | None:
    """`OwnStepAccuracy` over the original prefixes (of `greedy_next`, which have a greedy next
    step) of the judged pairs; the judge's own step is read from the first judgment of each
    prefix (greedy: every judgment of a prefix opens with the same line). None when
    `read_own_step` finds no such line in any judgment."""
    context = {_prefix_of(r["prefix_id"]): (r["question"], list(r["prefix_steps"])) for r in pairs.to_pylist()}
    own: dict[str, str | None] = {}
    for row in judgments.to_pylist():
        prefix_id = _prefix_of(row["prefix_id"])
        if prefix_id in greedy_next and prefix_id not in own:
            own[prefix_id] = read_own_step(row["judgment"])
    if not any(step is not None for step in own.values()):
        return None
    own_right = greedy_right = 0
    for prefix_id, step in own.items():
        question, prefix = context[prefix_id]
        own_right += step is not None and is_right(question, prefix, step)
        greedy_right += is_right(question, prefix, greedy_next[prefix_id])
    return OwnStepAccuracy(prefixes=len(own), own_right=own_right, greedy_right=greedy_right)


def greedy_next_steps(solutions: pa.Table, prefixes: pa.Table) -> dict[str, str]:
    """{prefix_id: the greedy solution's next step} for `own_prefixes`' prefixes of `solutions`
    (a prefix past the solution's last step has none)."""
    steps = {s["problem_id"]: list(s["steps"]) for s in solutions.to_pylist()}
    out = {}
    for p in prefixes.to_pylist():
        k = len(p["prefix_steps"])
        if k < len(steps[p["problem_id"]]):
            out[p["prefix_id"]] = steps[p["problem_id"]][k]
    return out


def own_prefixes(solutions: pa.Table, style) -> pa.Table:
    """The prefixes at which the policy's own candidates are sampled: per solution the empty
    prefix (the first step, even after a solution with no readable step), then one per step up to
    its final step, as a `prefixes` table (prefix_id `<problem_id>/<k>`)."""
    table = batches.validate(solutions, "solutions", where="own_prefixes")
    rows = []
    for sol in table.to_pylist():
        steps = list(sol["steps"])
        cut = next((k + 1 for k, step in enumerate(steps) if style.is_final_step(step)), len(steps))
        for k in range(max(1, cut)):
            rows.append({"problem_id": sol["problem_id"], "prefix_id": f"{sol['problem_id']}/{k}",
                         "question": sol["question"], "prefix_steps": steps[:k]})
    return batches.from_rows(rows, "prefixes") if rows else batches.empty("prefixes")


def measure_self_judge(generator, judge, style, problems: pa.Table, is_right: StepLabeler, w: int, sampling,
                       greedy, max_pairs_per_prefix: int | None = None,
                       read_own_step: Callable[[str], str | None] | None = None
                       ) -> tuple[SelfJudgeAccuracy, GreedyOverrules, OwnStepAccuracy | None, pa.Table, dict]:
    """Through the roles (`search.base.StepGenerator`, `PairwiseJudge`): the policy's greedy
    solution of each problem, w candidates (`sampling`, as the search samples) at each of its
    prefixes, and the judge's comparison of every discordant pair in both orders. Returns the
    figures, the overrules of the greedy step, the judge's own step against the greedy one (with
    `read_own_step`, else None), the `pairwise_judgments`, and counts of prefixes and candidates."""
    solutions = generator.generate(problems, n=1, sampling=greedy)
    prefixes = own_prefixes(solutions, style)
    candidates = generator.expand(prefixes, w, sampling)
    pairs, right_of = discordant_pairs(candidates, is_right, max_pairs_per_prefix)
    judgments = (batches.validate(judge.compare(pairs), "pairwise_judgments", where="judge.compare")
                 if pairs.num_rows else batches.empty("pairwise_judgments"))
    counts = {"problems": problems.num_rows, "prefixes": prefixes.num_rows, "candidates": candidates.num_rows}
    greedy_next = greedy_next_steps(solutions, prefixes)
    overrules = greedy_overrules(judgments, pairs, right_of, greedy_next)
    own = own_step_accuracy(judgments, pairs, greedy_next, is_right, read_own_step) if read_own_step else None
    return self_judge_accuracy(judgments, right_of), overrules, own, judgments, counts


def judge_own_pairs(engine, style, candidates: pa.Table, is_right: StepLabeler, sampling,
                    max_pairs_per_prefix: int | None = None) -> tuple[SelfJudgeAccuracy, pa.Table]:
    """The policy (`engine`) judges the discordant pairs of its own `candidates` in both orders,
    the way the search's judge does (`judging.write_pairwise`, `sampling` = the judge's);
    returns the figures and the `pairwise_judgments`."""
    from rprm_ray import judging

    pairs, right_of = discordant_pairs(candidates, is_right, max_pairs_per_prefix)
    requests = judging.pairwise_requests(pairs, where="judge_own_pairs")
    judgments = judging.pairwise_rows(requests, judging.write_pairwise(engine, style, requests, sampling),
                                      where="judge_own_pairs")
    return self_judge_accuracy(judgments, right_of), judgments
