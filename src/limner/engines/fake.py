"""A deterministic, torch-free engine for tests, demos and the scheduler's own tests.

It draws a seed-coloured disc on a transparent square (an edit: on its starting picture),
`steps` steps long, each step optionally sleeping `step_s` so cancellation and concurrency
can be observed, or, with `gated`, waiting until a test `release`s it, so tests can stop it
at an exact step without sleeping.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence

from PIL import Image, ImageDraw

from limner.engines.base import EngineError, EngineInfo
from limner.jobs import GenerationParams, PreviewFn, StepCallback, StepUpdate

STEPS = {"low": 2, "medium": 4, "high": 8, "xhigh": 12, "max": 16}
GATE_TIMEOUT_S = 30.0
"""A gated step waits at most this long: a test that forgets to release fails, not hangs."""


class FakeEngine:
    def __init__(self, *, name: str = "fake", size: int = 64, step_s: float = 0.0,
                 max_batch_images: int = 8, fail_on: str | None = None,
                 gated: bool = False, memory_bytes: int = 0, gated_load: bool = False,
                 load_s: float = 0.0, adapters: bool = False) -> None:
        self._info = EngineInfo(name=name, native_width=size, native_height=size,
                                draws_alpha=True, max_batch_images=max_batch_images, edits=True,
                                adapters=adapters)
        self.step_s = step_s
        self.fail_on = fail_on
        """A prompt that makes `generate` raise, to test failures."""
        self.batches: list[list[GenerationParams]] = []
        self.steps_run = 0
        self.loaded = False
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(0) if gated else None
        self._stepped = threading.Condition()
        self.memory_bytes = memory_bytes
        """Really held while loaded (touched pages), so unloading shows in the RSS."""
        self._weights: bytes | None = None
        self.loads = 0
        self.load_started = threading.Event()
        self._load_gate = threading.Event() if gated_load else None
        self.load_s = load_s

    @property
    def info(self) -> EngineInfo:
        return self._info

    def load(self) -> None:
        self.load_started.set()
        if self.load_s:
            time.sleep(self.load_s)
        if self._load_gate is not None and not self._load_gate.wait(GATE_TIMEOUT_S):
            raise EngineError("the gated fake engine's load was never released")
        self._weights = b"\x01" * self.memory_bytes if self.memory_bytes else None
        self.loads += 1
        self.loaded = True

    def release_load(self) -> None:
        """With `gated_load`: lets the load finish."""
        assert self._load_gate is not None, "release_load() needs gated_load=True"
        self._load_gate.set()

    def close(self) -> None:
        self._weights = None
        self.loaded = False

    def estimate_memory(self) -> dict[str, int]:
        return {"cpu": self.memory_bytes} if self.memory_bytes else {}

    def memory(self) -> dict[str, int]:
        return {"cpu": len(self._weights)} if self._weights is not None else {}

    def generate(self, batch: Sequence[GenerationParams],
                 on_step: StepCallback | None = None) -> list[list[Image.Image]]:
        with self._lock:
            self.batches.append(list(batch))
        if any(self.fail_on is not None and self.fail_on in p.prompt for p in batch):
            raise EngineError("the fake engine was told to fail")
        total = max(batch[0].steps or STEPS[batch[0].quality], batch[0].min_steps)
        for step in range(1, total + 1):
            if self.step_s:
                time.sleep(self.step_s)
            if self._gate is not None and not self._gate.acquire(timeout=GATE_TIMEOUT_S):
                raise EngineError("the gated fake engine was never released")
            with self._stepped:
                self.steps_run += 1
                self._stepped.notify_all()
            if on_step is not None:
                on_step(StepUpdate(step, total, self._previewer(batch, step, total)))
        return self._draw_all(batch, total, total)

    def release(self, steps: int = 1) -> None:
        """With `gated`: lets `steps` more denoising steps run."""
        assert self._gate is not None, "release() needs FakeEngine(gated=True)"
        self._gate.release(steps)

    def wait_for_steps(self, count: int, timeout: float = GATE_TIMEOUT_S) -> bool:
        """Blocks (call it in a thread) until `count` steps have run in all."""
        with self._stepped:
            return self._stepped.wait_for(lambda: self.steps_run >= count, timeout)

    def _previewer(self, batch: Sequence[GenerationParams], step: int,
                   total: int) -> PreviewFn:
        return lambda: self._draw_all(batch, step, total)

    def _draw_all(self, batch: Sequence[GenerationParams], step: int,
                  total: int) -> list[list[Image.Image]]:
        return [[self._draw(p, seed, step, total) for seed in p.seeds] for p in batch]

    def _draw(self, params: GenerationParams, seed: int, step: int, total: int) -> Image.Image:
        """The disc on a transparent square; for an edit, on the starting picture itself, so
        tests can tell the kept pixels from the drawn ones."""
        # Adapters change the colour, as a LoRA changes a picture; none draws as before.
        styled = "".join(f"\0{a.name}:{a.scale:g}" for a in params.adapters)
        digest = hashlib.sha256(f"{params.prompt}\0{seed}{styled}".encode()).digest()
        if params.init_image is not None:
            image = params.init_image.copy()
        else:
            image = Image.new("RGBA", (self._info.native_width,) * 2, (0, 0, 0, 0))
        side = min(image.size)
        radius = side * (0.2 + 0.25 * step / total)
        cx, cy = image.width / 2, image.height / 2
        ImageDraw.Draw(image).ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            fill=(digest[0], digest[1], digest[2], 255),
        )
        return image
