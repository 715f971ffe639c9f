"""The report page's detailed sections, as HTML strings from a run's tables: held-out solutions
judged step by step, one search level by level, and the stage timeline.

Pure functions of Arrow tables and manifest entries (no Ray, no files), so they are unit-tested on
small synthetic tables. The page they go into is self-contained: inline CSS, images as data URIs,
no script and nothing fetched over the network.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from rprm_ray.evaluation.processbench import predicted_first_error

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:520px}
.note{color:#666}.q{font-weight:600;margin:.2em 0}
.solution{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0}
details.step{margin:3px 0;padding:3px 8px;border-left:8px solid #999;border-radius:3px}
details.step summary{cursor:pointer}details.step pre{white-space:pre-wrap;font-size:.85em;
background:#fafafa;border:1px solid #eee;padding:.5em;margin:.4em 0}
.score{display:inline-block;min-width:3.2em;text-align:center;border-radius:3px;padding:0 4px;
font-family:monospace;color:#000;margin-right:.5em}
.truth{font-size:.8em;color:#555;margin-left:.6em}
.level{display:flex;gap:6px;align-items:stretch;margin:4px 0}
.level .tag{min-width:5.5em;font-family:monospace;color:#555;padding-top:4px}
.cand{flex:1;border:2px solid #ddd;border-radius:4px;padding:3px 6px;font-family:monospace;font-size:.85em}
.cand.kept{border-color:#2a8a2a;background:#eef8ee}.cand.rejected{border-color:#c33;background:#fbeeee}
.cand.rejected .text{text-decoration:line-through}.cand.tied{border-style:dashed;background:#f6f3e6}
.cand .meta{color:#666;font-size:.9em}
.timeline{margin:1em 0}.tl-row{display:flex;align-items:center;font-size:.85em;margin:2px 0}
.tl-name{width:16em;font-family:monospace}.tl-track{flex:1;background:#f2f2f2;height:14px;position:relative}
.tl-bar{position:absolute;top:0;height:14px;background:#4a7bd0;min-width:2px}
.tl-sec{width:7em;text-align:right;font-family:monospace}
"""


