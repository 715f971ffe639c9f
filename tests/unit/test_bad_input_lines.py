"""A recipe with a YAML syntax error and a data file that is not UTF-8 each get one clear line
naming the file and where, never a traceback or PyYAML's multi-line message."""

import pytest

from rprm_ray.config import RecipeError, load_recipe
from rprm_ray.data import DataError, load_math_problems, load_processbench, read_jsonl


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrainer:\n  lr: [1, 2\n  seed: 3\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: not valid YAML at line 4, column 7: expected ',' or ']', but got ':'"


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.yaml: not UTF-8 text \(byte 9\)$"):
        load_recipe(path)


@pytest.mark.parametrize("loader", [load_processbench, load_math_problems, read_jsonl])
def test_a_data_file_that_is_not_utf8_names_its_line(tmp_path, loader):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "a", "problem": "1+1"}\n{"id": "b", "problem": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        loader(path)
    assert str(err.value) == f"{path}: not UTF-8 text (line 2, byte 57); re-encode it as UTF-8"
