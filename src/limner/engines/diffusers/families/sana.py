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
    openvino_encoders = ("text_encoder",)

    def size_kwargs(self, pipe: Any, width: int, height: int) -> dict[str, Any]:
        """The pipeline bins every size to its trained aspect ratios at its own area, and
        scales the result back: a smaller `native_size` (a CPU's faster draw) would still be
        drawn at full size. Below the model's area the engine's own size is drawn as it is."""
        native = self.native(pipe)
        return {"use_resolution_binning": False} if width * height < 0.8 * native * native \
            else {}


class SanaSprint(Sana):
    """Sana-Sprint: distilled to one or two steps, guidance embedded, no negative prompt."""

    name = "sana-sprint"
    pipelines = ("SanaSprintPipeline",)
    steps: ClassVar = {"low": 1, "medium": 2, "high": 4}

    def steps_kwargs(self, pipe: Any, steps: int) -> dict[str, Any]:
        """Its pipeline's default intermediate timestep (1.3) is for two steps only, and it
        refuses any other count while one is set."""
        return {} if steps == 2 else {"intermediate_timesteps": None}
