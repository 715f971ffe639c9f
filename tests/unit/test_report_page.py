"""report.html from small synthetic run directories (no Ray): judged held-out solutions with
colours and critiques, one search level by level, the stage timeline, a self-contained page, and
every mode's and a partial run's report."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rprm_ray import batches, report, report_html
from rprm_ray.config import load_recipe
from rprm_ray.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]


def labeled_steps() -> list[dict]:
    """Two held-out solutions of '2+3*4': the reference, and one whose second step is wrong."""
    ref = ["3*4=12", "2+12=14", "A:14"]
    err = ["3*4=12", "2+12=15", "A:15"]
    rows = []
    for sid, steps, labels in (("p0/ref", ref, [True] * 3), ("p0/err", err, [True, False, False])):
        for i, (step, label) in enumerate(zip(steps, labels, strict=True)):
            rows.append({"problem_id": "p0", "solution_id": sid, "step_idx": i, "question": "2+3*4",
                         "previous_steps": steps[:i], "now_step": step, "label": label})
    return rows


def critiques_and_scores(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    critiques, scores = [], []
    for r in rows:
        p_yes = 0.9 if r["label"] else 0.1
        critiques.append({"problem_id": "p0", "solution_id": r["solution_id"], "step_idx": r["step_idx"],
                          "sample_idx": 0, "prompt": "...", "valid": True, "p_yes": p_yes, "label": r["label"],
                          "critique": f"Checking <{r['now_step']}>. Verdict: {'Yes' if r['label'] else 'No'}",
                          "verdict": "Yes" if r["label"] else "No"})
        scores.append({"problem_id": "p0", "solution_id": r["solution_id"], "step_idx": r["step_idx"],
                       "score": p_yes, "num_valid": 1, "num_invalid": 0})
    return critiques, scores


def trace_rows() -> list[dict]:
    """p1: two levels with three candidates each; p2: one lone candidate."""
    rows = []
    for level, steps, outcomes, scores in (
        (0, ["3*4=12", "3*4=13", "2+3=5"], ["kept", "rejected", "candidate"], [0.95, 0.05, 0.4]),
        (1, ["2+12=14", "2+12=14 ", "A:9"], ["kept", "candidate", "rejected"], [0.9, 0.8, 0.2]),
    ):
        for cid, (step, outcome, score) in enumerate(zip(steps, outcomes, scores, strict=True)):
            rows.append({"problem_id": "p1", "prefix_id": f"p1/d{level}", "level": level, "candidate_id": cid,
                         "step": step, "finished": step.startswith("A:"), "score": score, "outcome": outcome})
    rows.append({"problem_id": "p2", "prefix_id": "p2/d0", "level": 0, "candidate_id": 0, "step": "A:1",
                 "finished": True, "score": None, "outcome": "kept"})
    return rows


def search_results() -> list[dict]:
    return [{"problem_id": pid, "question": q, "reference": None, "strategy": "greedy", "steps": steps,
             "answer": ans, "finished": True, "correct": None, "score": None, "num_completions": 1,
             "candidate_steps": n, "judge_calls": n, "depth": len(steps), "rollbacks": 0}
            for pid, q, steps, ans, n in (("p1", "2+3*4", ["3*4=12", "2+12=14"], "14", 6),
                                          ("p2", "0+1", ["A:1"], "1", 1))]


def make_run(tmp_path: Path, mode: str, stages: tuple[str, ...]) -> Path:
    """A run directory of `mode` whose manifest records `stages` with synthetic outputs."""
    recipe = load_recipe(ROOT / "recipes" / "tiny_arith.yaml", [f"run_root={tmp_path}", f"loop.mode={mode}"])
    run_dir = tmp_path / mode
    manifest = Manifest.create(run_dir, recipe.model_dump(mode="json"))
    steps = labeled_steps()
    critiques, scores = critiques_and_scores(steps)
    outputs = {
        "iter_0/data": {"steps_eval": (steps, "labeled_steps")},
        "iter_0/judge_eval_sft": {"critiques_greedy": (critiques, "critiques"),
                                  "step_scores_greedy": (scores, "step_scores")},
        "iter_1/search": {"search_trace": (trace_rows(), "search_trace"),
                          "search_results": (search_results(), "search_results")},
    }
    metrics = {"iter_0/judge_eval_sft": {"sft_f1": 100.0, "sft_error_acc": 100.0, "sft_correct_acc": 100.0},
               "iter_0/policy_eval": {"pass@1": 40.0}, "iter_1/policy_eval": {"pass@1": 50.0}}
    for i, key in enumerate(stages):
        written = {}
        for name, (rows, kind) in outputs.get(key, {}).items():
            path = batches.to_parquet(batches.from_rows(rows, kind), run_dir / key / f"{name}.parquet", kind)
            written[name] = str(path.relative_to(run_dir))
        manifest.record(key, written, metrics.get(key, {}), seconds=10.0 * (i + 1), state={})
        manifest.data["stages"][key]["finished_at"] = f"2026-01-01T00:{i:02d}:30"
    manifest.save()
    return run_dir


GUIDED = ("iter_0/data", "iter_0/policy_eval", "iter_0/judge_eval_sft", "iter_1/search", "iter_1/policy_eval")


class _Tags(HTMLParser):
    """Every tag and its attributes, to check the page fetches nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_guided_report_shows_judged_steps_a_search_and_the_timeline(tmp_path) -> None:
    page = report.write_report(make_run(tmp_path, "guided", GUIDED)).read_text()
    judged = page[page.index("judged step by step"):page.index("One search")]
    # Each step: its score's colour, its critique inside <details>, escaped.
    assert judged.count('<details class="step"') == 6
    assert report_html.score_colour(0.9) in judged and report_html.score_colour(0.1) in judged
    assert "Checking &lt;2+12=15&gt;. Verdict: No" in judged
    assert "labeled first error step 2, judge's first error step 2" in judged
    assert "labeled first error none, judge's first error none" in judged
    search = page[page.index("One search"):page.index("Stage timeline")]
    assert "iter_1/search" in search and "2+3*4" in search  # the problem with the most choices
    assert search.count('class="level"') == 2
    assert re.search(r'class="cand kept"[^>]*><span class="text">3\*4=12<', search)
    assert re.search(r'class="cand rejected"[^>]*><span class="text">3\*4=13<', search)
    assert "score 0.05" in search and "final answer 14" in search
    timeline = page[page.index("Stage timeline"):]
    assert timeline.count('class="tl-row"') == len(GUIDED)
    assert "5 stages, 2m30s of stage time" in timeline


