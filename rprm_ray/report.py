"""The run report: `metrics.json`, PNG plots, `report.html`, and the one-screen summary.

Everything is read back from the manifest, so a report can be rebuilt for any run directory
(finished, interrupted or resumed) without touching Ray.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import Any

from rprm_ray import report_html
from rprm_ray.evaluation.bon import smallest_n_within_budget
from rprm_ray.manifest import Manifest, write_json_atomic


def collect(manifest: Manifest) -> dict[str, Any]:
    """The headline figures of a run from its stage metrics."""
    stages = manifest.metrics()
    out: dict[str, Any] = {"stages": stages}
    acc = {}
    for key, m in stages.items():
        if key.endswith("/policy_eval") and "pass@1" in m:
            acc[int(key.split("/")[0].split("_")[1])] = m["pass@1"]
    if acc:
        out["pass@1_per_iteration"] = {str(k): acc[k] for k in sorted(acc)}
        out["pass@1_M1"] = acc[min(acc)]
        out["pass@1_final"] = acc[max(acc)]
        last = stages[f"iter_{max(acc)}/policy_eval"]
        if "vs_baseline" in last:
            out["pass@1_final_vs_M1"] = last["vs_baseline"]
    iterations = iteration_rows(stages)
    if iterations:
        out["iterations"] = iterations
        self_judge = {k: row["self_judge_accuracy"] for k, row in iterations.items()
                      if row.get("self_judge_accuracy") is not None}
        if self_judge:
            out["self_judge_accuracy_per_iteration"] = self_judge
        control = {k: row["sft_control_pass@1"] for k, row in iterations.items() if "sft_control_pass@1" in row}
        if control:
            out["sft_control_pass@1_per_iteration"] = {"0": out["pass@1_M1"], **control}
            out["pass@1_final_vs_sft_control"] = iterations[max(control, key=int)].get("vs_sft_control")
    judge = {}
    for phase in ("sft", "dpo"):
        m = stages.get(f"iter_0/judge_eval_{phase}")
        if m:
            judge[phase] = _judge_figures(m, phase, "")
            if f"{phase}_own_f1" in m:  # the policy's own mistakes (stages/own_mistakes.py)
                judge[phase].update(_judge_figures(m, f"{phase}_own", "own_"))
    if "dpo" in judge and "pairs" in stages.get("iter_0/judge_dpo", {}):
        judge["dpo"]["pairs"] = stages["iter_0/judge_dpo"]["pairs"]
    if judge:
        out["judge"] = judge
    bon = stages.get("final/best_of_n")
    if bon:
        out["best_of_n"] = {k: v for k, v in bon.items() if k.startswith(("bon", "weighted", "majority", "oracle", "pass@1"))
                            or k in ("best_aggregation", "aggregation_by_half", "candidate_steps", "candidate_steps_at_n",
                                   "problems")}
    beam = stages.get("final/beam")
    if beam:
        out["beam"] = beam
    timing = time_by_stage_kind(manifest.data["stages"])
    if timing:
        out["seconds_by_stage_kind"] = timing
    return out


def _judge_figures(metrics: dict[str, Any], prefix: str, name: str) -> dict[str, Any]:
    """One evaluation set's judge figures from a judge_eval stage's metrics (`prefix`_f1, ...),
    named `name`f1, `name`error_acc, `name`correct_acc and `name`f1_at_k ({K: F1})."""
    figures = {f"{name}f1": metrics[f"{prefix}_f1"], f"{name}error_acc": metrics[f"{prefix}_error_acc"],
               f"{name}correct_acc": metrics[f"{prefix}_correct_acc"],
               f"{name}f1_at_k": {k.rsplit("_k", 1)[1]: v for k, v in metrics.items()
                                  if k.startswith(f"{prefix}_f1_at_k")}}
    if f"{prefix}_temperature_by_half" in metrics:  # the critique temperature, chosen per half on the other
        figures[f"{name}temperature_by_half"] = metrics[f"{prefix}_temperature_by_half"]
    return figures


def iteration_rows(stages: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model M1, M2, ... (keyed by iteration, "0" = M1): its pass@1 and difference from M1,
    the search that produced it (problems, step pairs, rollbacks), in psrlm its self-judge's
    pairwise accuracy on its own held-out candidates, and with loop.sft_control the pass@1 of the
    SFT-spend control beside it and the model's difference from that control. Empty for a run
    with no iterations."""
    rows: dict[str, dict[str, Any]] = {}
    for key, m in stages.items():
        head, _, name = key.partition("/")
        if not head.startswith("iter_"):
            continue
        row = rows.setdefault(head.split("_")[1], {})
        if name == "policy_eval" and "pass@1" in m:
            row["pass@1"] = m["pass@1"]
            if "vs_baseline" in m:
                row["vs_M1"] = m["vs_baseline"]
        elif name == "search":
            row.update({"searched_problems": m.get("problems"), "step_pairs": m.get("pairs"),
                        "rollbacks": m.get("rollbacks")})
        elif name == "sft_control_eval" and "pass@1" in m:  # stages/sft_control.py
            row["sft_control_pass@1"] = m["pass@1"]
            row["vs_sft_control"] = m.get("policy_vs_control")
        elif name == "self_judge_eval":
            row.update({k: m.get(k) for k in ("self_judge_accuracy", "self_judge_accuracy_interval",
                                              "position_consistency", "pair_accuracy", "overrules",
                                              "overrule_precision", "own_step_accuracy", "greedy_step_accuracy")})
            row["self_judge_pairs"] = m.get("pairs")
    out = {k: rows[k] for k in sorted(rows, key=int) if "pass@1" in rows[k] or "self_judge_accuracy" in rows[k]}
    return out if len(out) > 1 or any("self_judge_accuracy" in r for r in out.values()) else {}


