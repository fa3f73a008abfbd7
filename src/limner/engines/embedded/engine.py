"""EmbeddedEngine: the small emoji model that ships inside the package and needs no download.

Hybrid sampling (see docs/MODEL_CARD.md): the prompt's MiniLM vector picks the nearest
emoji from the shipped reference pack; that picture is noised to time `strength` and the
trained net denoises it under the prompt (SDEdit). `strength=1.0` is pure text-to-image.
The 64x64 premultiplied result is un-premultiplied and upscaled to the requested size.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from limner.engines.base import EngineError, EngineInfo, split_per_request
from limner.engines.cpu import cpu_has_bf16
from limner.jobs import GenerationParams, StepCallback, StepUpdate

log = logging.getLogger("limner.engines.embedded")

DEFAULT_STEPS: dict[str, int] = {"low": 4, "medium": 8, "high": 16, "xhigh": 24, "max": 32}
NATIVE = 64


def default_threads() -> int:
    """1 thread on a 2-core box (torch collapses when a second process wants a core)."""
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


class EmbeddedEngine:
    """Draws 64x64 RGBA emoji-style pictures on the CPU, upscaled to the requested size."""

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        name: str = "limner-emoji",
        threads: int | None = None,
        strength: float = 0.6,
        guidance: float = 3.0,
        guidance_above: float = 0.3,
        steps: Mapping[str, int] | None = None,
        upscale: bool = True,
        bf16: bool | None = None,
        max_batch_images: int = 8,
    ) -> None:
        self.weights = Path(weights) if weights is not None else None
        self._name = name
        self.threads = threads or default_threads()
        self.strength = float(strength)
        self.guidance = float(guidance)
        self.guidance_above = float(guidance_above)
        self.steps = {**DEFAULT_STEPS, **dict(steps or {})}
        self.upscale = upscale
        self.bf16 = cpu_has_bf16() if bf16 is None else bf16
        self._max_batch = max_batch_images
        self._net: object = None
        self._refs: object = None
        self._text: object = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name=self._name,
            native_width=NATIVE,
            native_height=NATIVE,
            draws_alpha=True,
            max_batch_images=self._max_batch,
            controls=frozenset({"guidance_scale"}),
            edits=True,
        )

    def load(self) -> None:
        """Load the UNet, reference pack and MiniLM from local files only."""
        from limner.engines.embedded.assets import ASSETS, ReferencePack, load_unet
        from limner.engines.embedded.text import TextEncoder

        torch.set_num_threads(self.threads)
        folder = self.weights or ASSETS
        try:
            self._net = load_unet(folder)
            self._refs = ReferencePack(folder)
            self._text = TextEncoder()
        except Exception as exc:
            raise EngineError(f"could not load the embedded model from {folder}: {exc}") from exc
        log.info(
            "loaded the embedded model from %s (%d threads, bf16=%s)",
            folder,
            self.threads,
            self.bf16,
        )

    def close(self) -> None:
        self._net = self._refs = self._text = None
        self._cache.clear()

    def estimate_memory(self) -> dict[str, int]:
        from limner.engines.embedded.assets import ASSETS
        from limner.engines.footprint import folder_bytes

        return {"cpu": folder_bytes(Path(self.weights or ASSETS))}

    def memory(self) -> dict[str, int]:
        from limner.engines.footprint import module_bytes

        text = getattr(self._text, "model", None)
        return module_bytes([self._net, text])

    def _embed(self, prompt: str) -> torch.Tensor:
        """Unit MiniLM vector for a prompt, with a small LRU cache (retries, n>1, streaming)."""
        from limner.engines.embedded.text import TextEncoder

        if not prompt:  # a variation: the unconditional vector, what guidance pulls away from
            return torch.zeros(384)
        vec = self._cache.get(prompt)
        if vec is None:
            assert isinstance(self._text, TextEncoder)
            vec = self._text.encode([prompt])[0]
            self._cache[prompt] = vec
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(prompt)
        return vec

    def generate(
        self,
        batch: Sequence[GenerationParams],
        on_step: StepCallback | None = None,
    ) -> list[list[Image.Image]]:
        from limner.engines.embedded.assets import ReferencePack
        from limner.engines.embedded.net import STYLE_ANY, STYLES, EmojiUNet
        from limner.engines.embedded.sampler import sample

        net, refs = self._net, self._refs
        if not isinstance(net, EmojiUNet) or not isinstance(refs, ReferencePack):
            raise EngineError("the engine is not loaded")
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        first = batch[0]
        total = max(1, first.steps or self.steps[first.quality], first.min_steps)
        if first.init_image is not None:
            return self._edit(net, batch, total, on_step)
        txts, styles, refs_x, noises = [], [], [], []
        for params in batch:
            vec = self._embed(params.prompt)
            match = refs.nearest(vec)[0]
            available = refs.styles_of(match.concept)
            for seed in params.seeds:
                gen = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
                noises.append(torch.randn((4, NATIVE, NATIVE), generator=gen))
                wanted = params.style.lower() if params.style else ""
                if wanted in STYLES and STYLES.index(wanted) in available:
                    sid = STYLES.index(wanted)
                elif available:
                    sid = available[int(torch.randint(len(available), (1,), generator=gen))]
                else:
                    sid = -1
                styles.append(sid if sid >= 0 else STYLE_ANY)
                refs_x.append(
                    refs.picture(match.concept, sid)
                    if sid >= 0
                    else torch.zeros(4, NATIVE, NATIVE) - 1.0
                )
                txts.append(vec)
        counts = [p.n for p in batch]
        sizes = [(p.width, p.height) for p in batch for _ in p.seeds]

        def hook(step: int, steps: int, x0: torch.Tensor) -> None:
            if on_step is not None:
                snapshot = x0.detach().clone()
                on_step(StepUpdate(step, steps,
                                   lambda: split_per_request(_decode(snapshot, None), counts)))

        x0 = sample(
            net,
            torch.stack(txts) * (384**0.5),
            torch.tensor(styles, dtype=torch.long),
            torch.stack(noises),
            steps=total,
            cfg=self.guidance if first.guidance is None else first.guidance,
            guidance_above=self.guidance_above,
            x_ref=torch.stack(refs_x) if self.strength < 1.0 else None,
            t0=self.strength,
            autocast=self.bf16,
            on_step=hook,
        )
        return split_per_request(_decode(x0, sizes if self.upscale else None), counts)


    def _edit(self, net: object, batch: Sequence[GenerationParams], total: int,
              on_step: StepCallback | None) -> list[list[Image.Image]]:
        """An edit: the given picture, squeezed to 64 x 64, is the SDEdit start (instead of a
        retrieved emoji) at the request's strength, its mask held at every step; the result
        is stretched back to the asked size, where the service puts the kept pixels back."""
        from limner.engines.embedded.net import STYLE_ANY, EmojiUNet
        from limner.engines.embedded.sampler import sample

        assert isinstance(net, EmojiUNet)
        txts, refs_x, keeps, noises = [], [], [], []
        for params in batch:
            assert params.init_image is not None
            vec = self._embed(params.prompt)
            start = _premultiplied(params.init_image)
            keep = (torch.zeros(1, NATIVE, NATIVE) if params.mask is None
                    else 1.0 - _fraction(params.mask))
            for seed in params.seeds:
                gen = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
                noises.append(torch.randn((4, NATIVE, NATIVE), generator=gen))
                txts.append(vec)
                refs_x.append(start)
                keeps.append(keep)
        counts = [p.n for p in batch]
        sizes = [(p.width, p.height) for p in batch for _ in p.seeds]
        first = batch[0]

        def hook(step: int, steps: int, x0: torch.Tensor) -> None:
            if on_step is not None:
                snapshot = x0.detach().clone()
                on_step(StepUpdate(step, steps, lambda: split_per_request(
                    _stretch(_decode(snapshot, None), sizes), counts)))

        x0 = sample(
            net,
            torch.stack(txts) * (384**0.5),
            torch.full((len(txts),), STYLE_ANY, dtype=torch.long),
            torch.stack(noises),
            steps=total,
            cfg=self.guidance if first.guidance is None else first.guidance,
            guidance_above=self.guidance_above,
            x_ref=torch.stack(refs_x),
            t0=first.strength,
            autocast=self.bf16,
            keep=torch.stack(keeps),
            on_step=hook,
        )
        return split_per_request(_stretch(_decode(x0, None), sizes), counts)


def _premultiplied(image: Image.Image) -> torch.Tensor:
    """An RGBA picture at 64 x 64 as the net sees pictures: premultiplied, in [-1, 1]."""
    small = image.convert("RGBa").resize((NATIVE, NATIVE), Image.Resampling.BOX)
    x = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return x * 2.0 - 1.0


def _fraction(mask: Image.Image) -> torch.Tensor:
    """A mask at 64 x 64 as the share of each cell that is redrawn, (1, 64, 64) in [0, 1]."""
    small = mask.convert("L").resize((NATIVE, NATIVE), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)[None]


def _stretch(images: list[Image.Image], sizes: list[tuple[int, int]]) -> list[Image.Image]:
    """Back to each edit's own size and shape (the start was squeezed to a square)."""
    return [im.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
            for im, size in zip(images, sizes, strict=True)]


def _decode(x0: torch.Tensor, sizes: list[tuple[int, int]] | None) -> list[Image.Image]:
    """Premultiplied [-1, 1] -> straight RGBA, at native size or upscaled to `sizes`."""
    from limner.engines.embedded.upscale import to_straight_rgba, upscale

    arr = ((x0.float().clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()
    arr = np.concatenate([np.minimum(arr[..., :3], arr[..., 3:]), arr[..., 3:]], axis=-1)
    images = [to_straight_rgba(a) for a in arr]
    if sizes is None:
        return images
    return [upscale(im, w, h) for im, (w, h) in zip(images, sizes, strict=True)]
