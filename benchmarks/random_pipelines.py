"""Random-weight pipelines of real architectures, built offline from benchmarks/configs.

Timing does not depend on weight values, so these stand in for SD-Turbo and SDXS-512 where
no hub is reachable. Each is saved with `save_pretrained` and then loaded by the code under
test through `from_pretrained`, exactly as downloaded weights would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from limner.testing.tiny_pipeline import clip_tokenizer

CONFIGS = Path(__file__).resolve().parent / "configs"

MODELS = ("sd-turbo", "sdxs-512")


def _config(name: str) -> dict[str, Any]:
    values: dict[str, Any] = json.loads((CONFIGS / name).read_text())
    return {k: v for k, v in values.items() if not k.startswith("_") and k != "architectures"}


def build_taesd(folder: Path) -> Path:
    """The tiny autoencoder (TAESD layout), saved to `folder` unless already there."""
    from diffusers import AutoencoderTiny

    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        AutoencoderTiny(**_config("taesd/vae.json")).save_pretrained(folder)
    return folder


def build_pipeline(model: str, folder: Path) -> Path:
    """`model` (sd-turbo or sdxs-512) as a StableDiffusionPipeline folder under `folder`."""
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    target = folder / model
    if (target / "model_index.json").is_file():
        return target
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_config(f"{model}/unet.json"))
    vae: Any = (AutoencoderKL(**_config("sd-turbo/vae.json")) if model == "sd-turbo"
                else AutoencoderTiny(**_config("taesd/vae.json")))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_config("sd-turbo/text_encoder.json")))
    scheduler = EulerDiscreteScheduler(**_config("sd-turbo/scheduler.json"))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder,
        tokenizer=clip_tokenizer(folder / f"_{model}_tokenizer"), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(target)
    return target
