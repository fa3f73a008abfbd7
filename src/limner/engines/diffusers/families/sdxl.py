"""Stable Diffusion XL (and SDXL-Turbo): two CLIP encoders, 4-channel latents, a VAE that
asks to be upcast to float32."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from limner.engines.diffusers.families.base import Family


class StableDiffusionXL(Family):
    name = "sdxl"
    openvino = "auto"
    pipelines = ("StableDiffusionXLPipeline",)
    native_size = 1024
    grid = 64
    steps: ClassVar = {"low": 1, "medium": 2, "high": 4}
    samplers = True
    tiny_channels = 4

    def vae_input(self, pipe: Any, grid: torch.Tensor) -> torch.Tensor:
        config = pipe.vae.config
        scaling = float(config.scaling_factor)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            return (grid * torch.tensor(std).view(shape).to(grid) / scaling
                    + torch.tensor(mean).view(shape).to(grid))
        return grid / scaling

    def prepare(self, pipe: Any, dtype: torch.dtype) -> str | None:
        """`force_upcast` works around float16's range; bfloat16 has float32's, and an edit
        pipeline's upcast would leave packed bf16 layers meeting float32 inputs."""
        vae = getattr(pipe, "vae", None)
        if vae is not None and dtype == torch.bfloat16 \
                and getattr(getattr(vae, "config", None), "force_upcast", False):
            vae.register_to_config(force_upcast=False)
            return "VAE kept in bfloat16 (force_upcast is for float16)"
        return None
