"""Sana and Sana-Sprint: a linear-attention transformer over a 32x deep-compression
autoencoder's 32 channels; no image-to-image pipeline in diffusers for Sana itself."""

from __future__ import annotations

from typing import Any, ClassVar

from limner.engines.diffusers.families.base import Family


class Sana(Family):
    name = "sana"
    openvino = "auto"
    pipelines = ("SanaPipeline",)
    native_size = 1024
    grid = 32
    steps: ClassVar = {"low": 10, "medium": 20, "high": 30}
    edit_way = "generic"


class SanaSprint(Sana):
    """Sana-Sprint: distilled to one or two steps, guidance embedded, no negative prompt."""

    name = "sana-sprint"
    pipelines = ("SanaSprintPipeline",)
    steps: ClassVar = {"low": 1, "medium": 2, "high": 4}

    def steps_kwargs(self, pipe: Any, steps: int) -> dict[str, Any]:
        """Its pipeline's default intermediate timestep (1.3) is for two steps only, and it
        refuses any other count while one is set."""
        return {} if steps == 2 else {"intermediate_timesteps": None}
