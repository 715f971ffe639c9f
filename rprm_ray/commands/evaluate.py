"""`rprm-ray eval processbench | prmbench | bon | math`: score judge / policy outputs against benchmark files;
figures are percentages.

processbench, prmbench and bon take their step scores from a SCORES.jsonl file (no model needed) or from a
judge model (`--judge MODEL_OR_RUN`, judged here on one engine); both feed the same scorer, so equal
scores print equal tables. `--save-scores` writes judged scores in the SCORES.jsonl format."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rprm_ray.data import DataError

if TYPE_CHECKING:
    from rprm_ray.data import BonItem, ProcessBenchItem

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

    prm = sub.add_parser(
        "prmbench",
        help="PRMBench PRMScore from per-step scores",
        description="PRMBench PRMScore per category, group and overall, as PRMBench's own evaluator "
        "scores its published files (error steps past an item's last step are ignored and, of "
        "repeated ids, the first row is kept; both are counted in the output).",
    )
    prm.add_argument(
        "--data", required=True, action="append", type=Path, metavar="FILE",
        help="PRMBench JSONL, or a directory of them (its prmtest_classified data); repeatable",
    )
    prm.add_argument("--scores", type=Path, metavar="SCORES.jsonl",
                     help='lines {"id": "<classification>_<idx>", "step_scores": [p, ...]}')
    prm.add_argument("--threshold", type=float, default=0.5, help="a step scoring below this is an error (default 0.5)")
    _add_judge_and_json(prm)

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


# Options that only mean something when a judge model runs (None / False = not given).
JUDGE_OPTIONS = ("k", "prompt_style", "max_new_tokens", "max_model_len", "backend", "enforce_eager", "save_scores")


def _add_judge_and_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge", metavar="MODEL_OR_RUN",
        help="judge the steps with a model instead of reading --scores: a model directory, a hub name, "
        "or a run directory (runs/<name>: its final judge and prompt style)",
    )
    judge = parser.add_argument_group("with --judge")
    judge.add_argument(
        "--k", type=_positive_int, default=None, metavar="K",
        help="critiques per step (default 1 = greedy; K > 1 samples at temperature 1.0)",
    )
    judge.add_argument(
        "--prompt-style", choices=("compact", "paper"), default=None,
        help="judge prompt format (default: the run's models.prompt_style, else paper)",
    )
    judge.add_argument(
        "--max-new-tokens", type=_positive_int, default=None, metavar="N",
        help="critique length limit (default: the run's judge.sampling.max_new_tokens, else 96)",
    )
    judge.add_argument(
        "--max-model-len", type=_positive_int, default=None, metavar="TOKENS",
        help="prompt + critique limit (default: the run's judge.max_model_len_tokens, else the model's "
        "context up to 8192)",
    )
    judge.add_argument("--backend", choices=("vllm", "transformers"), default=None, help="engine (default vllm)")
    judge.add_argument(
        "--enforce-eager", action="store_true", default=None,
        help="vLLM without compilation / CUDA graphs: starts faster, decodes slower (small files)",
    )
    judge.add_argument(
        "--save-scores", type=Path, default=None, metavar="OUT.jsonl",
        help="also write the judged step scores in the --scores format (re-score without the model)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        if args.benchmark == "processbench":
            figures, table = _processbench(args)
        elif args.benchmark == "bon":
            figures, table = _bon(args)
        elif args.benchmark == "prmbench":
            figures, table = _prmbench(args)
        else:
            figures, table = _math(args)
    except DataError as exc:
        print(f"rprm-ray eval {args.benchmark}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(figures) if args.json else table)
    return 0


def check_score_source(args: argparse.Namespace) -> None:
    """Exactly one of --scores / --judge, and judge options only with --judge."""
    if args.scores is not None and args.judge is not None:
        raise DataError("pass either --scores SCORES.jsonl or --judge MODEL_OR_RUN, not both")
    if args.scores is None and args.judge is None:
        raise DataError("one of --scores SCORES.jsonl or --judge MODEL_OR_RUN is required")
    if args.scores is not None:
        given = [name for name in JUDGE_OPTIONS if getattr(args, name, None) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise DataError(f"{flags} only apply with --judge MODEL_OR_RUN (not with --scores)")


def _judge_options(args: argparse.Namespace) -> Any:
    from rprm_ray.evaluation.judged import JudgeOptions

    return JudgeOptions(
        k=args.k or 1,
        prompt_style=args.prompt_style,
        max_new_tokens=args.max_new_tokens,
        max_model_len=args.max_model_len,
        backend=args.backend or "vllm",
        enforce_eager=bool(args.enforce_eager),
    )


def _save_scores(path: Path, ids: list[str], scores: dict[str, Any]) -> None:
    """SCORES.jsonl lines in the benchmark file's order, readable back by --scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": ident, "step_scores": scores[ident]}) + "\n" for ident in ids))
    print(f"step scores -> {path}", file=sys.stderr)


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

    check_score_source(args)
    items = [item for path in args.data for item in load_processbench(path)]
    if len({item.subset for item in items}) < len(args.data):
        raise DataError(f"--data: two files share a subset name ({', '.join(str(p) for p in args.data)})")
    _check_unique_ids([item.id for item in items])
    if args.scores is not None:
        return processbench_report(items, _read_scores(args.scores, nested=False), args.threshold, str(args.scores))

    from rprm_ray.evaluation import judged

    step_scores = judged.score_with_judge(args.judge, _judge_options(args), judged.processbench_plan(items))
    scores = judged.processbench_scores(step_scores)
    if args.save_scores is not None:
        _save_scores(args.save_scores, [item.id for item in items], scores)
    return processbench_report(items, scores, args.threshold, f"--judge {args.judge}")


