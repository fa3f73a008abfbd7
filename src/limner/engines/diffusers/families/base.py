"""What every diffusers family shares, and the defaults a family it does not know gets.

A family says what differs between pipelines that the engine must know: the native size and
the pixel grid sizes snap to, default steps, which of a request's controls the pipeline
really honours (and through which argument), how its latents are laid out mid-denoising
(packed sequences, 2-D grids or 3-D video grids) and how they become pixels for a preview,
and how it edits a picture. The engine keeps the load, the batch and the callbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch

EditWay = Literal["pipelines", "reference", "generic"]
"""How a family draws over a picture: `pipelines` through diffusers' image-to-image and
inpainting pipelines made from the loaded one; `reference` through the model's own call,
the pictures passed as references (instruction-edit models); `generic` through limner's own
image-to-image on the pipeline itself (`generic_edit`), where diffusers has none."""
NegativeWay = Literal["cfg", "true_cfg", "none"]
OpenVINOWay = Literal["auto", "decoder", "asked"]
"""Whether OpenVINO runs a family's denoiser: `auto` where `backend = "auto"` takes it (it
measured faster than torch's default on a CPU); `decoder` where `auto` keeps torch's
denoiser (as fast or faster) and takes OpenVINO for the VAE's decoder alone (faster);
`asked` where it converts and runs but only when `backend = "openvino"` is asked (not
faster, or not measured at the real size); None where it does not convert. With
`backend = "openvino"` asked, every way but None converts the denoiser too."""


class Family:
    """The defaults, which suit a text-to-image pipeline with 2-D latents and a VAE."""

    name: ClassVar[str] = "generic"
    pipelines: ClassVar[tuple[str, ...]] = ()
    """The diffusers pipeline classes (`model_index.json`'s `_class_name`) it adapts."""
    native_size: ClassVar[int] = 1024
    """Used where the model's configs give no sample size."""
    grid: ClassVar[int] = 16
    """Drawn sizes are multiples of this many pixels (VAE factor times patch size)."""
    steps: ClassVar[Mapping[str, int]] = {"low": 8, "medium": 20, "high": 30}
    """Steps per quality level for a folder with no preset and no `steps` option."""
    negative: ClassVar[NegativeWay | None] = None
    """How `negative_prompt` takes effect; None: `cfg` where the call takes one."""
    true_cfg: ClassVar[float] = 4.0
    """`true_cfg_scale` sent with a negative prompt where guidance is not asked."""
    guidance_argument: ClassVar[str] = "guidance_scale"
    """The call's argument a request's `guidance_scale` goes to."""
    samplers: ClassVar[bool] = False
    """True where a request's `scheduler` may swap the sampler (discrete-time UNet models;
    flow-matching models keep their own)."""
    edit_way: ClassVar[EditWay] = "pipelines"
    references: ClassVar[int] = 0
    """For `reference` edits, the most pictures the model takes at once."""
    blank_reference: ClassVar[bool] = False
    """True where the call needs a picture even to generate (Qwen-Image-Edit): a generation
    gives it a white one of the draw size, which it draws over under the prompt."""
    inpaint_generic: ClassVar[bool] = False
    """True where diffusers has an image-to-image pipeline for the family but no inpainting
    one: masked edits then go through `generic_edit`."""
    tiny_channels: ClassVar[int | None] = None
    """The latent channels a TAESD-style tiny decoder takes for this family, if one fits."""
    latent_rgb: ClassVar[tuple[tuple[float, float, float], ...] | None] = None
    """A linear map from latent channels to RGB: a preview with no VAE decode at all."""
    openvino: ClassVar[OpenVINOWay | None] = None
    """How OpenVINO runs the denoiser and VAE decoder (`OpenVINOWay`); the measurements that
    decide it are in `docs/performance.md`."""
    openvino_encoders: ClassVar[tuple[str, ...]] = ()
    """The text encoders OpenVINO runs beside the denoiser: those whose pipeline reads only
    their last hidden state (`[0]`), the large ones whose torch float32 cost per new prompt
    is seconds (T5, Gemma); CLIP encoders read for pooled or penultimate states stay."""

    # -- sizes ------------------------------------------------------------------------------
    def native(self, pipe: Any) -> int:
        """The model's own side length, from its denoiser's sample size where it has one."""
        factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        for part in ("unet", "transformer"):
            config = getattr(getattr(pipe, part, None), "config", None)
            sample = getattr(config, "sample_size", None)
            if isinstance(sample, int) and sample > 0:
                return sample * factor * self.sample_scale()
        default = getattr(pipe, "default_sample_size", None)
        if isinstance(default, int) and default > 0:
            return default * factor
        return self.native_size

    def sample_scale(self) -> int:
        """How many latent cells one unit of the denoiser's `sample_size` stands for."""
        return 1

    def default_steps(self, pipe: Any) -> Mapping[str, int]:
        return self.steps

    # -- controls ---------------------------------------------------------------------------
    def negative_way(self, pipe: Any) -> NegativeWay:
        accepted = call_parameters(pipe)
        if "negative_prompt" not in accepted:
            return "none"
        if self.negative is not None:
            return self.negative
        return "true_cfg" if "true_cfg_scale" in accepted else "cfg"

    def controls(self, pipe: Any) -> frozenset[str]:
        accepted = call_parameters(pipe)
        controls = set()
        if self.negative_way(pipe) != "none":
            controls.add("negative_prompt")
        if self.guidance_argument in accepted:
            controls.add("guidance_scale")
        if self.samplers:
            controls.add("scheduler")
        return frozenset(controls)

    def guidance_kwargs(self, pipe: Any, guidance: float | None,
                        negative_prompt: str | None) -> dict[str, Any]:
        """The call's guidance arguments for a request's `guidance_scale` and negative
        prompt (None: the pipeline's or the preset's own)."""
        kwargs: dict[str, Any] = {}
        if guidance is not None:
            kwargs[self.guidance_argument] = guidance
        if negative_prompt is not None and self.negative_way(pipe) == "true_cfg" \
                and "true_cfg_scale" not in kwargs:
            kwargs["true_cfg_scale"] = self.true_cfg
        return kwargs

    # -- latents ----------------------------------------------------------------------------
    def latent_grid(self, pipe: Any, latents: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
        """Mid-denoising latents as a spatial grid, (B, C, h, w) or (B, C, T, h, w), still
        in the denoiser's space (the space a tiny decoder reads)."""
        return latents

    def cell_pixels(self, pipe: Any) -> int:
        """How many pixels one cell of `latent_grid` spans on a side."""
        return int(getattr(pipe, "vae_scale_factor", 8) or 8)

    def vae_input(self, pipe: Any, grid: torch.Tensor) -> torch.Tensor:
        """`latent_grid`'s output as the VAE's decoder takes it (scaled and shifted)."""
        config = pipe.vae.config
        scaling = getattr(config, "scaling_factor", None) or 1.0
        shift = getattr(config, "shift_factor", None) or 0.0
        return grid / scaling + shift

    def decode(self, pipe: Any, vae_latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], (B, 3, H, W)."""
        vae = pipe.vae
        pixels: torch.Tensor = vae.decode(vae_latents.to(vae.dtype), return_dict=False)[0]
        return pixels

    def encode(self, pipe: Any, pixels: torch.Tensor, generator: torch.Generator
               ) -> torch.Tensor:
        """Pixels in [-1, 1] -> the denoiser's latent grid (the inverse of `vae_input`)."""
        vae = pipe.vae
        out = vae.encode(pixels.to(vae.dtype))
        dist = getattr(out, "latent_dist", None)
        # AutoencoderKL gives a distribution, AutoencoderDC `latent`, AutoencoderTiny `latents`.
        if dist is not None:
            raw: torch.Tensor = dist.sample(generator)
        else:
            raw = out.latent if hasattr(out, "latent") else out.latents
        config = vae.config
        scaling = getattr(config, "scaling_factor", None) or 1.0
        shift = getattr(config, "shift_factor", None) or 0.0
        return ((raw.float() - shift) * scaling).to(raw.dtype)

    # -- the call ---------------------------------------------------------------------------
    def step_callback(self, pipe: Any) -> Literal["on_step_end", "legacy", "none"]:
        accepted = call_parameters(pipe)
        if "callback_on_step_end" in accepted:
            return "on_step_end"
        return "legacy" if "callback" in accepted else "none"

    def size_kwargs(self, pipe: Any, width: int, height: int) -> dict[str, Any]:
        """Arguments beyond `width`/`height` that make the pipeline draw at that size."""
        return {}

    def steps_kwargs(self, pipe: Any, steps: int) -> dict[str, Any]:
        """Arguments beyond `num_inference_steps` that make the pipeline run that many."""
        return {}

    def prepare(self, pipe: Any, dtype: torch.dtype) -> str | None:
        """Family-specific settling after the load; says what it did, if anything."""
        return None


def packed_grid(tokens: int, width: int, height: int) -> tuple[int, int]:
    """Rows and columns of a packed latent sequence of `tokens` patches drawn at about
    `width` x `height`: read from the sequence itself, since some pipelines settle their own
    size (FLUX.1 Kontext scales to `max_area`)."""
    rows = max(1, round((tokens * height / width) ** 0.5))
    for candidate in sorted(range(1, tokens + 1), key=lambda r: abs(r - rows)):
        if tokens % candidate == 0:
            return candidate, tokens // candidate
    return 1, tokens


def unpack_2x2(pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A sequence of 2x2 latent patches (FLUX.1's and Qwen-Image's packing) as the
    pipeline's own `_unpack_latents` lays it out, its size read from the sequence."""
    if latents.ndim != 3:
        return latents
    factor = int(pipe.vae_scale_factor) * 2
    rows, columns = packed_grid(latents.shape[1], width, height)
    grid: torch.Tensor = pipe._unpack_latents(latents, rows * factor, columns * factor,
                                              pipe.vae_scale_factor)
    return grid


def call_parameters(pipe: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(type(pipe).__call__).parameters
