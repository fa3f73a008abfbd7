"""Qwen-Image: a transformer over 16-channel latents of a 3-D (video-style) VAE, packed 2x2
into a sequence; the negative prompt and the real guidance through `true_cfg_scale`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from limner.engines.diffusers.families.base import Family, unpack_2x2


class QwenImage(Family):
    name = "qwen-image"
    pipelines = ("QwenImagePipeline",)
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 20, "medium": 30, "high": 50}
    guidance_argument = "true_cfg_scale"
    negative = "true_cfg"
    openvino = "decoder"

    def latent_grid(self, pipe: Any, latents: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
        return unpack_2x2(pipe, latents, width, height)  # (B, C, 1, h, w)

    def vae_input(self, pipe: Any, grid: torch.Tensor) -> torch.Tensor:
        mean, std = _statistics(pipe.vae.config, grid)
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
        mean, std = _statistics(vae.config, raw.float())
        return ((raw.float() - mean) / std).to(raw.dtype)


def _statistics(config: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and deviation, shaped for (B, C, T, h, w)."""
    shape = (1, config.z_dim, 1, 1, 1)
    mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std
