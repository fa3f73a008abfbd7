"""Z-Image (Turbo): a single-stream transformer over FLUX.1's 16-channel latents, unpacked
in the loop; CFG for the negative prompt."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.base import Family


class ZImage(Family):
    name = "z-image"
    pipelines = ("ZImagePipeline",)
    native_size = 1024
    grid = 16
    # Z-Image-Turbo's published setting (8 transformer passes).
    steps: ClassVar = {"low": 4, "medium": 8, "high": 12}
    tiny_channels = 16
    openvino = "decoder"
