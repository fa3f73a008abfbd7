"""FLUX.2 (dev, with a Mistral encoder) and FLUX.2 klein (Qwen3): 32-channel latents
patchified 2x2 and batch-normalised, as a sequence; reference images for edits; no negative
prompt (the call takes none)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from limner.engines.diffusers.families.base import Family, packed_grid


class Flux2(Family):
    name = "flux2"
    openvino = "auto"
    pipelines = ("Flux2Pipeline",)
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 10, "medium": 28, "high": 50}
    edit_way = "reference"
    references = 10

    def latent_grid(self, pipe: Any, latents: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
        """The sequence in row-major order (as `_prepare_latent_ids` numbers it) as a grid of
        2x2 patches, (B, 4C, h/2, w/2)."""
        if latents.ndim != 3:
            return latents
        batch, tokens, channels = latents.shape
        rows, columns = packed_grid(tokens, width, height)
        return latents.view(batch, rows, columns, channels).permute(0, 3, 1, 2)

    def cell_pixels(self, pipe: Any) -> int:
        return int(pipe.vae_scale_factor) * 2

    def vae_input(self, pipe: Any, grid: torch.Tensor) -> torch.Tensor:
        bn = pipe.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(grid.device, grid.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps
                         ).to(grid.device, grid.dtype)
        patches: torch.Tensor = pipe._unpatchify_latents(grid * std + mean)
        return patches


class Flux2Klein(Flux2):
    name = "flux2-klein"
    pipelines = ("Flux2KleinPipeline",)
    # The distilled klein models' published setting; a base (undistilled) klein wants ~50.
    steps: ClassVar = {"low": 2, "medium": 4, "high": 8}
    references = 4
