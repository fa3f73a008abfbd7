"""Torch-free records that cross the line between the service and the engines.

The service turns a validated request into one `GenerationParams`; the scheduler groups
several into a batch; an engine turns a batch into pictures, reporting each step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Quality = Literal["low", "medium", "high", "xhigh", "max"]
"""How much work an engine puts into a picture: each level has its own number of steps."""
QUALITY_LEVELS: tuple[Quality, ...] = ("low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class Adapter:
    """A LoRA to draw with: its name (what requests and `/v1/models` call it), the file or
    folder it is read from, and how strongly it applies (0 changes nothing)."""

    name: str
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class GenerationParams:
    """What an engine needs to draw the `n` images of one request.

    `width`/`height` are the exact pixel size the client asked for; an engine may draw at
    its native size and leave the final resize to `limner.imaging`. `seeds` holds one seed
    per image, so `len(seeds)` is `n`. `steps=None` means "the engine's default for
    `quality`".
    """

    prompt: str
    width: int
    height: int
    seeds: tuple[int, ...]
    quality: Quality = "medium"
    steps: int | None = None
    transparent: bool = False
    style: str | None = None
    min_steps: int = 0
    """At least this many steps whatever the quality: a GIF's frames are its steps."""
    negative_prompt: str | None = None
    guidance: float | None = None
    """The classifier-free guidance scale; `None`: the engine's own."""
    scheduler: str | None = None
    """One of `SAMPLERS`; `None`: the engine's own."""
    init_image: Image.Image | None = field(default=None, compare=False, repr=False)
    """An edit's starting picture: RGBA at exactly `width` x `height`, drawn over from a
    noised start (`strength`); `None` for a generation from noise."""
    mask: Image.Image | None = field(default=None, compare=False, repr=False)
    """With `init_image`: mode `L` at the same size, 255 where the picture is redrawn and 0
    where the input is kept. `None`: everything is redrawn at `strength`."""
    strength: float = 1.0
    """How far towards noise the starting picture goes before the denoising (1.0 keeps
    nothing of it but the kept region of `mask`); only with `init_image`."""
    references: tuple[Image.Image, ...] = field(default=(), compare=False, repr=False)
    """An edit's pictures as given (before `init_image` lays them out as one), for models
    that take them as references (`EngineInfo.references`)."""

    adapters: tuple[Adapter, ...] = ()
    """LoRAs applied for this request only, in order (`EngineInfo.adapters` says whether the
    engine takes them); a batch shares them (the scheduler's key)."""

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def edit(self) -> EditKind:
        """What kind of work it is: a batch holds one kind only (the scheduler's key)."""
        if self.init_image is None:
            return "generate"
        return "inpaint" if self.mask is not None else "redraw"


EditKind = Literal["generate", "redraw", "inpaint"]


SAMPLERS = ("euler", "euler_a", "dpm++", "ddim", "lcm")
"""Sampler names a request may ask for (`scheduler`), where an engine offers a choice."""
CONTROLS = ("negative_prompt", "guidance_scale", "scheduler")
"""The sampling extensions an engine may or may not honour (`EngineInfo.controls`)."""

PreviewFn = Callable[[], list[list[Image.Image]]]
"""Decodes the current state of every image in the batch: one list per request."""


@dataclass(frozen=True)
class StepUpdate:
    """Reported by an engine after each denoising step (1-based `step` of `total`)."""

    step: int
    total: int
    preview: PreviewFn = field(repr=False)


StepCallback = Callable[[StepUpdate], None]
"""Called by engines after every step. Raising `GenerationCancelled` stops the batch
before the final decode."""


class GenerationCancelled(Exception):
    """Raised from a step callback to stop a batch whose clients have all gone away."""


def batch_size(batch: Sequence[GenerationParams]) -> int:
    """Number of images a batch draws."""
    return sum(p.n for p in batch)