def test_page_is_self_contained(tmp_path) -> None:
    page = report.write_report(make_run(tmp_path, "guided", GUIDED)).read_text()
    parser = _Tags()
    parser.feed(page)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert not [t for t, _ in parser.tags if t in ("script", "link", "iframe")]
    links = [a["href"] for t, a in parser.tags if t == "a"]
    assert all(not re.match(r"^[a-z]+://", href) for href in links)  # relative links only
    head = page[:page.index("<body>")]
    assert "<style>" in head and "http" not in head and "url(" not in head  # inline CSS, nothing fetched


def test_psrlm_report_shows_the_pairwise_search_and_no_step_scores(tmp_path) -> None:
    page = report.write_report(make_run(tmp_path, "psrlm", ("iter_0/data", "iter_1/search"))).read_text()
    assert "no per-step scores" in page
    assert '<details class="step"' not in page
    assert "wins 0.95" in page  # self-judged: the trace's scores are wins


def test_rprm_report_has_judged_steps_and_says_it_runs_no_search(tmp_path) -> None:
    page = report.write_report(make_run(tmp_path, "rprm", ("iter_0/data", "iter_0/judge_eval_sft"))).read_text()
    assert page.count('<details class="step"') == 6
    assert "runs no search" in page


def test_partial_run_reports_what_exists(tmp_path) -> None:
    page = report.write_report(make_run(tmp_path, "guided", ("iter_0/data",))).read_text()
    assert "no judge evaluation has finished yet" in page
    assert "no search with recorded candidates" in page
    assert page.count('class="tl-row"') == 1
    assert "(no plots yet)" in page


def test_an_unreadable_table_costs_only_its_section(tmp_path) -> None:
    run_dir = make_run(tmp_path, "guided", GUIDED)
    (run_dir / "iter_1/search/search_trace.parquet").write_bytes(b"not parquet")
    page = report.write_report(run_dir).read_text()
    assert "the search could not be shown" in page
    assert page.count('<details class="step"') == 6 and 'class="tl-row"' in page


@pytest.mark.parametrize("limit,expected", [(1, ["a/err"]), (2, ["a/err", "a/ref"]),
                                            (3, ["a/err", "a/ref", "b/err"]), (4, ["a/err", "a/ref", "b/err", "b/ref"])])
def test_picked_solutions_mix_wrong_and_right_ones(limit, expected) -> None:
    rows = [{"problem_id": p, "solution_id": f"{p}/{kind}", "step_idx": 0, "question": "q", "previous_steps": [],
             "now_step": "s", "label": kind == "ref"} for p in ("a", "b") for kind in ("ref", "err")]
    assert report_html.pick_solutions(batches.from_rows(rows, "labeled_steps"), limit) == expected


def test_timeline_without_timestamps_lays_stages_end_to_end() -> None:
    out = report_html.timeline_html({"a": {"seconds": 30.0}, "b": {"seconds": 90.0}})
    assert 'left:0.00%;width:25.00%' in out and 'left:25.00%;width:75.00%' in out
    assert "2 stages, 2m00s of stage time over 2m00s of wall time" in out


def test_score_colour_runs_red_to_green() -> None:
    assert report_html.score_colour(0.0) == "hsl(0,70%,62%)"
    assert report_html.score_colour(1.0) == "hsl(120,70%,62%)"
    assert report_html.score_colour(None) == "#bbbbbb"
