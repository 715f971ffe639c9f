"""Arrow schemas of every batch that travels between roles, with validation and Parquet I/O.

Every hop between actors carries a `pyarrow.Table` of one of these kinds. Rows carry stable ids
(problem_id, solution_id, prefix_id, step_idx, candidate_id, sample_idx) so a retried stage
overwrites instead of double-counting. `validate(table, kind)` raises `BatchError` naming the
first bad row and column; Parquet files round-trip exactly and load with `datasets`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class BatchError(ValueError):
    """A batch that does not match its schema; the message names kind, column and row."""


_str = pa.string()
_strs = pa.list_(pa.string())
_i32 = pa.int32()
_f64 = pa.float64()
_bool = pa.bool_()


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(name, typ, nullable=nullable) for name, typ, nullable in fields])


SCHEMAS: dict[str, pa.Schema] = {
    # Questions to solve. `answer` is the reference final answer (null where unknown).
    "problems": _schema(
        ("problem_id", _str, False),
        ("question", _str, False),
        ("answer", _str, True),
        ("source", _str, False),
    ),
    # One row per step to judge (R-PRM step instances, ProcessBench expansion).
    # `label`: True = the step is correct; null when unlabeled (inference).
    "labeled_steps": _schema(
        ("problem_id", _str, False),
        ("solution_id", _str, False),
        ("step_idx", _i32, False),
        ("question", _str, False),
        ("previous_steps", _strs, False),
        ("now_step", _str, False),
        ("label", _bool, True),
    ),
    # Full solutions sampled from the policy.
    "solutions": _schema(
        ("problem_id", _str, False),
        ("sample_idx", _i32, False),
        ("question", _str, False),
        ("text", _str, False),
        ("steps", _strs, False),
        ("answer", _str, True),
        ("finished", _bool, False),
        ("correct", _bool, True),
    ),
    # Partial solutions to extend by one step (search frontiers, PSRLM trajectories).
    "prefixes": _schema(
        ("problem_id", _str, False),
        ("prefix_id", _str, False),
        ("question", _str, False),
        ("prefix_steps", _strs, False),
    ),
    # Candidate next steps for a prefix (PSRLM expansion, search).
    "candidates": _schema(
        ("problem_id", _str, False),
        ("prefix_id", _str, False),
        ("candidate_id", _i32, False),
        ("question", _str, False),
        ("prefix_steps", _strs, False),
        ("step", _str, False),
        ("finished", _bool, False),
        ("num_tokens", _i32, False),
        ("cumulative_logprob", _f64, True),
    ),
    # Pointwise R-PRM critiques, K per step (`sample_idx`). `verdict` is "Yes"/"No" or null when
    # the critique is invalid (no verdict line, or more than one). `p_yes` is null when invalid.
    "critiques": _schema(
        ("problem_id", _str, False),
        ("solution_id", _str, False),
        ("step_idx", _i32, False),
        ("sample_idx", _i32, False),
        ("prompt", _str, False),
        ("critique", _str, False),
        ("verdict", _str, True),
        ("valid", _bool, False),
        ("p_yes", _f64, True),
        ("label", _bool, True),
    ),
    # One score per judged step: mean P(Yes) over valid critiques; null when none was valid.
    "step_scores": _schema(
        ("problem_id", _str, False),
        ("solution_id", _str, False),
        ("step_idx", _i32, False),
        ("score", _f64, True),
        ("num_valid", _i32, False),
        ("num_invalid", _i32, False),
    ),
    # Pairwise PSRLM judgments; each unordered pair is judged in both orders ("AB" and "BA").
    # `winner` is the candidate_id the judge preferred, null when the verdict was unparsable.
    "pairwise_judgments": _schema(
        ("problem_id", _str, False),
        ("prefix_id", _str, False),
        ("candidate_a", _i32, False),
        ("candidate_b", _i32, False),
        ("order", _str, False),
        ("judgment", _str, False),
        ("winner", _i32, True),
        ("valid", _bool, False),
    ),
    # Preference pairs for DPO: R-PRM critique pairs (kind "critique") and PSRLM step pairs
    # (kind "step"). Reference log-probs are filled once before training (null until then).
    "preference_pairs": _schema(
        ("pair_id", _str, False),
        ("kind", _str, False),
        ("problem_id", _str, False),
        ("prompt", _str, False),
        ("chosen", _str, False),
        ("rejected", _str, False),
        ("ref_chosen_logp", _f64, True),
        ("ref_rejected_logp", _f64, True),
    ),
    # One row per searched problem (Best-of-N, beam, greedy, self-judged). `candidate_steps`
    # counts every step generated for the problem, so strategies compare at equal budget;
    # `judge_calls` counts judged rows; the vote columns are null for single-trajectory searches.
    "search_results": _schema(
        ("problem_id", _str, False),
        ("question", _str, False),
        ("reference", _str, True),
        ("strategy", _str, False),
        ("steps", _strs, False),
        ("answer", _str, True),
        ("finished", _bool, False),
        ("correct", _bool, True),
        ("score", _f64, True),
        ("weighted_answer", _str, True),
        ("weighted_correct", _bool, True),
        ("majority_answer", _str, True),
        ("majority_correct", _bool, True),
        ("num_completions", _i32, False),
        ("candidate_steps", _i32, False),
        ("judge_calls", _i32, False),
        ("depth", _i32, False),
        ("rollbacks", _i32, False),
    ),
    # A teacher endpoint's answers, persisted as they arrive: `request_id` fingerprints the request
    # (model, API, prompt, sampling), so a resumed stage asks only for what is missing.
    "teacher_responses": _schema(
        ("request_id", _str, False),
        ("sample_idx", _i32, False),
        ("text", _str, False),
        ("finish_reason", _str, True),
    ),
    # Supervised examples: loss on `completion` tokens only.
    "sft_examples": _schema(
        ("example_id", _str, False),
        ("kind", _str, False),
        ("prompt", _str, False),
        ("completion", _str, False),
    ),
}

# Columns that identify a row: duplicates of these are rejected by `validate`.
KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "labeled_steps": ("solution_id", "step_idx"),
    "solutions": ("problem_id", "sample_idx"),
    "prefixes": ("prefix_id",),
    "candidates": ("prefix_id", "candidate_id"),
    "critiques": ("solution_id", "step_idx", "sample_idx"),
    "step_scores": ("solution_id", "step_idx"),
    "pairwise_judgments": ("prefix_id", "candidate_a", "candidate_b", "order"),
    "preference_pairs": ("pair_id",),
    "sft_examples": ("example_id",),
    "teacher_responses": ("request_id", "sample_idx"),
    "search_results": ("problem_id",),
}


def schema(kind: str) -> pa.Schema:
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise BatchError(f"unknown batch kind {kind!r}; known: {', '.join(SCHEMAS)}") from None


def from_rows(rows: list[dict], kind: str) -> pa.Table:
    """Build a validated table of `kind` from a list of dicts (missing nullable columns -> null)."""
    sch = schema(kind)
    try:
        table = pa.Table.from_pylist(rows, schema=sch)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        for i, row in enumerate(rows):
            try:
                pa.Table.from_pylist([row], schema=sch)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as row_exc:
                raise BatchError(f"{kind}: row {i}: {row_exc}") from None
        raise BatchError(f"{kind}: {exc}") from None
    return validate(table, kind)


def empty(kind: str) -> pa.Table:
    return schema(kind).empty_table()


def validate(table: pa.Table, kind: str, *, where: str = "", allow_empty: bool = True) -> pa.Table:
    """Check `table` against the schema of `kind`; return it cast to the exact schema.

    Raises BatchError naming `where` (a role or file), the column and the first bad row.
    """
    prefix = f"{where}: " if where else ""
    sch = schema(kind)
    if not isinstance(table, pa.Table):
        raise BatchError(f"{prefix}{kind}: expected a pyarrow.Table, got {type(table).__name__}")
    if not allow_empty and table.num_rows == 0:
        raise BatchError(f"{prefix}{kind}: empty table (0 rows)")
    missing = [n for n in sch.names if n not in table.column_names]
    if missing:
        raise BatchError(
            f"{prefix}{kind}: missing column {missing[0]!r} (have: {', '.join(table.column_names)})"
        )
    extra = [n for n in table.column_names if n not in sch.names]
    if extra:
        raise BatchError(f"{prefix}{kind}: unexpected column {extra[0]!r}")
    table = table.select(sch.names)
    columns = []
    for field in sch:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                bad = _first_uncastable(col, field.type)
                raise BatchError(
                    f"{prefix}{kind}: column {field.name!r} must be {field.type}, got {col.type}"
                    + (f" (first bad value at row {bad})" if bad is not None else "")
                ) from None
        if not field.nullable and col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise BatchError(f"{prefix}{kind}: column {field.name!r} is null at row {row}")
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=sch)
    _check_unique_keys(out, kind, prefix)
    return out


def _first_uncastable(col: pa.ChunkedArray, typ: pa.DataType) -> int | None:
    for i, value in enumerate(col.to_pylist()):
        try:
            pa.array([value]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i
    return None


def _check_unique_keys(table: pa.Table, kind: str, prefix: str) -> None:
    keys = KEYS[kind]
    if table.num_rows < 2:
        return
    seen: dict[tuple, int] = {}
    for i, key in enumerate(zip(*(table.column(k).to_pylist() for k in keys), strict=True)):
        if key in seen:
            raise BatchError(
                f"{prefix}{kind}: duplicate row id {dict(zip(keys, key, strict=True))} at rows {seen[key]} and {i}"
            )
        seen[key] = i


def to_parquet(table: pa.Table, path: str | Path, kind: str) -> Path:
    """Validate and write atomically (write to a temp name, then rename), so a killed run never
    leaves a half-written stage output that resume would trust."""
    path = Path(path)
    table = validate(table, kind, where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def from_parquet(path: str | Path, kind: str) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchError(f"{path}: not a readable Parquet file ({exc})") from None
    return validate(table, kind, where=str(path))


def concat(tables: list[pa.Table], kind: str) -> pa.Table:
    if not tables:
        return empty(kind)
    return validate(pa.concat_tables([validate(t, kind) for t in tables]), kind)
