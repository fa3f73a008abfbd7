"""Latent Consistency Models: SD's UNet with a guidance embedding, no negative prompt (the
guidance is distilled into the UNet), image-to-image in diffusers but no inpainting."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.base import Family
from limner.engines.diffusers.families.sd import SD_LATENT_RGB


class LatentConsistency(Family):
    name = "lcm"
    openvino = "auto"
    pipelines = ("LatentConsistencyModelPipeline",)
    native_size = 512
    grid = 64
    steps: ClassVar = {"low": 4, "medium": 6, "high": 8}
    samplers = True
    inpaint_generic = True
    tiny_channels = 4
    latent_rgb = SD_LATENT_RGB
