"""The narrow interface every engine implements, and the errors it may raise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from limner.jobs import GenerationParams, StepCallback


@dataclass(frozen=True)
class EngineInfo:
    """What the planner needs to know about an engine before any work starts."""

    name: str
    native_width: int
    native_height: int
    draws_alpha: bool
    """True when the model itself draws an alpha channel (then `transparent` is native)."""
    max_batch_images: int = 8
    speedups: tuple[str, ...] = ()
    """The speed-ups it runs with now, as its load settled them (reported in `/metrics`)."""
    controls: frozenset[str] = frozenset()
    """Which of `jobs.CONTROLS` it honours; a request with another is refused (400)."""
    max_steps: int = 64
    """The most denoising steps a request's `steps` may ask for."""
    edits: bool = False
    """True when it draws over a starting picture (`GenerationParams.init_image`, with or
    without `mask`): edits and variations; otherwise they are refused (400)."""
    adapters: bool = False
    """True when it takes LoRAs per request (`GenerationParams.adapters`); otherwise a
    request naming one is refused (400)."""
    references: int = 0
    """For an instruction-edit model, the most pictures one edit may give it (each a
    reference, `GenerationParams.references`); 0: several pictures are laid out as one
    starting picture."""


class EngineError(Exception):
    """An engine failed while drawing; the batch's requests fail, the server keeps serving."""


@runtime_checkable
class Engine(Protocol):
    """Draws pictures for a batch of requests.

    `generate` runs in a worker thread, never on the event loop. It returns one list of
    PIL images per request, `params.n` images each, in seed order. Images may be RGB or
    RGBA (RGBA only when `info.draws_alpha`), at any size: `limner.imaging` makes the
    exact requested size. After every denoising step it calls `on_step`; when that raises
    `GenerationCancelled`, it stops at once and skips the final decode.

    With `info.edits`, a batch may be edits (all of one `GenerationParams.edit` kind and
    strength): each starts from its `init_image` noised to `strength`, and with a `mask`
    keeps the unmasked region at every step. The service composites the input's pixels back
    outside the mask afterwards, so an engine need not be exact there.
    """

    @property
    def info(self) -> EngineInfo: ...

    def load(self) -> None: ...

    def estimate_memory(self) -> Mapping[str, int]:
        """Bytes a load will hold per device (`cpu`, `cuda:0`), known before it loads (from
        its files); empty where that is unknown."""

    def memory(self) -> Mapping[str, int]:
        """Bytes its loaded weights hold now per device; empty once closed."""

    def generate(
        self,
        batch: Sequence[GenerationParams],
        on_step: StepCallback | None = None,
    ) -> list[list[Image.Image]]: ...

    def close(self) -> None: ...


def split_per_request(images: list[Image.Image], counts: Sequence[int]
                      ) -> list[list[Image.Image]]:
    """A batch's flat list of images -> one list per request, as `Engine.generate` returns."""
    out, start = [], 0
    for count in counts:
        out.append(images[start:start + count])
        start += count
    return out
