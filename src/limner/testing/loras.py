"""Tiny LoRAs for the tiny pipelines of `limner.testing.families`, made with PEFT and saved
as diffusers' `save_lora_weights` does (tests and benchmarks share them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict

from limner import adapter_shapes
from limner.testing.families import load_pipeline

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
"""The attention projections every denoiser family names alike."""


def make_lora(model: Path, out: Path, seed: int, *, text_encoder: bool = False,
              denoiser: bool = True, rank: int = 4) -> Path:
    """A LoRA of the model's attention (and of its first text encoder), random where PEFT
    would start it at zero (so it changes the pixels), saved by the pipeline class's
    `save_lora_weights` into the folder `out`; made once per folder."""
    if (out / adapter_shapes.DIFFUSERS_FILE).is_file():
        return out
    pipe = load_pipeline(model)
    torch.manual_seed(seed)
    layers: dict[str, Any] = {}
    if denoiser:
        name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        getattr(pipe, name).add_adapter(LoraConfig(
            r=rank, lora_alpha=rank, target_modules=ATTENTION, init_lora_weights=False))
        layers[f"{name}_lora_layers"] = get_peft_model_state_dict(getattr(pipe, name))
    if text_encoder:  # through PEFT itself: transformers' add_adapter wants a newer PEFT
        inject_adapter_in_model(LoraConfig(
            r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
            init_lora_weights=False), pipe.text_encoder)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder)
    type(pipe).save_lora_weights(str(out), **layers)
    return out
