"""What loaded torch modules hold, per device: every parameter's and buffer's storage,
each counted once (tied and shared weights are one storage)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def module_bytes(modules: Iterable[object]) -> dict[str, int]:
    held: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            storage = tensor.untyped_storage()
            device = _device(tensor.device)
            key = (device, storage.data_ptr())
            if key in seen or storage.data_ptr() == 0:
                continue
            seen.add(key)
            held[device] = held.get(device, 0) + storage.nbytes()
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