def iteration_table_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per model: M1 (after SFT), M2, ... with what produced it and how it does."""
    lines = []
    for k, row in summary.get("iterations", {}).items():
        parts = []
        if "pass@1" in row:
            parts.append(f"pass@1 {row['pass@1']:.1f}%" + (f" ({row['vs_M1']['points']:+.1f} vs M1, CI "
                         f"[{row['vs_M1']['low']:+.1f}, {row['vs_M1']['high']:+.1f}])" if "vs_M1" in row else ""))
        if row.get("self_judge_accuracy") is not None:
            low, high = row.get("self_judge_accuracy_interval") or (None, None)
            parts.append(f"self-judge {row['self_judge_accuracy']:.1f}%"
                         + (f" [{low:.1f}, {high:.1f}]" if low is not None else "")
                         + f" on {row['self_judge_pairs']} own pairs, position-consistent "
                         f"{row['position_consistency']:.1f}%")
        if row.get("overrule_precision") is not None:
            parts.append(f"overrules of its greedy step right {row['overrule_precision']:.1f}% "
                         f"of {row['overrules']}")
        if row.get("own_step_accuracy") is not None:
            parts.append(f"its own worked step right {row['own_step_accuracy']:.1f}% where its greedy step "
                         f"is {row['greedy_step_accuracy']:.1f}%")
        if row.get("step_pairs") is not None:
            parts.append(f"from {row['step_pairs']} step pairs of {row['searched_problems']} searched problems "
                         f"({row['rollbacks']} rollbacks)")
        if "sft_control_pass@1" in row:
            diff = row.get("vs_sft_control")
            parts.append(f"its SFT-spend control {row['sft_control_pass@1']:.1f}%" + (
                f" ({diff['points']:+.1f} vs the control, CI [{diff['low']:+.1f}, {diff['high']:+.1f}])"
                if diff else ""))
        lines.append((f"M{int(k) + 1}" + (" (SFT)" if k == "0" else ""), "; ".join(parts)))
    return lines


def time_by_stage_kind(stages: dict[str, Any]) -> dict[str, float]:
    """Where a run's time went: each kind of stage (`policy_sft`, `search`, ... summed over the
    iterations) with its seconds, slowest first. Stages reused from an earlier attempt count the
    time they took then."""
    kinds: dict[str, float] = {}
    for key, stage in stages.items():
        kind = key.split("/", 1)[-1]
        kinds[kind] = kinds.get(kind, 0.0) + float(stage.get("seconds", 0.0))
    return {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def time_lines(seconds_by_kind: dict[str, float], most: int = 6) -> list[str]:
    """The summary's time budget: total stage time, then the slowest kinds with their share."""
    total = sum(seconds_by_kind.values())
    if total <= 0:
        return []
    lines = [f"stage time {total / 60:.1f} min, by kind of stage:"]
    shown = list(seconds_by_kind.items())[:most]
    width = max(len(k) for k, _ in shown)
    lines += [f"  {k.ljust(width)}  {v / 60:5.1f} min  {100 * v / total:3.0f}%" for k, v in shown]
    rest = total - sum(v for _, v in shown)
    if rest > 0:
        lines.append(f"  {'others'.ljust(width)}  {rest / 60:5.1f} min  {100 * rest / total:3.0f}%")
    return lines


