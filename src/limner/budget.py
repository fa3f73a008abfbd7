"""The memory the loaded models may hold, per device: `max_model_memory` read once.

A size is bytes (`12884901888`), a binary or decimal unit (`"12GiB"`, `"500MB"`) or a share of
the device's own memory (`"80%"`). One value holds for every device; a table names devices
(`{cpu = "16GiB", "cuda:0" = "70GiB"}`, `cuda` for every GPU not named). Torch is imported
only to measure a GPU, and only when a model on one asks.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Size = int | str
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
         "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20,
         "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
DEFAULT = "80%"
"""Of each device: room for the operating system, the server and each draw's activations."""


def parse_size(value: Size, total: int | None, where: str = "max_model_memory") -> int | None:
    """Bytes from a size; None for a share of a device whose size is unknown."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected bytes, a size like '12GiB' or a share like '80%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{where}: a size cannot be negative")
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not a share like '80%'") from None
        if not 0 < share <= 100:
            raise ValueError(f"{where}: a share must be above 0% and at most 100%")
        return None if total is None else int(total * share / 100)
    match = _SIZE.match(text)
    if match is None or match.group(2).lower() not in UNITS:
        raise ValueError(f"{where}: {value!r} is not a size like '12GiB', '500MB' or '80%'")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def device_total(device: str) -> int | None:
    """The memory a device has: the machine's RAM for `cpu`, the card's for `cuda:N`."""
    if device == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device.startswith("cuda") and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            index = int(device.partition(":")[2] or 0)
            return int(torch.cuda.get_device_properties(index).total_memory)
    return None


def device_name(device: str) -> str:
    """`cuda` is the first card, as torch means it."""
    return "cuda:0" if device == "cuda" else device


@dataclass
class Budget:
    """How many bytes each device may give the loaded models; `limit` is None: no bound."""

    setting: Size | Mapping[str, Size] | None = DEFAULT
    totals: Callable[[str], int | None] = device_total
    _limits: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device, value in self._values().items():  # a typo fails at start, not at a load
            parse_size(value, 1, f"max_model_memory.{device}" if device else
                       "max_model_memory")

    def _values(self) -> dict[str, Size]:
        if self.setting is None:
            return {}
        if isinstance(self.setting, Mapping):
            return {device_name(str(k)): v for k, v in self.setting.items()}
        return {"": self.setting}

    def limit(self, device: str) -> int | None:
        device = device_name(device)
        if device not in self._limits:
            values = self._values()
            value = values.get(device)
            if value is None and device.startswith("cuda:"):
                value = values.get("cuda")
            if value is None:
                value = values.get("")
            self._limits[device] = None if value is None else parse_size(
                value, self.totals(device))
        return self._limits[device]


def gib(amount: int) -> str:
    """A size as people read it in an error message."""
    return f"{amount / 2**30:.2f} GiB" if amount >= 2**30 else f"{amount / 2**20:.1f} MiB"
