"""The diffusers engine: any diffusers text-to-image pipeline, with CPU and GPU speed-ups.

`engine` loads and draws; `presets` names known models; `accel/` holds one module per
speed-up. Importing this package imports neither torch nor diffusers (the CLI reads the
presets without them); `DiffusersEngine` is imported on first use.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "DiffusersEngine":
        from limner.engines.diffusers.engine import DiffusersEngine

        return DiffusersEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
