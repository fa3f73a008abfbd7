"""Stable Diffusion 1.x and 2.x (v-prediction is the scheduler's business), SD-Turbo, SDXS:
a UNet over 4-channel latents, CFG for the negative prompt, discrete-time samplers."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.base import Family

SD_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173),
                 (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
"""Latent channels -> RGB for SD 1.x/2.x latents: a preview with no VAE decode."""


class StableDiffusion(Family):
    name = "sd"
    openvino = "auto"
    pipelines = ("StableDiffusionPipeline",)
    native_size = 512
    grid = 64
    # A folder with no preset is most often a distilled one (SD-Turbo, SDXS) on a CPU.
    steps: ClassVar = {"low": 1, "medium": 2, "high": 4}
    samplers = True
    tiny_channels = 4
    latent_rgb = SD_LATENT_RGB
