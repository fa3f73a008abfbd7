"""DiffusersEngine: any diffusers text-to-image pipeline, from a local folder or a hub id.

The only module that imports diffusers. Steps are reported through
`callback_on_step_end`; a `GenerationCancelled` raised there propagates out of the
pipeline, so a cancelled batch never reaches the (expensive) VAE decode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from limner.engines.base import EngineError, EngineInfo
from limner.jobs import GenerationParams, StepCallback, StepUpdate

log = logging.getLogger("limner.engines.diffusers")

DEFAULT_STEPS = {"low": 1, "medium": 2, "high": 4}
# Linear map from SD 1.x/2.x latents to RGB: a cheap preview with no VAE decode.
_SD_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173),
                  (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))


def cpu_has_bf16() -> bool:
    """True where the CPU has a bf16 fast path (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16,
                "fp16": torch.float16}[requested]
    if device.startswith("cuda"):
        return torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


class DiffusersEngine:
    def __init__(self, model: str, *, name: str | None = None, threads: int | None = None,
                 device: str | None = None, dtype: str = "auto",
                 steps: Mapping[str, int] | None = None, guidance: float | None = None,
                 native_size: int | None = None, max_batch_images: int = 4,
                 tiny_decoder: str | None = None, decoder: str = "full",
                 scheduler: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.threads = threads
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = pick_dtype(self.device, dtype)
        self.steps = {**DEFAULT_STEPS, **dict(steps or {})}
        self.guidance = guidance
        self._native = native_size
        self._max_batch = max_batch_images
        self._name = name or Path(model.rstrip("/")).name
        if decoder not in ("full", "tiny"):
            raise ValueError(f"decoder must be 'full' or 'tiny', not {decoder!r}")
        self.tiny_decoder = tiny_decoder
        self.decoder = decoder
        self.scheduler = dict(scheduler or {})
        self.pipe: Any = None
        self.tiny: Any = None

    @property
    def info(self) -> EngineInfo:
        size = self._native or 512
        return EngineInfo(name=self._name, native_width=size, native_height=size,
                          draws_alpha=False, max_batch_images=self._max_batch)

    def load(self) -> None:
        from diffusers import DiffusionPipeline

        if self.threads and self.device == "cpu":
            torch.set_num_threads(self.threads)
        try:
            pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                self.model, dtype=self.dtype
            )
        except Exception as exc:
            raise EngineError(f"could not load the diffusers pipeline {self.model!r}: {exc}") \
                from exc
        if self.scheduler:
            pipe.scheduler = _scheduler(pipe.scheduler.config, self.scheduler)
        if self.tiny_decoder:
            from diffusers import AutoencoderTiny

            try:
                self.tiny = AutoencoderTiny.from_pretrained(  # type: ignore[no-untyped-call]
                    self.tiny_decoder, dtype=self.dtype
                ).to(self.device)
            except Exception as exc:
                raise EngineError(f"could not load the tiny decoder {self.tiny_decoder!r}: "
                                  f"{exc}") from exc
            if self.decoder == "tiny":
                pipe.vae = self.tiny
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if self._native is None:
            sample = getattr(getattr(pipe, "unet", None), "config", None)
            factor = getattr(pipe, "vae_scale_factor", 8)
            sample_size = getattr(sample, "sample_size", None) if sample is not None else None
            self._native = int(sample_size * factor) if isinstance(sample_size, int) else 512
        self.pipe = pipe
        log.info("loaded %s (%s, %s)", self.model, self.device, self.dtype)

    def close(self) -> None:
        self.pipe = None

    def _draw_size(self, width: int, height: int) -> tuple[int, int]:
        """Draw at the model's native area with the requested aspect, on a 64-pixel grid."""
        native = self._native or 512
        scale = math.sqrt(native * native / (width * height))
        return (max(64, round(width * scale / 64) * 64), max(64, round(height * scale / 64) * 64))

    def generate(self, batch: Sequence[GenerationParams],
                 on_step: StepCallback | None = None) -> list[list[Image.Image]]:
        if self.pipe is None:
            raise EngineError("the engine is not loaded")
        first = batch[0]
        width, height = self._draw_size(first.width, first.height)
        total = first.steps or self.steps[first.quality]
        prompts = [p.prompt for p in batch for _ in p.seeds]
        generators = [torch.Generator("cpu").manual_seed(s) for p in batch for s in p.seeds]
        counts = [p.n for p in batch]

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[
                str, Any]:
            if on_step is not None:
                latents = tensors["latents"]
                on_step(StepUpdate(step + 1, total,
                                   lambda: _split(self._preview(latents), counts)))
            return tensors

        kwargs: dict[str, Any] = {
            "prompt": prompts, "num_inference_steps": total, "width": width, "height": height,
            "generator": generators, "output_type": "pil",
            "callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if self.guidance is not None:
            kwargs["guidance_scale"] = self.guidance
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        return _split([image.convert("RGB") for image in images], counts)

    def _preview(self, latents: torch.Tensor) -> list[Image.Image]:
        if self.tiny is not None and latents.ndim == 4:
            with torch.inference_mode():
                decoded = self.tiny.decode(latents.to(self.tiny.dtype)).sample
            pixels = ((decoded.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu()
            return [Image.fromarray((x * 255).numpy().astype(np.uint8)) for x in pixels]
        if latents.ndim == 4 and latents.shape[1] == 4:
            factors = torch.tensor(_SD_LATENT_RGB, dtype=torch.float32)
            mapped = torch.einsum("bchw,cr->brhw", latents.float().cpu(), factors)
            pixels = ((mapped + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            return [Image.fromarray((x * 255).astype(np.uint8)) for x in pixels]
        decoded = self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor).sample
        rgb = ((decoded.float() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray((x * 255).astype(np.uint8)) for x in rgb]


def _scheduler(config: Any, spec: Mapping[str, Any]) -> Any:
    import diffusers

    overrides = dict(spec)
    cls = getattr(diffusers, overrides.pop("class", type(config).__name__), None)
    if cls is None:
        raise EngineError(f"unknown scheduler class in {dict(spec)!r}")
    return cls.from_config(config, **overrides)


def _split(images: list[Image.Image], counts: list[int]) -> list[list[Image.Image]]:
    out, start = [], 0
    for count in counts:
        out.append(images[start:start + count])
        start += count
    return out
