"""Whether this machine's oneDNN computes what torch computes, for each kind of call that
packed layers (`prepack`) and fused blocks (`fusion`) make: checked on small layers, once per
process and dtype, before a model is packed.

oneDNN picks its kernels by CPU (AMX, AVX512-BF16, AVX2), dtype and memory layout, and this
project's tests run on one CPU, in float32. A kernel that turns a call down raises, and the
load's warm-up draw catches that (`DiffusersEngine._warm_up_fused`). A kernel that computes
something else would draw wrong pictures and say nothing; random-weight benchmarks would not
notice either. So each call here runs on small random layers (64 channels at 32x32, and 320
features over 256 tokens: widths the Stable Diffusion family uses) in the engine's dtype and
layout, and is compared with the same layer computed by torch in float32 from the same
rounded inputs. Measured here (AVX2, float32) the relative errors are below 1e-6; an error
past `TOLERANCE` (several times what one rounding to the dtype costs) means the call is not
to be trusted. All of them take 60-90 ms on 2 cores, once a process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from limner.engines.diffusers.accel.fusion import FoldedUpsampleConv
from limner.engines.diffusers.accel.prepack import PackedConv2d, PackedLinear

TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 2e-2}
"""The largest relative error (||out - ref|| / ||ref||) a call may have, by dtype. Rounding a
bf16 output costs about 2e-3."""


@dataclass(frozen=True)
class KernelCheck:
    """Per call, its relative error against torch in float32 (inf where it raised), and
    which calls failed: those that packed layers make, and those only fused blocks make."""

    errors: dict[str, float] = field(default_factory=dict)
    packing: list[str] = field(default_factory=list)
    fusion: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """Per failed call, what went wrong, for the log."""

    def describe(self, names: list[str]) -> str:
        return "; ".join(f"{name}: {self.reasons[name]}" for name in names)


Call = Callable[[torch.dtype, bool, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""A check: (the packed call's output, torch's float32 result) for a dtype and a layout."""


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator,
            scale: float = 1.0, channels_last: bool = False) -> torch.Tensor:
    values = (torch.randn(shape, generator=generator) * scale).to(dtype)
    return values.contiguous(memory_format=torch.channels_last) if channels_last else values


def _conv(dtype: torch.dtype, channels_last: bool, generator: torch.Generator,
          activation: str = "none") -> tuple[PackedConv2d, torch.Tensor, torch.Tensor]:
    """A packed 3x3 convolution, 64 to 64 channels; its input; and torch's float32 result."""
    conv = nn.Conv2d(64, 64, 3, padding=1)
    conv.weight = nn.Parameter(_tensor((64, 64, 3, 3), dtype, generator, 1 / 24,
                                       channels_last), requires_grad=False)
    conv.bias = nn.Parameter(_tensor((64,), dtype, generator, 0.1), requires_grad=False)
    x = _tensor((1, 64, 32, 32), dtype, generator, channels_last=channels_last)
    reference = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
    return PackedConv2d(conv, activation), x, reference


def _linear(dtype: torch.dtype, generator: torch.Generator, activation: str = "none"
            ) -> tuple[PackedLinear, torch.Tensor, torch.Tensor]:
    """A packed linear layer, 320 to 320 features; 256 tokens for it; torch's float32 result."""
    weight = _tensor((320, 320), dtype, generator, 320 ** -0.5)
    bias = _tensor((320,), dtype, generator, 0.1)
    x = _tensor((1, 256, 320), dtype, generator)
    return PackedLinear.of(weight, bias, activation), x, F.linear(x.float(), weight.float(),
                                                                  bias.float())


def convolution(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, reference = _conv(dtype, channels_last, generator)
    return conv(x), reference


def convolution_relu(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, reference = _conv(dtype, channels_last, generator, "relu")
    return conv(x), F.relu(reference)


def linear(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    layer, x, reference = _linear(dtype, generator)
    return layer(x), reference


def convolution_plus(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, reference = _conv(dtype, channels_last, generator)
    other = _tensor(tuple(reference.shape), dtype, generator, channels_last=channels_last)
    return conv.plus(x, other), reference + other.float()


def convolution_plus_relu(dtype: torch.dtype, channels_last: bool,
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, reference = _conv(dtype, channels_last, generator)
    other = _tensor(tuple(reference.shape), dtype, generator, channels_last=channels_last)
    return conv.plus(x, other, "relu"), F.relu(reference + other.float())


def convolution_plus_per_channel(dtype: torch.dtype, channels_last: bool,
                                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, reference = _conv(dtype, channels_last, generator)
    shift = _tensor((64,), dtype, generator)
    return conv.plus_per_channel(x, shift), reference + shift.float()[:, None, None]


def folded_upsampling(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    conv, x, _ = _conv(dtype, channels_last, generator)
    assert conv.weight is not None and conv.bias is not None
    doubled = F.interpolate(x.float(), scale_factor=2.0, mode="nearest")
    reference = F.conv2d(doubled, conv.weight.float(), conv.bias.float(), padding=1)
    return FoldedUpsampleConv(conv)(x), reference


def linear_plus(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    layer, x, reference = _linear(dtype, generator)
    other = _tensor(tuple(reference.shape), dtype, generator)
    return layer.plus(x, other), reference + other.float()


def linear_gelu(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    layer, x, reference = _linear(dtype, generator, "gelu")
    return layer(x), F.gelu(reference)


def linear_times(dtype: torch.dtype, channels_last: bool, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    layer, x, reference = _linear(dtype, generator)
    other = _tensor(tuple(reference.shape), dtype, generator)
    return layer.times(x, other), reference * other.float()


PACKING: dict[str, Call] = {
    "convolution": convolution, "convolution with ReLU": convolution_relu, "linear": linear,
}
"""The calls packed layers make: where one fails, no layer is packed."""
FUSION: dict[str, Call] = {
    "convolution plus a tensor": convolution_plus,
    "convolution plus a tensor, then ReLU": convolution_plus_relu,
    "convolution plus a shift per channel": convolution_plus_per_channel,
    "folded upsampling": folded_upsampling,
    "linear plus a tensor": linear_plus,
    "linear with GELU": linear_gelu,
    "linear times a tensor": linear_times,
}
"""The calls only fused blocks make: where one fails, no block is fused."""


def run(dtype: torch.dtype, channels_last: bool) -> KernelCheck:
    """Every check, in `dtype` with `channels_last` inputs and convolution weights."""
    result = KernelCheck()
    tolerance = TOLERANCE.get(dtype, 2e-2)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for group, calls in ((result.packing, PACKING), (result.fusion, FUSION)):
            for name, call in calls.items():
                try:
                    out, reference = call(dtype, channels_last, generator)
                    if out.shape != reference.shape:
                        raise ValueError(f"shape {tuple(out.shape)}, not "
                                         f"{tuple(reference.shape)}")
                    error = float((out.float() - reference).norm() / reference.norm())
                except Exception as exc:  # whatever went wrong, the call is not to be used
                    result.errors[name] = float("inf")
                    result.reasons[name] = f"{type(exc).__name__}: {exc}"
                    group.append(name)
                    continue
                result.errors[name] = error
                if not error <= tolerance:  # NaN fails too
                    result.reasons[name] = f"relative error {error:.3g} > {tolerance:g}"
                    group.append(name)
    return result


@functools.cache
def verdict(dtype: torch.dtype, channels_last: bool) -> KernelCheck:
    """`run`, once per process for each dtype and layout: the CPU does not change."""
    return run(dtype, channels_last)
