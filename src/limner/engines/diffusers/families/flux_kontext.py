"""FLUX.1 Kontext: FLUX.1-dev that edits by instruction, the picture as its reference
(one picture; the call takes `image`)."""

from __future__ import annotations

from typing import Any, ClassVar

from limner.engines.diffusers.families.flux import Flux


class FluxKontext(Flux):
    name = "flux-kontext"
    pipelines = ("FluxKontextPipeline",)
    steps: ClassVar = {"low": 10, "medium": 20, "high": 28}
    edit_way = "reference"
    references = 1

    def size_kwargs(self, pipe: Any, width: int, height: int) -> dict[str, Any]:
        """Kontext scales its size to `max_area` (1024x1024 by default) whatever is asked."""
        return {"max_area": width * height}
