"""Random-weight pipelines of real architectures, built offline from benchmarks/configs.

Timing does not depend on weight values, so these stand in for SD-Turbo and SDXS-512 where
no hub is reachable, and, for `peers.py`, every other family: limner's tiny test pipelines
(`build_family_pipeline(..., "tiny", ...)`) or those with a mid-size denoiser (`"small"`).
Each is saved with `save_pretrained` and then loaded by the code under test through
`from_pretrained`, exactly as downloaded weights would be.
"""

from __future__ import annotations

import json
import shutil
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


# Other families: limner's tiny test pipelines, and mid-size versions of them. -------------
SCALES = ("tiny", "small")
SMALL_DENOISERS: dict[str, dict[str, Any]] = {
    "SD3Transformer2DModel": {"num_layers": 6, "num_attention_heads": 6,
                              "attention_head_dim": 64, "caption_projection_dim": 384},
    "FluxTransformer2DModel": {"num_layers": 2, "num_single_layers": 4, "num_attention_heads": 6,
                               "attention_head_dim": 64, "axes_dims_rope": [16, 24, 24]},
    "Flux2Transformer2DModel": {"num_layers": 2, "num_single_layers": 4,
                                "num_attention_heads": 6, "attention_head_dim": 64,
                                "axes_dims_rope": [16, 16, 16, 16]},
    "SanaTransformer2DModel": {"num_layers": 6, "num_attention_heads": 12,
                               "attention_head_dim": 32, "num_cross_attention_heads": 12,
                               "cross_attention_head_dim": 32, "cross_attention_dim": 384},
    "ZImageTransformer2DModel": {"dim": 384, "n_layers": 6, "n_refiner_layers": 1, "n_heads": 6,
                                 "n_kv_heads": 6, "axes_dims": [32, 16, 16]},
    "QwenImageTransformer2DModel": {"num_layers": 6, "num_attention_heads": 6,
                                    "attention_head_dim": 64, "axes_dims_rope": [16, 24, 24]},
    "UNet2DConditionModel": {"block_out_channels": [128, 256], "layers_per_block": 2,
                             "transformer_layers_per_block": [1, 2], "attention_head_dim": [4, 8]},
}
"""`--scale small`: the tiny family's denoiser rebuilt wider and deeper (hidden 384 in six
blocks, heads of 64 channels (Sana's of 32, as the real one's); SDXL's UNet at 128 and 256
channels), the rest left tiny. At 512x512 the denoiser then does some 50 GFLOP a step and the
text encoders and the VAE a few: the ratios measure the denoiser, as on a real model, where it
is nearly all of the time, yet an image takes seconds on two cores, not minutes. The rotary
axes add up to the head size, as they must."""
_BINNED = ("sana",)
"""Families whose pipelines snap the size to bins at the transformer's sample size (Sana's
resolution binning, which knows sample sizes 16 to 128): their folders are built for the size
drawn (sample_size = size / 32). Sana-Sprint's knows 32 only: it is built so, and draws about
1024x1024 whatever is asked (resized to the size asked), in every engine alike."""


def build_family_pipeline(family: str, scale: str, size: int, root: Path) -> Path:
    """The random-weight pipeline of `family` for `--scale` under `root/scale`: `tiny` is
    `limner.testing.families.build_family`'s (plus Sana-Sprint, which it lacks), `small`
    the same with the denoiser of `SMALL_DENOISERS`."""
    from limner.testing.families import build_family

    name = family + (f"-{size}" if family in _BINNED and size != 512 else "")
    target = root / scale / name
    if (target / "model_index.json").is_file():
        return target
    if family == "sana-sprint":
        source = _sana_sprint(root / "tiny")
    else:
        source = build_family(family, root / "tiny")
    overrides: dict[str, Any] = dict(SMALL_DENOISERS[_denoiser(source)[1]]) \
        if scale == "small" else {}
    if family in _BINNED:
        overrides["sample_size"] = size // 32
    if not overrides:
        return source
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    part, cls = _denoiser(staging)
    _rebuild(staging / part, cls, overrides)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _denoiser(folder: Path) -> tuple[str, str]:
    """The pipeline's denoiser: its subfolder and its class."""
    index = json.loads((folder / "model_index.json").read_text())
    part = "unet" if "unet" in index else "transformer"
    return part, str(index[part][1])


def _rebuild(folder: Path, cls: str, overrides: dict[str, Any]) -> None:
    """Replace the model saved in `folder` by a random one of class `cls` from its config
    with `overrides`."""
    import diffusers

    model_class = getattr(diffusers, cls)
    config = {**model_class.load_config(folder), **overrides}
    torch.manual_seed(0)
    model = model_class.from_config(config)
    with torch.no_grad():  # Z-Image makes its pad tokens with torch.empty: no NaNs, please
        for pad in ("x_pad_token", "cap_pad_token"):
            if hasattr(model, pad):
                getattr(model, pad).copy_(torch.ones_like(getattr(model, pad)))
    shutil.rmtree(folder)
    model.save_pretrained(folder)


def _sana_sprint(folder: Path) -> Path:
    """A tiny Sana-Sprint, which `build_family` lacks: the tiny Sana's tokenizer, Gemma-2 and
    DC-AE with a transformer whose guidance is embedded (and its q/k normalized across
    heads, as Sana-Sprint 1.6B's), under an SCM scheduler predicting TrigFlow, as in
    diffusers' own Sana-Sprint tests."""
    from diffusers import SanaPipeline, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler

    from limner.testing.families import build_family

    target = folder / "sana-sprint"
    if (target / "model_index.json").is_file():
        return target
    sana = SanaPipeline.from_pretrained(build_family("sana", folder))
    config = {**sana.transformer.config, "guidance_embeds": True,
              "qk_norm": "rms_norm_across_heads", "sample_size": 32}
    torch.manual_seed(0)
    pipe = SanaSprintPipeline(
        tokenizer=sana.tokenizer, text_encoder=sana.text_encoder, vae=sana.vae,
        transformer=SanaTransformer2DModel.from_config(config),
        scheduler=SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow",
                               sigma_data=0.5))
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging)
    staging.rename(target)
    return target
