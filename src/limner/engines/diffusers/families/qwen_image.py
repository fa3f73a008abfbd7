"""Qwen-Image: a transformer over 16-channel latents of a 3-D (video-style) VAE, packed 2x2
into a sequence; the negative prompt and the real guidance through `true_cfg_scale`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from limner.engines.diffusers.families.base import Family, packed_grid


class QwenImage(Family):
    name = "qwen-image"
    pipelines = ("QwenImagePipeline",)
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 20, "medium": 30, "high": 50}
    guidance_argument = "true_cfg_scale"
    negative = "true_cfg"

    def latent_grid(self, pipe: Any, latents: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
        if latents.ndim != 3:
            return latents
        factor = int(pipe.vae_scale_factor) * 2
        rows, columns = packed_grid(latents.shape[1], width, height)
        grid: torch.Tensor = pipe._unpack_latents(latents, rows * factor, columns * factor,
                                                  pipe.vae_scale_factor)
        return grid  # (B, C, 1, h, w)

    def vae_input(self, pipe: Any, grid: torch.Tensor) -> torch.Tensor:
        config = pipe.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(grid.device, grid.dtype)
        std = torch.tensor(config.latents_std).view(shape).to(grid.device, grid.dtype)
        return grid * std + mean

    def decode(self, pipe: Any, vae_latents: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        frames: torch.Tensor = vae.decode(vae_latents.to(vae.dtype), return_dict=False)[0]
        return frames[:, :, 0]

    def encode(self, pipe: Any, pixels: torch.Tensor, generator: torch.Generator
               ) -> torch.Tensor:
        """A picture as a one-frame video, normalised as the pipeline normalises latents."""
        vae = pipe.vae
        out = vae.encode(pixels.unsqueeze(2).to(vae.dtype))
        raw: torch.Tensor = out.latent_dist.sample(generator)
        config = vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(raw.device, torch.float32)
        std = torch.tensor(config.latents_std).view(shape).to(raw.device, torch.float32)
        return ((raw.float() - mean) / std).to(raw.dtype)
