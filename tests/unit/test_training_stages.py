"""The model cache's data fingerprint: equal rows give equal keys, any changed row a new one."""

from __future__ import annotations

import pyarrow as pa

from rprm_ray.stages.training_stages import table_fingerprint


def test_fingerprint_follows_the_rows_not_the_buffers() -> None:
    table = pa.table({"prompt": ["Q:1+2\n", "Q:3+4\n"], "completion": ["R:1+2=3", "R:3+4=7"]})
    assert table_fingerprint(table) == table_fingerprint(pa.table(table.to_pydict()))
    # A slice shares its parent's buffers; only its own rows count.
    assert table_fingerprint(table.slice(1)) == table_fingerprint(pa.table({"prompt": ["Q:3+4\n"],
                                                                            "completion": ["R:3+4=7"]}))
    changed = pa.table({"prompt": ["Q:1+2\n", "Q:3+4\n"], "completion": ["R:1+2=3", "R:3+4=8"]})
    assert table_fingerprint(changed) != table_fingerprint(table)
