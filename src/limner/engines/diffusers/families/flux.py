"""FLUX.1 (dev and schnell): a transformer over 16-channel latents packed 2x2 into a
sequence, CLIP and T5 encoders, a distilled guidance embedding (dev only), the negative
prompt through `true_cfg_scale` (a second pass per step)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from limner.engines.diffusers.families.base import Family, unpack_2x2


def guidance_embedded(pipe: Any) -> bool:
    """FLUX.1-dev's transformer embeds the guidance scale; schnell's ignores it."""
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    return bool(getattr(config, "guidance_embeds", False))


class Flux(Family):
    name = "flux"
    openvino = "auto"
    pipelines = ("FluxPipeline",)
    native_size = 1024
    grid = 16
    steps: ClassVar = {"low": 10, "medium": 20, "high": 28}
    tiny_channels = 16
    openvino_encoders = ("text_encoder_2",)

    def default_steps(self, pipe: Any) -> Mapping[str, int]:
        """Schnell (no guidance embedding) is distilled to one to four steps."""
        return self.steps if guidance_embedded(pipe) else {"low": 1, "medium": 2, "high": 4}

    def controls(self, pipe: Any) -> frozenset[str]:
        controls = super().controls(pipe)
        return controls if guidance_embedded(pipe) else controls - {"guidance_scale"}

    def latent_grid(self, pipe: Any, latents: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
        return unpack_2x2(pipe, latents, width, height)
