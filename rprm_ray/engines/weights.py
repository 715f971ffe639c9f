"""Reading HF safetensors checkpoints tensor by tensor, recording a digest of each tensor.

An engine streams a checkpoint through `recording_iterator` into its model, so the checksum it
reports is computed over exactly the tensors it was given (cast to its own dtype), and
`verify_resident` then checks the tensors the engine still holds in memory against those digests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rprm_ray.engines.base import tensor_digest

if TYPE_CHECKING:
    import torch

# hf tensor name -> (shape, digest of the tensor as the engine holds it)
WeightRecord = dict[str, tuple[tuple[int, ...], str]]


def safetensors_files(model_dir: str | Path) -> list[Path]:
    path = Path(model_dir)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / name for name in names]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{path}: no *.safetensors weights (engines load safetensors checkpoints only)"
        )
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: index lists a missing shard: {missing[0].name}")
    return files


def recording_iterator(
    model_dir: str | Path, record: WeightRecord, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, tensor) from every shard; fill `record` as tensors pass through."""
    from safetensors import safe_open

    for file in safetensors_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                record[name] = (tuple(tensor.shape), tensor_digest(tensor))
                yield name, tensor


def read_record(model_dir: str | Path, dtype: torch.dtype | None = None) -> WeightRecord:
    """The record of a checkpoint without loading it anywhere."""
    record: WeightRecord = {}
    for _ in recording_iterator(model_dir, record, dtype):
        pass
    return record


def hf_views(
    name: str, tensor: torch.Tensor, record: WeightRecord, packed: dict[str, list[str]]
) -> list[tuple[str, torch.Tensor]] | None:
    """The HF tensors an engine parameter holds: a fused one (vLLM's qkv_proj = q|k|v rows,
    gate_up_proj = gate|up rows) is split by the recorded shapes; a vocab-padded one is cut to
    the recorded rows. None when the parameter has no HF counterpart in the record."""
    for fused, parts in packed.items():
        marker = f".{fused}."
        if marker in name:
            names = [name.replace(marker, f".{part}.") for part in parts]
            if not all(n in record for n in names):
                return None
            views, row = [], 0
            for n in names:
                rows = record[n][0][0]
                views.append((n, tensor[row : row + rows]))
                row += rows
            return views
    if name not in record:
        return None
    rows = record[name][0][0] if record[name][0] else None
    if rows is not None and tensor.dim() > 0 and tensor.shape[0] > rows:
        tensor = tensor[:rows]
    return [(name, tensor)]


def verify_resident(
    named_params: Iterator[tuple[str, torch.Tensor]],
    record: WeightRecord,
    packed: dict[str, list[str]],
) -> dict[str, object]:
    """Compare every parameter still materialized in memory with the record.

    Returns {"verified": n, "not_resident": n, "mismatched": [names]}. `not_resident` counts
    parameters the engine no longer keeps as plain tensors (vLLM's CPU backend moves linear
    weights into packed oneDNN kernels and leaves an empty parameter) or that have no HF name."""
    verified, not_resident, mismatched = 0, 0, []
    for name, param in named_params:
        if param.numel() == 0 or param.is_meta:
            not_resident += 1
            continue
        views = hf_views(name, param, record, packed)
        if views is None:
            not_resident += 1
            continue
        for hf_name, view in views:
            shape, digest = record[hf_name]
            if tuple(view.shape) != shape or tensor_digest(view) != digest:
                mismatched.append(hf_name)
            else:
                verified += 1
    return {"verified": verified, "not_resident": not_resident, "mismatched": mismatched}
