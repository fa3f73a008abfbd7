"""kernel_check: each packed and fused oneDNN call against torch in float32, on small layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from limner.engines.diffusers.accel import kernel_check
from limner.engines.diffusers.accel.kernel_check import FUSION, PACKING, run
from limner.engines.diffusers.accel.prepack import PackedConv2d, PackedLinear, supported

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fresh_verdicts() -> Iterator[None]:
    """No verdict cached from a patched kernel reaches another test."""
    kernel_check.verdict.cache_clear()
    yield
    kernel_check.verdict.cache_clear()


@pytest.mark.parametrize("channels_last", [False, True])
def test_every_call_agrees_with_torch_in_float32(channels_last: bool) -> None:
    check = run(torch.float32, channels_last)
    assert check.packing == [] and check.fusion == [] and check.reasons == {}
    assert set(check.errors) == set(PACKING) | set(FUSION)
    assert all(0 <= error < 1e-5 for error in check.errors.values()), check.errors
    assert kernel_check.verdict(torch.float32, channels_last) == check


@pytest.mark.skipif(not supported(torch.bfloat16), reason="oneDNN has no bf16 here")
def test_every_call_agrees_with_torch_in_bfloat16() -> None:
    check = run(torch.bfloat16, True)
    assert check.packing == [] and check.fusion == [], check.reasons
    assert all(error < 2e-2 for error in check.errors.values()), check.errors


def test_a_wrong_sum_inside_a_convolution_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PackedConv2d._binary

    def off_by_5_percent(self: PackedConv2d, x: torch.Tensor, packed: torch.Tensor,
                         other: torch.Tensor, operation: str, activation: str) -> torch.Tensor:
        return real(self, x, packed, other * 1.05, operation, activation)

    monkeypatch.setattr(PackedConv2d, "_binary", off_by_5_percent)
    check = run(torch.float32, True)
    assert check.packing == []
    assert check.fusion == ["convolution plus a tensor", "convolution plus a tensor, then ReLU"]
    assert check.reasons["convolution plus a tensor"].startswith("relative error 0.0")
    assert check.reasons["convolution plus a tensor"].endswith(" > 0.001")
    assert check.describe(check.fusion).count("relative error") == 2


def test_a_refused_call_counts_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(PackedLinear, "_binary", refuse)
    check = run(torch.float32, False)
    assert check.fusion == ["linear plus a tensor", "linear times a tensor"]
    assert check.errors["linear plus a tensor"] == float("inf")
    assert check.reasons["linear times a tensor"] == \
        "RuntimeError: could not create a primitive descriptor"


def test_a_wrong_packed_convolution_fails_packing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PackedConv2d._run

    def nan_in_the_corner(self: PackedConv2d, x: torch.Tensor,
                          packed: torch.Tensor) -> torch.Tensor:
        out = real(self, x, packed).clone()
        out[0, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(PackedConv2d, "_run", nan_in_the_corner)
    check = run(torch.float32, False)
    assert check.packing == ["convolution", "convolution with ReLU"]
    assert "folded upsampling" in check.fusion  # a plain packed convolution inside
    assert check.reasons["convolution"] == "relative error nan > 0.001"
