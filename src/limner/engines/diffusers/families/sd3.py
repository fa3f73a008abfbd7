"""Stable Diffusion 3 and 3.5: an MMDiT over 16-channel latents (unpacked), flow matching,
CFG for the negative prompt."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.base import Family


class StableDiffusion3(Family):
    name = "sd3"
    openvino = "auto"
    pipelines = ("StableDiffusion3Pipeline",)
    openvino_encoders = ("text_encoder_3",)  # T5-XXL, as FLUX.1's
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 10, "medium": 20, "high": 28}
    tiny_channels = 16
