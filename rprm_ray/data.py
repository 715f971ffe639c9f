"""Benchmark loaders: ProcessBench, math answer sets (GSM8K, MATH-500, AIME24, AMC23), PRMBench and
Best-of-N candidate files, read with `datasets` from local JSON / JSONL files (or a hub name where
a network exists).

Every problem with a file raises one `DataError` that names the file, the row (0-based, as in
`batches.py`) and the field, so a bad download or a hand-edited file is found in one look.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class DataError(ValueError):
    """A benchmark or results file that cannot be used; the message names file, row and field."""


# --------------------------------------------------------------------------------------------
# Reading rows


def _looks_like_hub_name(source: str) -> bool:
    # "Qwen/ProcessBench": one slash, no file suffix, and not an existing local path.
    return source.count("/") == 1 and not Path(source).suffix and not Path(source).exists()


def read_rows(source: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local JSON array / JSONL file via `datasets`, or of a hub dataset split."""
    source_str = str(source)
    if isinstance(source, str) and _looks_like_hub_name(source_str):
        return _read_hub_rows(source_str, split)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    _check_utf8(path)  # Arrow's JSON reader passes bad bytes through to a crash in to_list()
    from datasets import load_dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # A progress bar per small benchmark file is noise in eval output; restore the caller's setting.
    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        dataset = load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps JSON and schema errors in many types
        rows = _read_json_rows_plainly(path)  # raises a DataError naming the bad line
        raise _UnreadableByDatasets(path, rows, exc) from None
    finally:
        if not bars_were_disabled:
            enable_progress_bars()
    return dataset.to_list()


