"""Packed layer weights: the same outputs as torch's own convolutions and linear layers, no
more memory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from limner.engines.diffusers.accel.prepack import (
    PackedConv2d,
    PackedLinear,
    packed_count,
    prepack,
    release_file_pages,
    supported,
)

pytestmark = pytest.mark.skipif(not supported(torch.float32), reason="no oneDNN in this torch")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
                         nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),  # kept as is
                         nn.Conv2d(8, 4, 1, bias=False))


def assert_same(packed: nn.Module, eager: nn.Module, inputs: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in inputs:
            ours, theirs = packed(x), eager(x)
            assert ours.shape == theirs.shape
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_packed_convolutions_compute_the_same() -> None:
    eager = small_net().eval()
    packed = copy.deepcopy(eager)
    assert prepack(packed) == 3 and packed_count(packed) == 3
    assert type(packed[3]) is nn.Conv2d  # reflect padding: not packable
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 4, 16, 16, generator=generator),
              torch.randn(2, 4, 10, 14, generator=generator),  # another shape after packing
              torch.randn(1, 4, 16, 16, generator=generator).to(
                  memory_format=torch.channels_last)]
    assert_same(packed, eager, inputs)
    first = packed[0]
    assert isinstance(first, PackedConv2d) and first.weight is None and first.packed is not None


def test_packed_linear_layers_compute_the_same() -> None:
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32, bias=False)).eval()
    packed = copy.deepcopy(eager)
    assert prepack(packed) == 2 and packed_count(packed) == 2
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 77, 64, generator=generator),  # tokens: 3-D
              torch.randn(1, 64, generator=generator),
              torch.randn(2, 64, 9, generator=generator).transpose(1, 2),  # not contiguous
              torch.randn(3, 4, 5, 64, generator=generator)]
    assert_same(packed, eager, inputs)
    first = packed[0]
    assert isinstance(first, PackedLinear) and first.weight is None and first.packed is not None
    assert (first.in_features, first.out_features) == (64, 96)


def test_a_relu_after_a_packed_layer_runs_inside_it() -> None:
    """As in a tiny autoencoder's blocks: conv, ReLU, conv, ReLU, conv in a Sequential."""
    torch.manual_seed(0)
    shared = nn.ReLU()  # one module twice, as diffusers' AutoencoderTinyBlock has it
    eager = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), shared,
                          nn.Conv2d(8, 8, 3, padding=1), shared,
                          nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(2),
                          nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    packed = copy.deepcopy(eager)
    assert prepack(packed) == 5
    assert [type(m).__name__ for m in packed] == [
        "PackedConv2d", "Identity", "PackedConv2d", "Identity", "PackedConv2d", "Flatten",
        "PackedLinear", "Identity", "PackedLinear"]
    assert [m.activation for m in packed if isinstance(m, PackedConv2d | PackedLinear)] == [
        "relu", "relu", "none", "relu", "none"]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours, theirs = packed(x), eager(x)
    assert (theirs < 0).any()  # the last layer has no ReLU: negative outputs stay
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_packed_tiny_autoencoder_decodes_the_same() -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    eager = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                            num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).eval()
    packed = copy.deepcopy(eager)
    prepack(packed.decoder)
    relus = [m for m in packed.decoder.modules() if type(m) is nn.ReLU]
    assert len(relus) == 2  # each block's ReLU after its residual sum stays: fused are the rest
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours, theirs = packed.decode(latent).sample, eager.decode(latent).sample
    assert ours.shape == theirs.shape == (1, 3, 16, 16)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_model_of_convolutions_keeps_its_dtype() -> None:
    """Diffusers finds a model's dtype and device in its parameters or buffers: a tiny
    autoencoder is all convolutions, so packing must leave something to find."""
    from diffusers.models.modeling_utils import get_parameter_device, get_parameter_dtype

    only_convs = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 4, 1))
    prepack(only_convs)
    assert not list(only_convs.parameters())
    assert get_parameter_dtype(only_convs) == torch.float32
    assert get_parameter_device(only_convs) == torch.device("cpu")


@pytest.mark.skipif(sys.platform != "linux", reason="madvise on a file mapping: Linux")
def test_mapped_weights_are_released_and_still_read_back(tmp_path: Path) -> None:
    original = torch.randn(256, 1024)  # 1 MiB: whole pages inside
    save_file({"w": original}, tmp_path / "w.safetensors")
    mapped = load_file(tmp_path / "w.safetensors")["w"]
    assert torch.equal(mapped, original)  # every page read, so resident
    assert release_file_pages(mapped) > 0
    assert torch.equal(mapped, original)  # read back from the file
    anonymous = original.clone()
    assert release_file_pages(anonymous) == 0
    assert torch.equal(anonymous, original)


def test_a_packed_layer_adds_and_multiplies_inside_its_call() -> None:
    """What `fusion` builds on: a sum (then a ReLU), a per-channel shift, a product, a GELU,
    each inside the layer's own oneDNN call."""
    torch.manual_seed(0)
    x, other = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    shift = torch.randn(8)
    with torch.inference_mode():
        for bias in (True, False):
            conv = nn.Conv2d(8, 8, 3, padding=1, bias=bias)
            packed = PackedConv2d(conv)
            assert_close(packed.plus(x, other), conv(x) + other)
            assert_close(packed.plus(x, other, "relu"), torch.relu(conv(x) + other))
            assert_close(packed.plus_per_channel(x, shift), conv(x) + shift[:, None, None])
        linear = nn.Linear(8, 6)
        tokens, rows = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
        packed_linear = PackedLinear(linear)
        assert_close(packed_linear.plus(tokens, rows), linear(tokens) + rows)
        assert_close(packed_linear.times(tokens, rows), linear(tokens) * rows)
        with pytest.raises(ValueError, match="no activation after a binary operation"):
            packed_linear.plus(tokens, rows, "relu")
        half = PackedLinear.of(linear.weight[:3], linear.bias[:3], activation="gelu")
        assert half.out_features == 3
        assert_close(half(tokens), torch.nn.functional.gelu(linear(tokens)[..., :3]))


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
