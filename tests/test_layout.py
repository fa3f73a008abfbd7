"""Attention blocks hand their output on in NHWC order, whatever form the output takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from limner.engines.diffusers.accel.layout import keep_channels_last


class Transformer2DModel(nn.Module):  # the name the hook looks for; NCHW out, as diffusers'
    def __init__(self, wrap: str) -> None:
        super().__init__()
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> object:
        out = (x * 2).contiguous()
        if self.wrap == "tuple":
            return (out, "extra")
        if self.wrap == "sample":
            return Output(out)
        return out


@dataclass
class Output:
    sample: torch.Tensor


def nhwc(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_each_form_of_output_comes_back_nhwc_with_the_same_values() -> None:
    x = torch.randn(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    for wrap in ("tuple", "sample", "tensor"):
        model = nn.Sequential(Transformer2DModel(wrap))
        assert keep_channels_last(model) == 1
        out = model(x)
        tensor = out[0] if wrap == "tuple" else out.sample if wrap == "sample" else out
        assert nhwc(tensor) and torch.equal(tensor, x * 2)
        if wrap == "tuple":
            assert out[1] == "extra"


def test_tokens_and_other_modules_are_left_alone() -> None:
    tokens = torch.randn(1, 16, 8)
    block = Transformer2DModel("tensor")
    keep_channels_last(block)
    assert torch.equal(block(tokens), tokens * 2)  # 3-D: no layout to keep
    plain = nn.Conv2d(8, 8, 1)
    assert keep_channels_last(plain) == 0 and not plain._forward_hooks