class _UnreadableByDatasets(DataError):
    """The file is valid JSON but `datasets` could not build one schema (values of one field
    disagree in type across rows). Loaders catch it and check the plainly parsed rows field by
    field, which names the offending row; if their checks pass, this message stands."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], exc: Exception) -> None:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        super().__init__(f"{path}: could not be read as a table of rows ({first_line})")
        self.rows = rows


def _read_hub_rows(name: str, split: str | None) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split or "test")
    except Exception as exc:
        raise DataError(
            f"{name}: not a local file, and loading it from the hub failed "
            f"(split {split or 'test'!r}; no network?): {exc}"
        ) from None
    return dataset.to_list()


def _check_utf8(path: Path, chunk_bytes: int = 1 << 22) -> None:
    """One line naming the first line and byte that is not UTF-8 (streamed: files can be large)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with path.open("rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from the decoder's buffered tail (at most 3 bytes) + this chunk.
                # Negative: the bad sequence began in the previous chunk (no newline inside it).
                at = exc.start - len(exc.object) + len(chunk)
                line = lines + chunk.count(b"\n", 0, max(at, 0))
                raise DataError(f"{path}: not UTF-8 text (line {line}, byte {offset + at}); "
                                f"re-encode it as UTF-8") from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def _read_json_rows_plainly(path: Path) -> list[dict[str, Any]]:
    _check_utf8(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: row {len(rows)} (line {lineno}): malformed JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {len(rows)} (line {lineno}): expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a small JSONL results file (scores, predictions), parsed without `datasets`: these
    files are the project's own and their rows hold ragged nested lists."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return _read_json_rows_plainly(path)


def _rows_or_plain(source: str | Path, split: str | None = None) -> tuple[list[dict[str, Any]], DataError | None]:
    """Rows, plus the error `datasets` raised if it could not build one schema from valid JSON:
    the loader's own field checks then name the bad row; if they pass, the loader raises this."""
    try:
        return read_rows(source, split), None
    except _UnreadableByDatasets as exc:
        return exc.rows, exc


# --------------------------------------------------------------------------------------------
# Field checks


def _where(path: str | Path, i: int, row: dict[str, Any]) -> str:
    ident = row.get("id", row.get("idx"))
    return f"{path}: row {i}" + (f" (id {ident!r})" if ident is not None else "")


def _field(path: str | Path, i: int, row: dict[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
    if name not in row or row[name] is None:
        raise DataError(f"{_where(path, i, row)}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise DataError(f"{_where(path, i, row)}: field {name!r} must be {expected}, got {type(value).__name__}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _str_list(path: str | Path, i: int, row: dict[str, Any], name: str, allow_empty: bool = False) -> list[str]:
    value = _field(path, i, row, name, list)
    if not value and not allow_empty:
        raise DataError(f"{_where(path, i, row)}: field {name!r} is an empty list")
    for j, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"{_where(path, i, row)}: field {name!r}[{j}] must be str, got {type(item).__name__}")
    return value


def _check_unique(path: str | Path, ids: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, ident in enumerate(ids):
        if ident in seen:
            raise DataError(f"{path}: duplicate id {ident!r} at rows {seen[ident]} and {i}")
        seen[ident] = i


# --------------------------------------------------------------------------------------------
# ProcessBench


@dataclass(frozen=True)
class ProcessBenchItem:
    id: str
    generator: str
    problem: str
    steps: list[str]
    final_answer_correct: bool
    label: int  # 0-based index of the first wrong step, -1 if every step is correct
    subset: str  # gsm8k / math / olympiadbench / omnimath (file stem or hub split)


def load_processbench(source: str | Path, subset: str | None = None) -> list[ProcessBenchItem]:
    """A ProcessBench subset from a local JSON file (subset = file stem unless given) or, where a
    network exists, from the hub (`load_processbench("Qwen/ProcessBench", "gsm8k")`)."""
    is_hub = isinstance(source, str) and _looks_like_hub_name(source)
    subset = subset or (None if is_hub else Path(source).stem)
    if subset is None:
        raise DataError(f"{source}: a hub dataset needs a subset (gsm8k, math, olympiadbench, omnimath)")
    rows, unreadable = _rows_or_plain(source, split=subset if is_hub else None)
    items = []
    for i, row in enumerate(rows):
        steps = _str_list(source, i, row, "steps")
        label = _field(source, i, row, "label", int)
        if not -1 <= label < len(steps):
            raise DataError(f"{_where(source, i, row)}: field 'label' is {label}, outside -1..{len(steps) - 1}")
        items.append(
            ProcessBenchItem(
                id=_field(source, i, row, "id", str),
                generator=_field(source, i, row, "generator", str),
                problem=_field(source, i, row, "problem", str),
                steps=steps,
                final_answer_correct=_field(source, i, row, "final_answer_correct", bool),
                label=label,
                subset=subset,
            )
        )
    if unreadable is not None:
        raise unreadable
    if not items:
        raise DataError(f"{source}: no rows")
    _check_unique(source, [item.id for item in items])
    return items


# --------------------------------------------------------------------------------------------
# Math answer sets

# Field names differ per file: MATH-500 / AIME24 / AMC23 have `problem`, GSM8K has `query` and
# `problem`; the first one present is the question.
_QUESTION_FIELDS = ("problem", "question", "query")


def normalize_answer(value: Any) -> str:
    """Reference answer as a string: GSM8K's `... #### 18` -> "18"; AMC's 27.0 -> "27"."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip()


def load_math_problems(source: str | Path, name: str | None = None, split: str | None = None) -> pa.Table:
    """A math benchmark as a `problems` table: problem_id = "<name>-<id>" (name = file stem unless
    given), question, answer (normalised), source = name."""
    from rprm_ray.batches import from_rows

    is_hub = isinstance(source, str) and _looks_like_hub_name(source)
    name = name or (str(source).split("/")[-1] if is_hub else Path(source).stem)
    rows, unreadable = _rows_or_plain(source, split=split)
    out = []
    for i, row in enumerate(rows):
        question_field = next((f for f in _QUESTION_FIELDS if row.get(f) is not None), None)
        if question_field is None:
            raise DataError(f"{_where(source, i, row)}: missing field 'problem' (or 'question' / 'query')")
        question = _field(source, i, row, question_field, str)
        # datasets fills a key missing from one row with None, so look for the first real value
        raw_id = next((row[k] for k in ("id", "unique_id") if row.get(k) is not None), i)
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise DataError(f"{_where(source, i, row)}: field 'id' must be str or int, got {type(raw_id).__name__}")
        answer = None
        if row.get("answer") is not None:
            raw = _field(source, i, row, "answer", (str, int, float))
            answer = normalize_answer(raw)
            if not answer:
                raise DataError(f"{_where(source, i, row)}: field 'answer' is empty")
        out.append({"problem_id": f"{name}-{raw_id}", "question": question, "answer": answer, "source": name})
    if unreadable is not None:
        raise unreadable
    if not out:
        raise DataError(f"{source}: no rows")
    _check_unique(source, [r["problem_id"] for r in out])
    return from_rows(out, "problems")


# --------------------------------------------------------------------------------------------
# PRMBench


@dataclass(frozen=True)
class PRMBenchItem:
    id: str  # "<classification>_<idx>", as in PRMBench's own evaluator
    classification: str
    question: str
    steps: list[str]
    error_steps: list[int]  # 1-based, as in the file


@dataclass(frozen=True)
class PRMBenchData:
    """PRMBench items as PRMBench's own evaluator sees them, and what it set aside to get there."""

    items: list[PRMBenchItem]
    # (item id, 1-based index) of error steps past the item's last step: PRMBench's evaluator never
    # reaches them (it walks the steps), so they are dropped here.
    ignored_error_steps: list[tuple[str, int]]
    # (source, row) of rows whose "<classification>_<idx>" id came earlier: PRMBench keeps the first.
    repeated_ids: list[tuple[str, int]]


def load_prmbench(source: str | Path) -> list[PRMBenchItem]:
    """PRMBench items of one file (see read_prmbench)."""
    return read_prmbench([source]).items


def read_prmbench(sources: list[str | Path]) -> PRMBenchData:
    """PRMBench (PRMBench_Preview / prmtest_classified JSONL: idx, classification,
    modified_question, modified_process, error_steps) from files or directories of .jsonl files,
    read as PRMBench's evaluator reads them: an error step past an item's last step is ignored, and
    of rows sharing an id (across all sources) the first is kept; both are counted. The unmodified
    "correct" copies only feed PRMBench's similarity metric and are not built."""
    items: list[PRMBenchItem] = []
    ignored: list[tuple[str, int]] = []
    repeated: list[tuple[str, int]] = []
    seen: set[str] = set()
    files: list[str | Path] = []
    for source in sources:
        if isinstance(source, Path) and source.is_dir() or isinstance(source, str) and Path(source).is_dir():
            found = sorted(Path(source).glob("*.jsonl"))
            if not found:
                raise DataError(f"{source}: directory has no .jsonl files")
            files += found
        else:
            files.append(source)
    for source in files:
        rows, unreadable = _rows_or_plain(source)
        for i, row in enumerate(rows):
            steps = _str_list(source, i, row, "modified_process")
            error_steps = _field(source, i, row, "error_steps", list)
            classification = _field(source, i, row, "classification", str)
            idx = _field(source, i, row, "idx", (str, int))
            ident = f"{classification}_{idx}"
            kept, past_end = [], []
            for j, step in enumerate(error_steps):
                if not isinstance(step, int) or isinstance(step, bool) or step < 1:
                    raise DataError(
                        f"{_where(source, i, row)}: field 'error_steps'[{j}] is {step!r}; expected a 1-based step "
                        f"index in 1..{len(steps)}"
                    )
                (past_end if step > len(steps) else kept).append(step)
            question = _field(source, i, row, "modified_question", str)
            if ident in seen:
                repeated.append((str(source), i))
                continue
            seen.add(ident)
            ignored += [(ident, step) for step in past_end]
            items.append(PRMBenchItem(id=ident, classification=classification, question=question,
                                      steps=steps, error_steps=kept))
        if unreadable is not None:
            raise unreadable
        if not rows:
            raise DataError(f"{source}: no rows")
    return PRMBenchData(items, ignored, repeated)


# --------------------------------------------------------------------------------------------
# Best-of-N candidate files


@dataclass(frozen=True)
class BonItem:
    id: str
    question: str
    steps: list[list[str]]  # one list of steps per candidate solution
    labels: list[bool]  # per candidate: is its final answer correct
    answers: list[str | None] | None  # per candidate final answer (enables weighted BoN / majority)


def load_bon_candidates(source: str | Path) -> list[BonItem]:
    """Per-problem candidate solutions: `id, question, steps: [[str]], labels: [bool]`, optional
    `answers: [str | null]`. Read plainly (candidates are ragged nested lists)."""
    rows = read_jsonl(source)
    items = []
    for i, row in enumerate(rows):
        ident = _field(source, i, row, "id", (str, int))
        candidates = _field(source, i, row, "steps", list)
        if not candidates:
            raise DataError(f"{_where(source, i, row)}: field 'steps' has no candidates")
        for c, cand in enumerate(candidates):
            if not isinstance(cand, list) or not all(isinstance(s, str) for s in cand):
                raise DataError(f"{_where(source, i, row)}: field 'steps'[{c}] must be a list of str")
        labels = _field(source, i, row, "labels", list)
        if len(labels) != len(candidates) or not all(isinstance(x, bool) for x in labels):
            raise DataError(
                f"{_where(source, i, row)}: field 'labels' must be {len(candidates)} booleans, one per candidate"
            )
        answers = row.get("answers")
        if answers is not None and (
            not isinstance(answers, list)
            or len(answers) != len(candidates)
            or not all(a is None or isinstance(a, str) for a in answers)
        ):
            raise DataError(
                f"{_where(source, i, row)}: field 'answers' must be {len(candidates)} strings (or null), one per candidate"
            )
        items.append(
            BonItem(
                id=str(ident),
                question=_field(source, i, row, "question", str),
                steps=candidates,
                labels=labels,
                answers=answers,
            )
        )
    if not items:
        raise DataError(f"{source}: no rows")
    _check_unique(source, [item.id for item in items])
    return items
