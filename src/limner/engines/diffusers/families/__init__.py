"""One adapter per diffusers family, found from the pipeline's class (`model_index.json`'s
`_class_name`); a class no adapter names gets the generic one, which does what its call
signature allows."""

from __future__ import annotations

from limner.engines.diffusers.families.base import Family, call_parameters
from limner.engines.diffusers.families.flux import Flux
from limner.engines.diffusers.families.flux2 import Flux2, Flux2Klein
from limner.engines.diffusers.families.flux_kontext import FluxKontext
from limner.engines.diffusers.families.lcm import LatentConsistency
from limner.engines.diffusers.families.pixart import PixArt
from limner.engines.diffusers.families.qwen_image import QwenImage
from limner.engines.diffusers.families.qwen_image_edit import QwenImageEdit, QwenImageEditPlus
from limner.engines.diffusers.families.sana import Sana, SanaSprint
from limner.engines.diffusers.families.sd import StableDiffusion
from limner.engines.diffusers.families.sd3 import StableDiffusion3
from limner.engines.diffusers.families.sdxl import StableDiffusionXL
from limner.engines.diffusers.families.z_image import ZImage

ADAPTERS: tuple[type[Family], ...] = (
    StableDiffusion, StableDiffusionXL, StableDiffusion3, LatentConsistency, Flux,
    FluxKontext, Flux2, Flux2Klein, QwenImage, QwenImageEdit, QwenImageEditPlus, ZImage, Sana,
    SanaSprint, PixArt)
_BY_CLASS = {name: adapter for adapter in ADAPTERS for name in adapter.pipelines}


def family_for(pipeline_class: str) -> Family:
    """The adapter for a pipeline class name; the generic one for a class none names."""
    return _BY_CLASS.get(pipeline_class, Family)()


__all__ = ["ADAPTERS", "Family", "call_parameters", "family_for"]
