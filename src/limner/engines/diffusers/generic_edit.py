"""limner's own image-to-image, for families diffusers has no edit pipeline for (Sana,
PixArt, LCM's inpainting): the pictures are encoded, noised to the strength's timestep on the
pipeline's own scheduler, and the pipeline's own loop denoises from there over the tail of
its schedule; with a mask, the kept region is put back (noised to each step's level) after
every step, as diffusers' inpainting pipelines do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from limner.engines.base import EngineError
from limner.engines.diffusers.families import Family, call_parameters

Blend = Callable[[int, torch.Tensor], torch.Tensor]
"""(step index, latents after that step) -> the latents with the kept region put back."""


@dataclass(frozen=True)
class GenericEdit:
    """The call arguments that start the loop from the pictures, the scheduler to draw
    with (the pipeline's own, cut to its schedule's tail), and the per-step blend."""

    kwargs: dict[str, Any]
    scheduler: Any
    blend: Blend | None
    steps_run: int


def supported(pipe: Any) -> str | None:
    """Why the generic edit cannot run on this pipeline, or None when it can: it hands the
    loop its starting latents."""
    if "latents" not in call_parameters(pipe):
        return f"{type(pipe).__name__} takes no starting `latents`"
    if not callable(getattr(getattr(pipe, "vae", None), "encode", None)):
        return "its VAE has no encoder"
    scheduler = getattr(pipe, "scheduler", None)
    if not (hasattr(scheduler, "scale_noise") or hasattr(scheduler, "add_noise")):
        # Sana-Sprint's SCM scheduler: its trigonometric flow has no noising step.
        return f"its scheduler ({type(scheduler).__name__}) cannot noise a starting picture"
    return None


def tail_scheduler(scheduler: Any, strength: float) -> Any:
    """A copy of `scheduler` whose every schedule is cut to its last `strength` share, as
    diffusers' image-to-image pipelines cut theirs: timesteps and sigmas together, so the
    shorter schedule is whole in itself (multistep solvers count on its length)."""
    base = type(scheduler)

    class Tail(base):  # type: ignore[misc, valid-type]
        def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
            super().set_timesteps(*args, **kwargs)
            order = int(getattr(self, "order", 1))
            timesteps: Any = self.timesteps  # type: ignore[has-type]
            total = len(timesteps)
            steps = total // order
            run = max(1, min(int(steps * strength), steps))
            skip = (steps - run) * order
            self.timesteps = timesteps[skip:]
            sigmas = getattr(self, "sigmas", None)
            if isinstance(sigmas, torch.Tensor) and len(sigmas) in (total, total + 1):
                self.sigmas = sigmas[skip:]
            self.num_inference_steps = run
            for index in ("_step_index", "_begin_index"):
                if hasattr(self, index):
                    setattr(self, index, None)

    Tail.__name__ = Tail.__qualname__ = base.__name__
    return Tail.from_config(scheduler.config)


def prepare(pipe: Any, family: Family, images: Sequence[Image.Image],
            masks: Sequence[Image.Image] | None, generators: Sequence[torch.Generator],
            steps: int, strength: float) -> GenericEdit:
    """`images` (RGB, at the draw size) and `masks` (L, 255 where redrawn), one per image
    drawn; `steps` as a generation would take, of which `strength`'s share runs."""
    schedule = tail_scheduler(pipe.scheduler, strength)
    schedule.set_timesteps(steps)
    tail = [int(t) for t in schedule.timesteps]
    device = pipe._execution_device
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    dtype = getattr(denoiser, "dtype", torch.float32)
    with torch.inference_mode():
        pixels = torch.stack([_pixels(image) for image in images]).to(device)
        clean = torch.cat([family.encode(pipe, pixels[i:i + 1], generators[i])
                           for i in range(len(images))]).float()
    noise = torch.cat([torch.randn(clean.shape[1:], generator=g).unsqueeze(0)
                       for g in generators]).to(device)
    start = _noised(schedule, clean, noise, tail[0])
    # SD-style pipelines scale given latents by the scheduler's initial sigma, as they do
    # their own noise: hand them latents that come out right after it.
    if _scales_given_latents(type(pipe).prepare_latents):
        start = start / float(schedule.init_noise_sigma)
    kwargs: dict[str, Any] = {"latents": start.to(dtype)}
    blend = None
    if masks:
        where = torch.stack([_latent_mask(mask, clean.shape[-2:]) for mask in masks]
                            ).to(device)
        after = [*tail[1:], None]

        def blend(step: int, latents: torch.Tensor) -> torch.Tensor:
            following = after[step] if step < len(after) else None
            kept = clean if following is None else _noised(schedule, clean, noise, following)
            return (where * latents.float() + (1 - where) * kept).to(latents.dtype)

    return GenericEdit(kwargs=kwargs, scheduler=schedule, blend=blend,
                       steps_run=len(tail) // int(getattr(schedule, "order", 1)))


@functools.cache
def _scales_given_latents(prepare_latents: Callable[..., Any]) -> bool:
    """Whether a pipeline class's `prepare_latents` multiplies latents it is given by the
    scheduler's initial sigma (read once per class from its source)."""
    return "init_noise_sigma" in inspect.getsource(prepare_latents)


def _noised(schedule: Any, clean: torch.Tensor, noise: torch.Tensor,
            timestep: int) -> torch.Tensor:
    at = torch.tensor([timestep] * clean.shape[0], device=clean.device)
    if hasattr(schedule, "scale_noise"):
        noised: torch.Tensor = schedule.scale_noise(clean, at, noise)
    elif hasattr(schedule, "add_noise"):
        noised = schedule.add_noise(clean, noise, at)
    else:
        raise EngineError(f"{type(schedule).__name__} cannot noise a starting picture")
    return noised


def _pixels(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _latent_mask(mask: Image.Image, size: Any) -> torch.Tensor:
    """1 where the latent cell is redrawn: any redrawn pixel in a cell redraws all of it."""
    grey = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    pooled = torch.nn.functional.adaptive_max_pool2d(grey[None, None], tuple(size))
    return (pooled[0] > 0).float()
