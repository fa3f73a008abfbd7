"""How much memory a pipeline's weights take in a dtype, read from its files' headers (no
weights loaded), and the refusal when that cannot fit on the GPU."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from limner.engines.base import EngineError

_HEADER_LIMIT = 100 * 1024 * 1024
WORKING_MARGIN = 1.15
"""Activations, the CUDA context and allocator slack on top of the weights."""


def parameter_count(folder: Path) -> int:
    """Elements in every safetensors file under `folder` (each counted once: a folder with
    both sharded and single-file copies of a component counts the component's folder)."""
    total = 0
    for path in sorted(folder.rglob("*.safetensors")):
        if path.parent == folder and any(folder.glob("*/*.safetensors")):
            continue  # a single-file checkpoint beside the per-component folders
        total += _elements(path)
    return total


def _elements(path: Path) -> int:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > _HEADER_LIMIT:
            raise EngineError(f"{path} is not a safetensors file")
        header = json.loads(handle.read(size))
    count = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        elements = 1
        for dim in entry["shape"]:
            elements *= int(dim)
        count += elements
    return count


def needed_bytes(folder: Path, dtype_bytes: int) -> int:
    return int(parameter_count(folder) * dtype_bytes * WORKING_MARGIN)


def check_fits(model: str, needed: int, free: int, total: int) -> None:
    """Refuses a load that cannot fit the GPU, naming the options that make it fit."""
    if needed <= free:
        return
    raise EngineError(
        f"{model} needs about {needed / 2**30:.1f} GiB on the GPU in this dtype, and "
        f"{free / 2**30:.1f} of its {total / 2**30:.1f} GiB are free: set offload = \"model\" "
        "(each component on the GPU only while it runs) or offload = \"sequential\" "
        "(layer by layer, slowest) in its engine table")