def make_plots(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    from rprm_ray.evaluation import plots

    made = []
    if "pass@1_per_iteration" in summary:
        it = summary["pass@1_per_iteration"]
        series = {"pass@1 (greedy)": list(it.values())}
        self_judge = summary.get("self_judge_accuracy_per_iteration", {})
        if set(self_judge) == set(it):
            series["self-judge pairwise accuracy (own candidates)"] = [self_judge[k] for k in it]
        control = summary.get("sft_control_pass@1_per_iteration", {})
        if set(control) == set(it):
            series["pass@1 of the SFT-spend control"] = [control[k] for k in it]
        made.append(plots.plot_accuracy_per_iteration([int(k) for k in it], series,
                                                      out_dir / "accuracy_per_iteration.png"))
    judge = summary.get("judge", {})
    if judge:
        made.append(plots.plot_judge_f1_per_phase(list(judge), [judge[p]["f1"] for p in judge],
                                                  out_dir / "judge_f1_per_phase.png"))
        curves = {p: judge[p]["f1_at_k"] for p in judge if judge[p]["f1_at_k"]}
        curves.update({f"{p}, M1's own mistakes": judge[p]["own_f1_at_k"] for p in judge
                       if judge[p].get("own_f1_at_k")})
        if curves:
            ks = sorted({int(k) for c in curves.values() for k in c})
            made.append(plots.plot_f1_vs_k(ks, {p: [c[str(k)] for k in ks] for p, c in curves.items()},
                                           out_dir / "f1_vs_k.png"))
    bon = summary.get("best_of_n")
    if bon:
        ns = sorted(int(n) for n in bon["bon_min"])
        series = {f"BoN ({how})": [bon[f"bon_{how}"][str(n)] for n in ns] for how in ("min", "last", "prod", "mean")}
        series["majority vote"] = [bon["majority"][str(n)] for n in ns]
        series["oracle (pass@N)"] = [bon["oracle"][str(n)] for n in ns]
        made.append(plots.plot_accuracy_vs_n(ns, series, out_dir / "accuracy_vs_n.png"))
        budget = budget_series(summary)
        if budget:
            made.append(plots.plot_accuracy_vs_budget(budget, out_dir / "accuracy_vs_candidate_steps.png"))
    return made


def bon_accuracy(bon: dict[str, Any], n: int) -> float:
    """Best-of-n's headline accuracy: with the aggregation chosen on the other half of the
    problems (`bon_validated`); a run recorded before that was measured gives its best one's."""
    if "bon_validated" in bon:
        return bon["bon_validated"][str(n)]
    return bon[f"bon_{bon['best_aggregation']}"][str(n)]


def bon_label(bon: dict[str, Any]) -> str:
    if "aggregation_by_half" in bon:
        a, b = bon["aggregation_by_half"]
        return (f"{a}, chosen on the other half" if a == b
                else f"{a} / {b} per half, each chosen on the other half")
    return bon["best_aggregation"]


def budget_series(summary: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Best-of-N (its best aggregation) and beam search on one axis: candidate steps generated
    per problem. Empty for runs recorded before the stages wrote their budgets."""
    bon, beam = summary.get("best_of_n", {}), summary.get("beam")
    per_n, problems = bon.get("candidate_steps_at_n"), bon.get("problems")
    if not per_n or not problems:
        return {}
    ns = sorted(int(n) for n in per_n)
    series = {f"Best-of-N ({bon_label(bon)})": ([round(per_n[str(n)] / problems, 1) for n in ns],
                                                [bon_accuracy(bon, n) for n in ns])}
    if beam and beam.get("problems"):
        series[f"beam search (N={beam['beams']}, M={beam['beam_width']})"] = (
            [round(beam["candidate_steps"] / beam["problems"], 1)], [beam["beam_accuracy"]])
    return series


def target_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The embedded demo's reference targets (issue tracker; ProcessBench-style definitions),
    each with what this run measured and whether it holds. Rows appear once their data exists."""
    rows: list[tuple[str, str]] = []

    def check(name: str, ok: bool, measured: str) -> None:
        rows.append((name, f"{'met' if ok else 'NOT met'}: {measured}"))

    judge = summary.get("judge", {})
    sft, dpo = judge.get("sft"), judge.get("dpo")
    if sft:
        check("judge F1 after SFT >= 70", sft["f1"] >= 70, f"{sft['f1']:.1f}")
    if dpo and "pairs" in dpo:
        # R-PRM's DPO samples hundreds of critique pairs; a handful makes one optimizer step.
        check("judge DPO trains on >= 200 critique pairs", dpo["pairs"] >= 200, f"{dpo['pairs']} pairs")
    if sft and dpo:
        check("judge F1 after DPO >= after SFT", dpo["f1"] >= sft["f1"], f"{dpo['f1']:.1f} vs {sft['f1']:.1f}")
    last = dpo or sft
    if last and {"1", "8"} <= set(last["f1_at_k"]):
        k1, k8 = last["f1_at_k"]["1"], last["f1_at_k"]["8"]
        check("judge F1 at K=8 >= at K=1", k8 >= k1, f"{k8:.1f} vs {k1:.1f}")
    if sft and dpo and "own_f1" in sft and "own_f1" in dpo:
        check("judge F1 on the policy's own mistakes: after DPO > after SFT", dpo["own_f1"] > sft["own_f1"],
              f"{dpo['own_f1']:.1f} vs {sft['own_f1']:.1f}")
    if last and last.get("own_f1") is not None:
        curve = last.get("own_f1_at_k", {})
        if "8" in curve:
            check("judge F1 on the policy's own mistakes: K=8 sampled > greedy K=1", curve["8"] > last["own_f1"],
                  f"{curve['8']:.1f} vs {last['own_f1']:.1f}")
    if "pass@1_M1" in summary and len(summary.get("pass@1_per_iteration", {})) > 1:
        gain = summary["pass@1_final"] - summary["pass@1_M1"]
        diff = summary.get("pass@1_final_vs_M1")
        check("pass@1 after self-rewarding >= M1 + 3, interval above 0",
              gain >= 3 and (diff is None or diff["low"] > 0),
              f"{summary['pass@1_final']:.1f} vs {summary['pass@1_M1']:.1f} ({gain:+.1f})" + _interval(diff))
        per_iteration = list(summary["pass@1_per_iteration"].values())
        drops = [later - earlier for earlier, later in itertools.pairwise(per_iteration)]
        check("no iteration loses more than 1 point of pass@1", min(drops) >= -1,
              " -> ".join(f"{x:.1f}" for x in per_iteration))
    control = summary.get("pass@1_final_vs_sft_control")
    if control:
        # A gain counts only beyond what the same training spent on plain SFT of M1 gives.
        check("pass@1 after self-rewarding > its SFT-spend control, interval above 0", control["low"] > 0,
              f"{control['points']:+.1f} points" + _interval(control))
    self_judge = summary.get("self_judge_accuracy_per_iteration", {})
    if "0" in self_judge:
        check("self-judge pairwise accuracy on its own candidates at M1 >= 85%", self_judge["0"] >= 85,
              f"{self_judge['0']:.1f}%")
        last = max(self_judge, key=int)
        if last != "0":
            check("self-judge accuracy at the last model >= at M1", self_judge[last] >= self_judge["0"],
                  f"M{int(last) + 1} {self_judge[last]:.1f}% vs M1 {self_judge['0']:.1f}%")
    bon = summary.get("best_of_n")
    if bon and "pass@1_samples" in bon:
        # Pass@1 as the papers print it beside Best-of-N: the mean accuracy of the same samples.
        n = max(int(k) for k in bon["bon_min"])
        best = bon_accuracy(bon, n)
        greedy = f"; greedy {summary['pass@1_final']:.1f}" if "pass@1_final" in summary else ""
        check(f"Best-of-{n} >= pass@1 + 10", best >= bon["pass@1_samples"] + 10,
              f"{best:.1f} vs pass@1 {bon['pass@1_samples']:.1f} (mean of the {n} samples{greedy})"
              + _interval(bon.get("bon_vs_pass@1_samples")))
    beam = summary.get("beam")
    if bon and beam and bon.get("candidate_steps_at_n"):
        # Best-of-n at the smallest n that spends beam search's step budget (within 2%: both
        # generate N candidates per level, so equal settings differ by a step or two).
        per_n = {int(k): v for k, v in bon["candidate_steps_at_n"].items()}
        n = smallest_n_within_budget(per_n, beam["candidate_steps"])
        if n is not None:
            best = bon_accuracy(bon, n)
            check("beam >= Best-of-N at equal candidate steps", beam["beam_accuracy"] >= best,
                  f"beam {beam['beam_accuracy']:.1f}% ({beam['candidate_steps']} steps) vs Best-of-{n} "
                  f"{best:.1f}% ({per_n[n]} steps)" + _interval(beam.get("beam_vs_bon")))
        else:
            check("beam >= Best-of-N at equal candidate steps", False,
                  f"beam spent {beam['candidate_steps']} steps, more than Best-of-{max(per_n)} ({per_n[max(per_n)]})")
    return rows


def _temperatures(judge: dict[str, Any], name: str) -> str:
    """', T 0.5 / 1 per half, each chosen on the other half' where the temperature was chosen."""
    used = judge.get(f"{name}temperature_by_half")
    if not used:
        return ""
    return f", T {used[0]:g}" + (" chosen on the other half" if used[0] == used[1] else
                                 f" / {used[1]:g} per half, each chosen on the other half")


def _interval(diff: dict[str, float] | None) -> str:
    """'; difference +1.2, 95% CI [-1.5, +3.9]' (paired bootstrap over problems), or ''."""
    if not diff:
        return ""
    return (f"; difference {diff['points']:+.1f}, {diff['level']:.0%} CI "
            f"[{diff['low']:+.1f}, {diff['high']:+.1f}]")


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table>{body}</table>"


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "pass@1_M1" in summary:
        rows.append(("policy pass@1, M1 (after SFT)", f"{summary['pass@1_M1']:.1f}%"))
        rows.append(("policy pass@1, final iteration", f"{summary['pass@1_final']:.1f}%"))
    for phase, j in summary.get("judge", {}).items():
        rows.append((f"judge first-error F1 after {phase.upper()} (K=1 greedy)",
                     f"{j['f1']:.1f} (error_acc {j['error_acc']:.1f}, correct_acc {j['correct_acc']:.1f})"))
        if j["f1_at_k"]:
            rows.append((f"judge F1 vs K after {phase.upper()} (sampled{_temperatures(j, '')})",
                         _curve(j["f1_at_k"])))
        if "own_f1" in j:
            rows.append((f"judge F1 on M1's own mistakes after {phase.upper()} (K=1 greedy)",
                         f"{j['own_f1']:.1f} (error_acc {j['own_error_acc']:.1f}, "
                         f"correct_acc {j['own_correct_acc']:.1f})"))
            if j["own_f1_at_k"]:
                rows.append((f"judge F1 vs K on M1's own mistakes after {phase.upper()} "
                             f"(sampled{_temperatures(j, 'own_')})", _curve(j["own_f1_at_k"])))
    bon = summary.get("best_of_n")
    if bon:
        n = max(int(k) for k in bon["bon_min"])
        if "pass@1_samples" in bon:
            rows.append(("pass@1 of the Best-of-N samples (mean)", f"{bon['pass@1_samples']:.1f}%"))
        best_here = bon["best_aggregation"]
        rows.append((f"Best-of-{n} ({bon_label(bon)})", f"{bon_accuracy(bon, n):.1f}% "
                     f"(best here: {best_here} {bon[f'bon_{best_here}'][str(n)]:.1f}%, "
                     f"majority {bon['majority'][str(n)]:.1f}%, oracle {bon['oracle'][str(n)]:.1f}%, "
                     f"{bon['candidate_steps']} candidate steps)"))
    beam = summary.get("beam")
    if beam:
        rows.append((f"beam search (N={beam['beams']}, M={beam['beam_width']})",
                     f"{beam['beam_accuracy']:.1f}% ({beam['candidate_steps']} candidate steps)"))
    return rows


def _curve(f1_at_k: dict[str, float]) -> str:
    return ", ".join(f"K={k}: {v:.1f}" for k, v in sorted(f1_at_k.items(), key=lambda kv: int(kv[0])))


def _output(manifest: Manifest, key: str, name: str, kind: str) -> Any:
    """A stage's recorded output table, or None when the stage or the output does not exist."""
    from rprm_ray import batches

    rel = manifest.data["stages"].get(key, {}).get("outputs", {}).get(name)
    return None if rel is None else batches.from_parquet(manifest.path.parent / rel, kind)


def _section(what: str, build: Any) -> str:
    """A detail section's HTML; a table that cannot be read costs that section only."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still worth writing
        return f'<p class="note">({what} could not be shown: {html.escape(str(exc).splitlines()[0])})</p>'


def judged_solutions_section(manifest: Manifest) -> str:
    """Held-out solutions as the final judge scored them (its greedy K=1 evaluation)."""
    mode = manifest.data["recipe"]["loop"]["mode"]
    if mode == "psrlm":
        return ('<p class="note">In psrlm mode the policy judges its own steps pairwise; there are no '
                "per-step scores. The search below shows its pairwise wins.</p>")
    for phase in ("dpo", "sft"):
        key = f"iter_0/judge_eval_{phase}"
        critiques = _output(manifest, key, "critiques_greedy", "critiques")
        scores = _output(manifest, key, "step_scores_greedy", "step_scores")
        steps = _output(manifest, "iter_0/data", "steps_eval", "labeled_steps")
        if critiques is None or scores is None or steps is None:
            continue
        import pyarrow as pa
        import pyarrow.compute as pc

        steps = steps.filter(pc.is_in(steps.column("solution_id"), pa.array(scores.column("solution_id").unique())))
        threshold = manifest.data["recipe"].get("evaluation", {}).get("threshold", 0.5)
        return (f'<p class="note">The judge after {phase.upper()} (one greedy critique per step) on held-out '
                "labeled solutions: each step's colour is its score, red (0) to green (1); click a step for its critique.</p>"
                + report_html.judged_solutions_html(steps, critiques, scores, threshold))
    return '<p class="note">(no judge evaluation has finished yet)</p>'


def search_section(manifest: Manifest) -> str:
    """The last self-rewarding search that recorded its candidates, one problem level by level."""
    mode = manifest.data["recipe"]["loop"]["mode"]
    if mode == "rprm":
        return '<p class="note">rprm mode trains and evaluates the judge only; it runs no search.</p>'
    keys = sorted((k for k in manifest.data["stages"] if k.endswith("/search") and k.startswith("iter_")),
                  key=lambda k: int(k.split("/")[0].split("_")[1]))
    for key in reversed(keys):
        trace = _output(manifest, key, "search_trace", "search_trace")
        if trace is None:
            continue
        results = _output(manifest, key, "search_results", "search_results")
        strategy = "self_judged" if mode == "psrlm" else "greedy"
        return (f'<p class="note">Stage <code>{html.escape(key)}</code>: the policy proposes candidate '
                "steps at each level; the judge keeps one.</p>"
                + report_html.search_levels_html(trace, results, strategy))
    return '<p class="note">(no search with recorded candidates has finished yet)</p>'


def write_report(run_dir: Path) -> Path:
    """metrics.json, the PNG plots and a self-contained report.html for a run directory (any
    mode, finished or not); returns the page's path."""
    manifest = Manifest.load(run_dir)
    summary = collect(manifest)
    write_json_atomic(run_dir / "metrics.json", summary)
    pngs = make_plots(summary, run_dir)
    figures = "".join(f'<figure><img src="{report_html.data_uri(p)}" alt="{p.stem}"><figcaption>'
                      f'<a href="{p.name}">{p.stem.replace("_", " ")}</a></figcaption></figure>' for p in pngs)
    targets = target_rows(summary)
    iteration_lines = iteration_table_rows(summary)
    iterations_html = f"<h2>Models per iteration</h2>{_table(iteration_lines)}" if iteration_lines else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rprm-ray run {html.escape(run_dir.name)}</title>
<style>{report_html.CSS}</style></head><body>
<h1>rprm-ray run <code>{html.escape(run_dir.name)}</code></h1>
<p>mode <b>{html.escape(str(manifest.data['recipe']['loop']['mode']))}</b>, recipe fingerprint
<code>{manifest.data['recipe_fingerprint']}</code>, started {html.escape(str(manifest.data.get('created_at', '?')))};
figures on held-out problems of the run's task.</p>
<h2>Headline</h2>{_table(headline_rows(summary)) if headline_rows(summary) else '<p class="note">(no figures yet)</p>'}
{iterations_html}<h2>Reference targets (embedded demo)</h2>{_table(targets) if targets else '<p class="note">(none measured yet)</p>'}
<h2>Plots</h2>{figures or '<p class="note">(no plots yet)</p>'}
<h2>Held-out solutions, judged step by step</h2>{_section("judged solutions", lambda: judged_solutions_section(manifest))}
<h2>One search, level by level</h2>{_section("the search", lambda: search_section(manifest))}
<h2>Stage timeline</h2>{_section("the timeline", lambda: report_html.timeline_html(manifest.data["stages"]))}
<p>All figures: <a href="metrics.json">metrics.json</a>; every stage's Arrow output is Parquet under this directory.</p>
</body></html>"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def summary_text(run_dir: Path) -> str:
    summary = json.loads((run_dir / "metrics.json").read_text())
    rows = headline_rows(summary)
    width = max((len(a) for a, _ in rows), default=0)
    lines = [f"== rprm-ray run {run_dir} =="]
    lines += [f"{a.ljust(width)}  {b}" for a, b in rows]
    iteration_lines = iteration_table_rows(summary)
    if iteration_lines:
        lines.append("models per iteration:")
        lines += [f"  {a.ljust(8)}  {b}" for a, b in iteration_lines]
    targets = target_rows(summary)
    if targets:
        lines.append("reference targets (embedded demo):")
        width = max(len(a) for a, _ in targets)
        lines += [f"  {a.ljust(width)}  {b}" for a, b in targets]
    lines += time_lines(summary.get("seconds_by_stage_kind", {}))
    lines.append(f"report: {run_dir / 'report.html'}")
    return "\n".join(lines)
