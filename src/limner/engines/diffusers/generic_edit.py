"""limner's own image-to-image, for families diffusers has no edit pipeline for (Sana,
PixArt, LCM's inpainting): the pictures are encoded, noised to the strength's timestep on the
pipeline's own scheduler, and the pipeline's own loop denoises from there over the tail of
its schedule; with a mask, the kept region is put back (noised to each step's level) after
every step, as diffusers' inpainting pipelines do.
"""

from __future__ import annotations

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
    """The call arguments that start the loop from the pictures, and the per-step blend."""

    kwargs: dict[str, Any]
    blend: Blend | None
    steps_run: int


def supported(pipe: Any) -> str | None:
    """Why the generic edit cannot run on this pipeline, or None when it can: it needs to
    hand the loop its starting latents and its schedule's tail."""
    accepted = call_parameters(pipe)
    if "latents" not in accepted or "timesteps" not in accepted:
        return f"{type(pipe).__name__} takes no `latents` and `timesteps`"
    if "timesteps" not in inspect.signature(pipe.scheduler.set_timesteps).parameters:
        return f"{type(pipe.scheduler).__name__} takes no custom timesteps"
    if not callable(getattr(getattr(pipe, "vae", None), "encode", None)):
        return "its VAE has no encoder"
    return None


def prepare(pipe: Any, family: Family, images: Sequence[Image.Image],
            masks: Sequence[Image.Image] | None, generators: Sequence[torch.Generator],
            steps: int, strength: float) -> GenericEdit:
    """`images` (RGB, at the draw size) and `masks` (L, 255 where redrawn), one per image
    drawn; `steps` as a generation would take, of which `strength`'s share runs."""
    schedule = type(pipe.scheduler).from_config(pipe.scheduler.config)
    schedule.set_timesteps(steps)
    order = int(getattr(schedule, "order", 1))
    run = max(1, min(int(steps * strength), steps))
    tail = [int(t) for t in schedule.timesteps[(steps - run) * order:]]
    schedule.set_timesteps(timesteps=tail)
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
    if "init_noise_sigma" in inspect.getsource(type(pipe).prepare_latents):
        start = start / float(schedule.init_noise_sigma)
    kwargs: dict[str, Any] = {"latents": start.to(dtype), "timesteps": tail,
                              "num_inference_steps": len(tail)}
    blend = None
    if masks:
        where = torch.stack([_latent_mask(mask, clean.shape[-2:]) for mask in masks]
                            ).to(device)
        after = [*tail[1:], None]

        def blend(step: int, latents: torch.Tensor) -> torch.Tensor:
            following = after[step] if step < len(after) else None
            kept = clean if following is None else _noised(schedule, clean, noise, following)
            return (where * latents.float() + (1 - where) * kept).to(latents.dtype)

    return GenericEdit(kwargs=kwargs, blend=blend, steps_run=len(tail))


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
