"""PixArt-Σ (and -α): a DiT over SD's 4-channel latents with a T5 encoder; the old
`callback` step hook (no `callback_on_step_end`), no edit pipeline in diffusers."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.base import Family


class PixArt(Family):
    name = "pixart"
    pipelines = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 10, "medium": 20, "high": 30}
    edit_way = "generic"
    tiny_channels = 4