def data_uri(png: Path) -> str:
    """A PNG as a data URI, so the page shows its plots when copied or opened offline."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def score_colour(score: float | None) -> str:
    """Red (0) through yellow to green (1); grey when the step has no score."""
    if score is None:
        return "#bbbbbb"
    hue = 120.0 * min(1.0, max(0.0, float(score)))
    return f"hsl({hue:.0f},70%,62%)"


def _esc(text: Any) -> str:
    return html.escape(str(text))


# ---- held-out solutions judged step by step ----------------------------------------------


def pick_solutions(steps: pa.Table, limit: int) -> list[str]:
    """Solution ids to show: about half with a labeled error and half without, in id order
    (deterministic, so a rebuilt report shows the same ones)."""
    labels: dict[str, list[bool | None]] = {}
    for sid, label in zip(steps.column("solution_id").to_pylist(), steps.column("label").to_pylist(), strict=True):
        labels.setdefault(sid, []).append(label)
    ordered = sorted(labels)
    wrong = [s for s in ordered if False in labels[s]]
    right = [s for s in ordered if False not in labels[s]]
    half = (limit + 1) // 2
    picked = wrong[:half]
    picked += right[: limit - len(picked)]
    picked += wrong[half: half + limit - len(picked)]
    return sorted(picked)


def judged_solutions_html(steps: pa.Table, critiques: pa.Table, step_scores: pa.Table, threshold: float,
                          limit: int = 4) -> str:
    """A few labeled held-out solutions: each step coloured by the judge's score, its critiques in
    a <details> a click away, the labeled and predicted first error side by side."""
    if steps.num_rows == 0:
        return '<p class="note">(no held-out labeled steps)</p>'
    scores = {(r["solution_id"], r["step_idx"]): r for r in step_scores.to_pylist()}
    texts: dict[tuple[str, int], list[dict]] = {}
    for c in critiques.to_pylist():
        texts.setdefault((c["solution_id"], c["step_idx"]), []).append(c)
    by_solution: dict[str, list[dict]] = {}
    for r in steps.to_pylist():
        by_solution.setdefault(r["solution_id"], []).append(r)
    parts = []
    for sid in pick_solutions(steps, limit):
        rows = sorted(by_solution[sid], key=lambda r: r["step_idx"])
        values = [scores.get((sid, r["step_idx"]), {}).get("score") for r in rows]
        labeled = next((i for i, r in enumerate(rows) if r["label"] is False), -1)
        predicted = predicted_first_error(values, threshold)
        verdict = "agrees" if labeled == predicted else "disagrees"
        head = (f'<p class="q">{_esc(rows[0]["question"])}</p><p class="note">solution <code>{_esc(sid)}</code>: '
                f"labeled first error {_step_name(labeled)}, judge's first error {_step_name(predicted)} "
                f"(score &lt; {threshold:g}): <b>{verdict}</b></p>")
        items = [_step_html(i, r, values[i], texts.get((sid, r["step_idx"]), []), scores.get((sid, r["step_idx"])))
                 for i, r in enumerate(rows)]
        parts.append(f'<div class="solution">{head}{"".join(items)}</div>')
    return "".join(parts)


def _step_name(index: int) -> str:
    return "none" if index < 0 else f"step {index + 1}"


def _step_html(i: int, row: dict, score: float | None, critiques: list[dict], scored: dict | None) -> str:
    colour = score_colour(score)
    shown = "n/a" if score is None else f"{score:.2f}"
    truth = {True: "labeled correct", False: "labeled wrong", None: "unlabeled"}[row["label"]]
    invalid = f", {scored['num_invalid']} invalid" if scored and scored.get("num_invalid") else ""
    body = "".join(_critique_html(c) for c in sorted(critiques, key=lambda c: c["sample_idx"]))
    body = body or '<p class="note">(no critique recorded)</p>'
    return (f'<details class="step" style="border-left-color:{colour}"><summary>'
            f'<span class="score" style="background:{colour}">{shown}</span>{i + 1}. {_esc(row["now_step"])}'
            f'<span class="truth">{truth}{invalid}</span></summary>{body}</details>')


def _critique_html(c: dict) -> str:
    p_yes = "" if c["p_yes"] is None else f", P(Yes) {c['p_yes']:.2f}"
    return (f"<pre>critique {c['sample_idx'] + 1} (verdict {_esc(c['verdict'] or 'none')}{p_yes}):\n"
            f"{_esc(c['critique'])}</pre>")


# ---- one search, level by level ----------------------------------------------------------


def pick_search_problem(trace: pa.Table) -> str | None:
    """The problem whose search shows most: the most levels with a choice among several candidates,
    then any rejected step, then the first id."""
    choices: dict[str, set[int]] = {}
    rejected: dict[str, bool] = {}
    counts: dict[tuple[str, int], int] = {}
    for r in trace.select(["problem_id", "level", "outcome"]).to_pylist():
        key = (r["problem_id"], r["level"])
        counts[key] = counts.get(key, 0) + 1
        rejected[r["problem_id"]] = rejected.get(r["problem_id"], False) or r["outcome"] == "rejected"
    for (pid, level), n in counts.items():
        choices.setdefault(pid, set())
        if n > 1:
            choices[pid].add(level)
    if not choices:
        return None
    return min(choices, key=lambda pid: (-len(choices[pid]), not rejected[pid], pid))


def search_levels_html(trace: pa.Table, results: pa.Table | None, strategy: str) -> str:
    """One problem's search: per level its judged candidates, the kept step, the rejected one
    (the other side of the level's step pair) and tied levels."""
    pid = pick_search_problem(trace)
    if pid is None:
        return '<p class="note">(the search judged no candidates)</p>'
    rows = [r for r in trace.to_pylist() if r["problem_id"] == pid]
    wins = strategy == "self_judged"
    levels: dict[int, list[dict]] = {}
    for r in rows:
        levels.setdefault(r["level"], []).append(r)
    result = next((r for r in results.to_pylist() if r["problem_id"] == pid), None) if results is not None else None
    head = f'<p class="q">{_esc(rows[0]["problem_id"])}'
    if result is not None:
        head += f": {_esc(result['question'])}</p>"
        answer = result["answer"] if result["finished"] else "(unfinished)"
        head += (f'<p class="note">final answer {_esc(answer)} after {result["depth"]} levels, '
                 f'{result["rollbacks"]} rollbacks, {result["candidate_steps"]} candidate steps generated</p>')
    else:
        head += "</p>"
    score_name = "wins" if wins else "score"
    out = [head, f'<p class="note">green: kept; red, struck through: rejected (the step pair\'s other side); '
                 f'dashed: a tie (every candidate scored the same). Each candidate shows its {score_name}.</p>']
    for level in sorted(levels):
        cands = sorted(levels[level], key=lambda r: r["candidate_id"])
        top = max((c["score"] or 0.0 for c in cands), default=0.0) or 1.0
        chips = []
        for c in cands:
            if c["score"] is None:
                meta = "lone candidate, not judged" if len(cands) == 1 else "no score (no valid critique)"
                colour = score_colour(None)
            elif wins:
                meta, colour = f"wins {c['score']:g}", score_colour(c["score"] / top)
            else:
                meta, colour = f"score {c['score']:.2f}", score_colour(c["score"])
            end = ", final step" if c["finished"] else ""
            chips.append(f'<div class="cand {c["outcome"]}" style="border-top:4px solid {colour}">'
                         f'<span class="text">{_esc(c["step"])}</span>'
                         f'<div class="meta">#{c["candidate_id"]} {meta}{end} · {c["outcome"]}</div></div>')
        out.append(f'<div class="level"><div class="tag">level {level + 1}</div>{"".join(chips)}</div>')
    return "".join(out)


# ---- stage timeline ----------------------------------------------------------------------


def timeline_html(stages: dict[str, dict[str, Any]]) -> str:
    """Each stage as a bar on one time axis (start = finished_at - seconds), so waits between
    stages (a resume) show as gaps; without timestamps, stages are laid end to end."""
    if not stages:
        return '<p class="note">(no stage finished yet)</p>'
    ends = {key: _timestamp(s.get("finished_at")) for key, s in stages.items()}
    timed = all(end is not None for end in ends.values())
    spans = []
    cursor = 0.0
    for key, s in stages.items():
        seconds = float(s.get("seconds", 0.0))
        end = ends[key]
        start = end - seconds if timed and end is not None else cursor
        if 0 < cursor - start < 1.0:
            start = cursor  # finished_at has whole seconds; stages run one after another
        spans.append((key, start, seconds))
        cursor = start + seconds
    t0 = min(start for _, start, _ in spans)
    total = max(start + sec for _, start, sec in spans) - t0 or 1.0
    rows = []
    for key, start, sec in spans:
        left, width = 100.0 * (start - t0) / total, 100.0 * sec / total
        rows.append(f'<div class="tl-row"><div class="tl-name">{_esc(key)}</div><div class="tl-track">'
                    f'<div class="tl-bar" style="left:{left:.2f}%;width:{width:.2f}%"></div></div>'
                    f'<div class="tl-sec">{_duration(sec)}</div></div>')
    busy = sum(sec for _, _, sec in spans)
    return (f'<div class="timeline">{"".join(rows)}</div><p class="note">{len(spans)} stages, '
            f"{_duration(busy)} of stage time over {_duration(total)} of wall time.</p>")


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{sec:02d}s"
