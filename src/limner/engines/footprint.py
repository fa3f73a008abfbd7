"""What loaded torch modules hold, per device: every parameter's and buffer's storage,
each counted once (tied and shared weights are one storage)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def module_bytes(modules: Iterable[object]) -> dict[str, int]:
    """Parameters and buffers, and tensors a module keeps as plain attributes (packed
    layers keep their oneDNN weights so, where `parameters()` does not see them)."""
    held: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        kept = (value for sub in module.modules() for value in vars(sub).values()
                if isinstance(value, torch.Tensor))
        for tensor in (*module.parameters(), *module.buffers(), *kept):
            device = _device(tensor.device)
            try:
                storage = tensor.untyped_storage()
                key, size = (device, storage.data_ptr()), storage.nbytes()
            except (RuntimeError, NotImplementedError):  # opaque layouts (mkldnn) have none
                key, size = (device, id(tensor)), tensor.numel() * tensor.element_size()
            if key in seen or key[1] == 0:
                continue
            seen.add(key)
            held[device] = held.get(device, 0) + size
    return held


def folder_bytes(folder: Path, suffixes: tuple[str, ...] = (".safetensors", ".bin", ".pt",
                                                            ".pth", ".npz")) -> int:
    """The weight files' size: what loading them at their own precision holds."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in suffixes)


def _device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return device.type
