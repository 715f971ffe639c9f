"""`rprm-ray eval processbench | bon | math`: score saved judge / policy outputs against benchmark
files. These forms need no model; figures are percentages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rprm_ray.data import DataError

AGGREGATIONS = ("min", "last", "prod", "mean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    pb = sub.add_parser(
        "processbench",
        help="first-error F1 from per-step scores",
        description="ProcessBench first-error accuracy and F1 (R-PRM's get-GenPRM-Score.py).",
    )
    pb.add_argument(
        "--data", required=True, action="append", type=Path, metavar="FILE",
        help="ProcessBench subset JSON (repeat for several subsets; the mean is over subsets)",
    )
    pb.add_argument("--scores", type=Path, metavar="SCORES.jsonl", help='lines {"id": ..., "step_scores": [p, ...]}')
    pb.add_argument("--threshold", type=float, default=0.5, help="a step scoring below this is an error (default 0.5)")
    _add_judge_and_json(pb)

    bon = sub.add_parser(
        "bon",
        help="Best-of-N accuracy from per-step scores of candidate solutions",
        description="Best-of-N accuracy at N = 1, 2, 4, ... (weighted BoN and majority vote too when FILE has answers).",
    )
    bon.add_argument(
        "--data", required=True, type=Path, metavar="FILE",
        help='JSONL: {"id", "question", "steps": [[str]], "labels": [bool], "answers": [str] (optional)}',
    )
    bon.add_argument("--scores", type=Path, metavar="SCORES.jsonl", help='lines {"id": ..., "step_scores": [[p, ...], ...]}')
    bon.add_argument("--agg", choices=AGGREGATIONS, default="min", help="step scores -> solution score (default min)")
    _add_judge_and_json(bon)

    math = sub.add_parser(
        "math",
        help="pass@1 / maj@k / pass@k of \\boxed{} answers (math-verify)",
        description="Final-answer accuracy of sampled completions graded with math-verify.",
    )
    math.add_argument("--data", required=True, type=Path, metavar="FILE", help="math JSONL (GSM8K, MATH-500, AIME24, AMC23)")
    math.add_argument(
        "--predictions", required=True, type=Path, metavar="PRED.jsonl",
        help='lines {"id": ..., "completions": [str, ...]}; id is the file\'s own id or "<file stem>-<id>"',
    )
    math.add_argument("--k", type=int, default=None, help="completions per problem for maj@k / pass@k (default: all)")
    math.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _add_judge_and_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge", metavar="MODEL_OR_RUN",
        help="score with a judge model instead of a SCORES file (not available yet)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    try:
        if args.benchmark == "processbench":
            figures, table = _processbench(args)
        elif args.benchmark == "bon":
            figures, table = _bon(args)
        else:
            figures, table = _math(args)
    except DataError as exc:
        print(f"rprm-ray eval {args.benchmark}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(figures) if args.json else table)
    return 0


def _need_scores(args: argparse.Namespace) -> Path:
    if args.judge is not None:
        raise DataError(
            f"--judge {args.judge}: scoring with a judge model is not available yet; "
            "pass --scores SCORES.jsonl with saved step scores"
        )
    if args.scores is None:
        raise DataError("--scores SCORES.jsonl is required")
    return args.scores


# --------------------------------------------------------------------------------------------
# Score files


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _score_list(path: Path, i: int, ident: Any, value: Any, what: str) -> list[float | None]:
    if not isinstance(value, list) or not all(v is None or _is_number(v) for v in value):
        raise DataError(f"{path}: row {i} (id {ident!r}): {what} must be a list of numbers (or null)")
    return [None if v is None else float(v) for v in value]


def _read_scores(path: Path, nested: bool) -> dict[str, Any]:
    from rprm_ray.data import read_jsonl

    out: dict[str, Any] = {}
    for i, row in enumerate(read_jsonl(path)):
        ident = row.get("id")
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            raise DataError(f"{path}: row {i}: missing field 'id' (str or int)")
        if "step_scores" not in row:
            raise DataError(f"{path}: row {i} (id {ident!r}): missing field 'step_scores'")
        value = row["step_scores"]
        if nested:
            if not isinstance(value, list):
                raise DataError(f"{path}: row {i} (id {ident!r}): field 'step_scores' must be a list per candidate")
            scores: Any = [_score_list(path, i, ident, v, f"field 'step_scores'[{c}]") for c, v in enumerate(value)]
        else:
            scores = _score_list(path, i, ident, value, "field 'step_scores'")
        if str(ident) in out:
            raise DataError(f"{path}: row {i}: duplicate id {ident!r}")
        out[str(ident)] = scores
    return out


# --------------------------------------------------------------------------------------------
# Benchmarks


def _processbench(args: argparse.Namespace) -> tuple[dict, str]:
    from rprm_ray.data import load_processbench
    from rprm_ray.evaluation.processbench import evaluate_processbench

    scores_path = _need_scores(args)
    items = [item for path in args.data for item in load_processbench(path)]
    subsets = [item.subset for item in items]
    if len(set(subsets)) < len(args.data):
        raise DataError(f"--data: two files share a subset name ({', '.join(str(p) for p in args.data)})")
    scores = _read_scores(scores_path, nested=False)
    result = evaluate_processbench(items, scores, args.threshold, where=str(scores_path))
    figures = result.as_dict()
    figures["threshold"] = args.threshold
    lines = [f"ProcessBench (threshold {args.threshold:g})", _row("subset", "error_acc", "correct_acc", "F1", "n_err", "n_cor", "missing")]
    for r in result.subsets.values():
        lines.append(_row(r.subset, f"{r.error_acc:.1f}", f"{r.correct_acc:.1f}", f"{r.f1:.1f}", r.num_error, r.num_correct, r.num_missing_scores))
    if len(result.subsets) > 1:
        lines.append(_row("mean", f"{result.error_acc:.1f}", f"{result.correct_acc:.1f}", f"{result.f1:.1f}", "", "", ""))
    return figures, "\n".join(lines)


def _bon(args: argparse.Namespace) -> tuple[dict, str]:
    from rprm_ray.data import load_bon_candidates
    from rprm_ray.evaluation.bon import BonProblem, evaluate_best_of_n

    scores_path = _need_scores(args)
    items = load_bon_candidates(args.data)
    scores = _read_scores(scores_path, nested=True)
    problems = []
    for item in items:
        if item.id not in scores:
            raise DataError(f"{scores_path}: no step_scores for id {item.id!r}")
        per_candidate = scores[item.id]
        if len(per_candidate) != len(item.steps):
            raise DataError(
                f"{scores_path}: id {item.id!r}: {len(per_candidate)} score lists for {len(item.steps)} candidates"
            )
        for c, (cand_scores, cand_steps) in enumerate(zip(per_candidate, item.steps, strict=True)):
            if len(cand_scores) != len(cand_steps):
                raise DataError(
                    f"{scores_path}: id {item.id!r}: candidate {c}: {len(cand_scores)} step scores for {len(cand_steps)} steps"
                )
        problems.append(BonProblem(id=item.id, step_scores=per_candidate, correct=item.labels, answers=item.answers))
    result = evaluate_best_of_n(problems, args.agg)
    figures = result.as_dict()
    header = ["N", f"best-of-N ({args.agg})"]
    if result.weighted is not None:
        header += ["weighted", "majority"]
    lines = [f"Best-of-N over {len(problems)} problems", _row(*header, "oracle")]
    for n in result.ns:
        cells = [n, f"{result.best_of_n[n]:.1f}"]
        if result.weighted is not None and result.majority is not None:
            cells += [f"{result.weighted[n]:.1f}", f"{result.majority[n]:.1f}"]
        lines.append(_row(*cells, f"{result.oracle[n]:.1f}"))
    return figures, "\n".join(lines)


def _math(args: argparse.Namespace) -> tuple[dict, str]:
    from rprm_ray.data import load_math_problems, read_jsonl
    from rprm_ray.evaluation.math_accuracy import math_accuracy

    problems = load_math_problems(args.data).to_pylist()
    by_id: dict[str, dict] = {}
    for p in problems:
        by_id[p["problem_id"]] = p
        by_id.setdefault(p["problem_id"][len(p["source"]) + 1 :], p)  # the file's own id
    completions, golds, seen = [], [], set()
    for i, row in enumerate(read_jsonl(args.predictions)):
        ident = row.get("id")
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            raise DataError(f"{args.predictions}: row {i}: missing field 'id' (str or int)")
        problem = by_id.get(str(ident))
        if problem is None:
            raise DataError(f"{args.predictions}: row {i}: id {ident!r} is not a problem of {args.data}")
        if problem["problem_id"] in seen:
            raise DataError(f"{args.predictions}: row {i}: second prediction for id {ident!r}")
        seen.add(problem["problem_id"])
        texts = row.get("completions")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{args.predictions}: row {i} (id {ident!r}): field 'completions' must be a non-empty list of str")
        if problem["answer"] is None:
            raise DataError(f"{args.data}: problem {problem['problem_id']!r} has no reference answer")
        completions.append(texts)
        golds.append(problem["answer"])
    if not completions:
        raise DataError(f"{args.predictions}: no predictions")
    try:
        result = math_accuracy(completions, golds, args.k)
    except ValueError as exc:
        raise DataError(f"{args.predictions}: {exc}") from None
    figures = result.as_dict()
    lines = [
        f"{args.data.name}: {result.num_problems} of {len(problems)} problems, k = {result.k}",
        _row("pass@1", "maj@k", "pass@k", "no_answer", "unparsed", "grader_err"),
        _row(
            f"{result.pass_at_1:.1f}", f"{result.maj_at_k:.1f}", f"{result.pass_at_k:.1f}",
            result.num_no_answer, result.num_parse_failures, result.num_grader_errors,
        ),
    ]
    return figures, "\n".join(lines)


def _row(first: Any, *cells: Any) -> str:
    return f"{first!s:<12}" + "".join(f"{c!s:>13}" for c in cells)
