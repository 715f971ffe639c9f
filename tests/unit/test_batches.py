"""Arrow batch schemas: validation names the first bad row and column; Parquet round-trips."""

import pyarrow as pa
import pytest

from rprm_ray import batches
from rprm_ray.batches import BatchError


def step_rows(n=3):
    return [
        dict(problem_id="p0", solution_id="s0", step_idx=i, question="Q", previous_steps=["a"] * i,
             now_step=f"step {i}", label=(i != 2))
        for i in range(n)
    ]


def test_from_rows_builds_the_exact_schema():
    t = batches.from_rows(step_rows(), "labeled_steps")
    assert t.schema.equals(batches.SCHEMAS["labeled_steps"])
    assert t.num_rows == 3


def test_every_kind_has_keys_and_an_empty_table():
    for kind in batches.SCHEMAS:
        assert set(batches.KEYS[kind]) <= set(batches.SCHEMAS[kind].names)
        assert batches.empty(kind).num_rows == 0


def test_missing_column_is_named():
    t = batches.from_rows(step_rows(), "labeled_steps").drop_columns(["now_step"])
    with pytest.raises(BatchError, match=r"Judge: labeled_steps: missing column 'now_step'"):
        batches.validate(t, "labeled_steps", where="Judge")


def test_null_in_required_column_names_the_row():
    rows = step_rows()
    t = pa.Table.from_pylist(rows)
    t = t.set_column(t.column_names.index("now_step"), "now_step", pa.array(["x", None, "z"], pa.string()))
    with pytest.raises(BatchError, match=r"column 'now_step' is null at row 1"):
        batches.validate(t, "labeled_steps")


def test_uncastable_value_names_column_and_row():
    rows = step_rows()
    t = pa.Table.from_pylist(rows)
    bad = t.set_column(t.column_names.index("step_idx"), "step_idx", pa.array(["0", "1", "two"]))
    with pytest.raises(BatchError, match=r"column 'step_idx' must be int32.*row 2"):
        batches.validate(bad, "labeled_steps")


def test_from_rows_names_the_bad_row():
    rows = step_rows()
    rows[1]["step_idx"] = "one"
    with pytest.raises(BatchError, match=r"labeled_steps: row 1"):
        batches.from_rows(rows, "labeled_steps")


def test_duplicate_ids_rejected_so_retries_cannot_double_count():
    rows = step_rows() + [step_rows()[0]]
    with pytest.raises(BatchError, match=r"duplicate row id .* at rows 0 and 3"):
        batches.from_rows(rows, "labeled_steps")


def test_empty_allowed_unless_asked():
    e = batches.empty("candidates")
    batches.validate(e, "candidates")
    with pytest.raises(BatchError, match="empty table"):
        batches.validate(e, "candidates", where="PolicyGenerator.expand", allow_empty=False)


def test_unknown_kind():
    with pytest.raises(BatchError, match="unknown batch kind 'nope'"):
        batches.schema("nope")


def test_parquet_round_trip_exact_and_loads_with_datasets(tmp_path):
    t = batches.from_rows(step_rows(), "labeled_steps")
    path = batches.to_parquet(t, tmp_path / "iter_0" / "steps.parquet", "labeled_steps")
    back = batches.from_parquet(path, "labeled_steps")
    assert back.equals(t)
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert ds[2]["now_step"] == "step 2" and ds[2]["label"] is False
    assert not list(tmp_path.rglob("*.tmp"))


def test_from_parquet_errors_name_the_file(tmp_path):
    with pytest.raises(BatchError, match="file not found"):
        batches.from_parquet(tmp_path / "x.parquet", "problems")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(BatchError, match=f"{junk}: not a readable Parquet file"):
        batches.from_parquet(junk, "problems")


def test_concat_validates_each_part():
    a = batches.from_rows(step_rows(2), "labeled_steps")
    # A part with its columns in another order and a wider integer type is cast to the schema
    # before the parts are joined (pyarrow alone refuses to join differing schemas).
    b = pa.Table.from_pylist(step_rows(3)[2:])
    b = b.select(list(reversed(b.column_names)))
    b = b.set_column(b.column_names.index("step_idx"), "step_idx", b.column("step_idx").cast(pa.int64()))
    joined = batches.concat([a, b], "labeled_steps")
    assert joined.schema.equals(batches.SCHEMAS["labeled_steps"])
    assert joined.to_pylist() == batches.from_rows(step_rows(3), "labeled_steps").to_pylist()
    assert batches.concat([], "problems").num_rows == 0
    # A bad part is named by its column, not joined.
    with pytest.raises(BatchError, match=r"labeled_steps: missing column 'now_step'"):
        batches.concat([a, b.drop_columns(["now_step"])], "labeled_steps")
    nulls = b.set_column(b.column_names.index("now_step"), "now_step", pa.array([None], pa.string()))
    with pytest.raises(BatchError, match=r"column 'now_step' is null at row 0"):
        batches.concat([a, nulls], "labeled_steps")
    # Parts that are each valid but repeat a row's key make an invalid whole.
    with pytest.raises(BatchError):
        batches.concat([a, a], "labeled_steps")