def _check_unique_ids(ids: list[str]) -> None:
    # Scores are looked up by id alone, so two subsets sharing an id would share its scores.
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise DataError(f"--data: id {ident!r} appears in two files; ids must be unique across subsets")
        seen.add(ident)


def processbench_report(
    items: Sequence[ProcessBenchItem], scores: dict[str, Any], threshold: float, where: str
) -> tuple[dict, str]:
    """(JSON figures, table) from per-item step scores, whichever source they came from."""
    from rprm_ray.evaluation.processbench import evaluate_processbench

    result = evaluate_processbench(items, scores, threshold, where=where)
    figures = result.as_dict()
    figures["threshold"] = threshold
    lines = [f"ProcessBench (threshold {threshold:g})", _row("subset", "error_acc", "correct_acc", "F1", "n_err", "n_cor", "missing")]
    for r in result.subsets.values():
        lines.append(_row(r.subset, f"{r.error_acc:.1f}", f"{r.correct_acc:.1f}", f"{r.f1:.1f}", r.num_error, r.num_correct, r.num_missing_scores))
    if len(result.subsets) > 1:
        lines.append(_row("mean", f"{result.error_acc:.1f}", f"{result.correct_acc:.1f}", f"{result.f1:.1f}", "", "", ""))
    return figures, "\n".join(lines)


def _prmbench(args: argparse.Namespace) -> tuple[dict, str]:
    from rprm_ray.data import read_prmbench

    check_score_source(args)
    data = read_prmbench(args.data)
    if args.scores is not None:
        scores, where = _read_scores(args.scores, nested=False), str(args.scores)
    else:
        from rprm_ray.evaluation import judged
        from rprm_ray.evaluation.prmbench import labeled_steps_table

        step_scores = judged.score_with_judge(args.judge, _judge_options(args), labeled_steps_table(data.items))
        scores, where = judged.processbench_scores(step_scores), f"--judge {args.judge}"
        if args.save_scores is not None:
            _save_scores(args.save_scores, [item.id for item in data.items], scores)
    return prmbench_report(data, scores, args.threshold, where)


def prmbench_report(data: Any, scores: dict[str, Any], threshold: float, where: str) -> tuple[dict, str]:
    """(JSON figures, table) of PRMBench's PRMScores; `data` is a read_prmbench result."""
    from rprm_ray.evaluation.prmbench import GROUPS, evaluate_prmbench

    result = evaluate_prmbench(data.items, scores, threshold, where=where)
    figures = result.as_dict()
    figures.update(threshold=threshold, items=len(data.items),
                   ignored_error_steps=len(data.ignored_error_steps), repeated_ids=len(data.repeated_ids))
    lines = [f"PRMBench (threshold {threshold:g}): {len(data.items)} items", _row("category", "PRMScore")]
    for group, members in GROUPS.items():
        for name in members:
            if name in result.categories:
                lines.append(_row(name, f"{result.categories[name]:.1f}"))
        if group in result.groups:
            lines.append(_row(group, f"{result.groups[group]:.1f}"))
    for name, value in result.categories.items():
        if not any(name in members for members in GROUPS.values()):
            lines.append(_row(name, f"{value:.1f}"))
    lines.append(_row("Overall", f"{result.overall:.1f}"))
    lines.append(f"ignored error steps past the last step: {len(data.ignored_error_steps)}; "
                 f"repeated ids (first kept): {len(data.repeated_ids)}; missing step scores: {result.num_missing_scores}")
    return figures, "\n".join(lines)


def _bon(args: argparse.Namespace) -> tuple[dict, str]:
    from rprm_ray.data import load_bon_candidates

    check_score_source(args)
    items = load_bon_candidates(args.data)
    if args.scores is not None:
        return bon_report(items, _read_scores(args.scores, nested=True), args.agg, str(args.scores))

    from rprm_ray.evaluation import judged

    step_scores = judged.score_with_judge(args.judge, _judge_options(args), judged.bon_plan(items))
    scores = judged.bon_scores(step_scores, items)
    if args.save_scores is not None:
        _save_scores(args.save_scores, [item.id for item in items], scores)
    return bon_report(items, scores, args.agg, f"--judge {args.judge}")


def bon_report(items: Sequence[BonItem], scores: dict[str, Any], agg: str, where: str) -> tuple[dict, str]:
    """(JSON figures, table) from per-candidate step scores, whichever source they came from."""
    from rprm_ray.evaluation.bon import BonProblem, evaluate_best_of_n

    problems = []
    for item in items:
        if item.id not in scores:
            raise DataError(f"{where}: no step_scores for id {item.id!r}")
        per_candidate = scores[item.id]
        if len(per_candidate) != len(item.steps):
            raise DataError(
                f"{where}: id {item.id!r}: {len(per_candidate)} score lists for {len(item.steps)} candidates"
            )
        for c, (cand_scores, cand_steps) in enumerate(zip(per_candidate, item.steps, strict=True)):
            if len(cand_scores) != len(cand_steps):
                raise DataError(
                    f"{where}: id {item.id!r}: candidate {c}: {len(cand_scores)} step scores for {len(cand_steps)} steps"
                )
        problems.append(BonProblem(id=item.id, step_scores=per_candidate, correct=item.labels, answers=item.answers))
    result = evaluate_best_of_n(problems, agg)
    figures = result.as_dict()
    header = ["N", f"best-of-N ({agg})"]
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
