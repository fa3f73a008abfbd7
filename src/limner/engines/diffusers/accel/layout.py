"""Keeping a UNet's activations in NHWC order once its weights are.

Under channels_last, oneDNN's bf16 convolutions and torch's group norms run fastest on NHWC
tensors, and each op hands its input's order on. Diffusers' `Transformer2DModel` ends with
`.permute(0, 3, 1, 2).contiguous()`, though: its output is NCHW, and through the residual sums
and the up blocks' concatenations so is everything after it. In SD-Turbo's UNet that left 31
of 66 convolutions and 18 of 61 group norms reading NCHW tensors (each then reordered inside
the op, or run on its slower NCHW path). A hook lays each attention block's output out in
NHWC order again: one copy of the block's output, the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _nhwc(tensor: Any) -> Any:
    if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def _nhwc_output(module: nn.Module, args: Any, output: Any) -> Any:
    """A forward hook: the block's output (a tensor, a tuple, or an output with `sample`)
    with its 4-D sample in NHWC order."""
    if isinstance(output, tuple):
        return (_nhwc(output[0]), *output[1:]) if output else output
    if hasattr(output, "sample"):
        output.sample = _nhwc(output.sample)
        return output
    return _nhwc(output)


def keep_channels_last(model: nn.Module) -> int:
    """Hook every attention block (`Transformer2DModel`) under `model` so its output stays
    NHWC; returns how many."""
    hooked = 0
    for module in model.modules():
        if type(module).__name__ == "Transformer2DModel":
            module.register_forward_hook(_nhwc_output)
            hooked += 1
    return hooked


def planar(part: nn.Module) -> bool:
    """True where every weight is at most 4-D: NHWC means nothing to a 3-D (video-style)
    convolution's 5-D weights, and torch refuses to lay those out so."""
    return all(parameter.dim() <= 4 for parameter in part.parameters())


def apply(parts: Sequence[nn.Module]) -> int:
    """Lays the planar ones of `parts` out in NHWC order and keeps them so; returns how many
    attention outputs are laid out again on their way out."""
    kept = 0
    for part in parts:
        if not planar(part):
            continue
        part.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        kept += keep_channels_last(part)
    return kept
