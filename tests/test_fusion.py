"""Fused blocks: the same outputs as diffusers' own forwards, with the elementwise work
inside the packed layers' calls; blocks in other configurations keep their forward."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from limner.engines.diffusers.accel import layout
from limner.engines.diffusers.accel.fusion import FoldedUpsampleConv, fuse, fused_count, unfuse
from limner.engines.diffusers.accel.prepack import PackedConv2d, PackedLinear, prepack, supported

pytestmark = pytest.mark.skipif(not supported(torch.float32), reason="no oneDNN in this torch")


def tiny_unet(linear_projection: bool = True) -> nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=32, use_linear_projection=linear_projection).eval()


def packed_and_fused(model: nn.Module, channels_last: bool = False) -> tuple[nn.Module, int]:
    model = copy.deepcopy(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        layout.keep_channels_last(model)
    prepack(model)
    return model, fuse(model)


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=2e-5, rtol=1e-4), \
        (ours - theirs).abs().max().item()


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_fused_unet_computes_the_same(channels_last: bool) -> None:
    eager = tiny_unet()
    fused, count = packed_and_fused(eager, channels_last)
    kinds = [type(m).__name__ for m in fused.modules() if m in _fused_modules(fused)]
    # Every ResNet block, attention block output and transformer block: 1 of each attention
    # kind down, 1 in the middle, 2 up.
    for kind, expected in (("ResnetBlock2D", None), ("Transformer2DModel", 4),
                           ("BasicTransformerBlock", 4)):
        there = sum(type(m).__name__ == kind for m in eager.modules())
        assert kinds.count(kind) == there == (expected or there)
    assert count == len(kinds)
    geglus = [m for m in fused.modules() if type(m).__name__ == "_FusedGEGLU"]
    assert len(geglus) == 4 and isinstance(geglus[0].gate, PackedLinear)
    assert geglus[0].gate.activation == "gelu"
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 7, 32, generator=generator)
    # One timestep for the batch (its embedding goes into conv1's bias), then one per sample
    # (added after conv1, as diffusers does).
    for timesteps in (torch.tensor([999, 999]), torch.tensor([999, 250])):
        with torch.inference_mode():
            theirs = eager(sample, timesteps, context).sample
            for _ in range(2):  # packing happens on the first call
                ours = fused(sample, timesteps, context).sample
                assert_close(ours, theirs)
    if channels_last:  # the attention blocks' outputs come out NHWC without a copy
        assert ours.is_contiguous(memory_format=torch.channels_last)


def _fused_modules(model: nn.Module) -> set[nn.Module]:
    return {m for m in model.modules()
            if "forward" in vars(m) or "_get_output_for_continuous_inputs" in vars(m)}


def test_a_fused_sdxl_style_unet_computes_the_same() -> None:
    """SDXL's UNet (SDXL-Turbo): two transformer blocks per attention block, an added
    time-and-text embedding, attention heads of another size."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    eager = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64,
        norm_num_groups=32).eval()
    fused, count = packed_and_fused(eager, channels_last=True)
    blocks = sum(type(m).__name__ == "BasicTransformerBlock" for m in eager.modules())
    assert blocks > 4 and fused_count(fused) == count
    generator = torch.Generator().manual_seed(6)
    sample = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 7, 64, generator=generator)
    added = {"text_embeds": torch.randn(1, 32, generator=generator),
             "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    with torch.inference_mode():
        theirs = eager(sample, 999, context, added_cond_kwargs=added).sample
        assert_close(fused(sample, 999, context, added_cond_kwargs=added).sample, theirs)


def test_fused_count_counts_the_fused_blocks() -> None:
    fused, count = packed_and_fused(tiny_unet())
    assert fused_count(fused) == count == len(_fused_modules(fused)) > 0


def test_without_linear_projections_the_attention_output_keeps_its_forward() -> None:
    eager = tiny_unet(linear_projection=False)  # SD 1.x: 1x1 convolutions in and out
    fused, _ = packed_and_fused(eager)
    blocks = [m for m in fused.modules() if type(m).__name__ == "Transformer2DModel"]
    assert blocks and not any(m in _fused_modules(fused) for m in blocks)
    generator = torch.Generator().manual_seed(3)
    sample, context = torch.randn(1, 4, 16, 16, generator=generator), \
        torch.randn(1, 7, 32, generator=generator)
    with torch.inference_mode():
        assert_close(fused(sample, 500, context).sample, eager(sample, 500, context).sample)


def test_an_attention_mask_takes_diffusers_own_forward() -> None:
    eager = tiny_unet()
    fused, _ = packed_and_fused(eager)
    generator = torch.Generator().manual_seed(4)
    sample, context = torch.randn(1, 4, 16, 16, generator=generator), \
        torch.randn(1, 7, 32, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    calls: list[Any] = []
    original = type(_first(fused, "BasicTransformerBlock")).forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("encoder_attention_mask"))
        return original(*args, **kwargs)

    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(_first(fused, "BasicTransformerBlock")), "forward", spy)
        ours = fused(sample, 500, context, encoder_attention_mask=mask).sample
        theirs = eager(sample, 500, context, encoder_attention_mask=mask).sample
    assert len(calls) == 8 and calls[0] is not None  # 4 blocks, each model once
    assert_close(ours, theirs)


def _first(model: nn.Module, kind: str) -> nn.Module:
    return next(m for m in model.modules() if type(m).__name__ == kind)


def test_a_scale_shift_resnet_block_keeps_its_forward() -> None:
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=32, out_channels=32, temb_channels=16,
                          time_embedding_norm="scale_shift").eval()
    fused, count = packed_and_fused(block)
    assert count == 0 and "forward" not in vars(fused)
    x, temb = torch.randn(1, 32, 8, 8), torch.randn(1, 16)
    with torch.inference_mode():
        assert_close(fused(x, temb), block(x, temb))


def test_a_resnet_block_with_a_shortcut_and_a_scale_computes_the_same() -> None:
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=16,
                          output_scale_factor=2.0, down=True).eval()
    fused, count = packed_and_fused(block)
    assert count == 1
    x, temb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    with torch.inference_mode():
        ours, theirs = fused(x, temb), block(x, temb)
    assert ours.shape == (2, 64, 4, 4)
    assert_close(ours, theirs)


def test_a_fused_vae_decoder_decodes_the_same() -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    eager = AutoencoderKL(block_out_channels=[32, 64], latent_channels=4, norm_num_groups=32,
                          down_block_types=["DownEncoderBlock2D"] * 2,
                          up_block_types=["UpDecoderBlock2D"] * 2).eval()
    fused, count = packed_and_fused(eager)
    assert count > 0  # its ResNet blocks, which take no time embedding
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert_close(fused.decode(latent).sample, eager.decode(latent).sample)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_fused_tiny_autoencoder_decodes_the_same(channels_last: bool) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    eager = AutoencoderTiny(encoder_block_out_channels=(8, 8),
                            decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                            num_decoder_blocks=(1, 2)).eval()
    fused, count = packed_and_fused(eager, channels_last)
    blocks = [m for m in fused.modules() if type(m).__name__ == "AutoencoderTinyBlock"]
    folded = [m for m in fused.modules() if isinstance(m, FoldedUpsampleConv)]
    assert count == len(blocks) + len(folded) and blocks and len(folded) == 1
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours, theirs = fused.decode(latent).sample, eager.decode(latent).sample
    assert ours.shape == theirs.shape == (1, 3, 16, 16)
    assert_close(ours, theirs)


def test_a_block_in_training_takes_diffusers_own_forward() -> None:
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=32, out_channels=32, temb_channels=16).eval()
    fused, _ = packed_and_fused(block)
    calls: list[bool] = []
    original = ResnetBlock2D.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(True)
        return original(*args, **kwargs)

    x, temb = torch.randn(1, 32, 4, 4), torch.randn(1, 16)
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(ResnetBlock2D, "forward", spy)
        fused(x, temb)
        assert not calls
        fused.train()
        assert_close(fused(x, temb), block(x, temb))
        assert len(calls) == 2  # the fused block's, and the eager block's own call


def test_unfused_blocks_compute_the_same_without_post_ops() -> None:
    eager = tiny_unet()
    fused, count = packed_and_fused(eager, channels_last=True)
    generator = torch.Generator().manual_seed(7)
    sample, context = torch.randn(1, 4, 16, 16, generator=generator), \
        torch.randn(1, 7, 32, generator=generator)
    with torch.inference_mode():
        fused(sample, 999, context)  # packed, fused
        # All but the folded upsampling (no post-op), and the 4 split GEGLUs' products.
        assert unfuse(fused) == count - 1 + 4
    assert fused_count(fused) == 1
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as patch, torch.inference_mode():
        for kind in (PackedLinear, PackedConv2d):
            patch.setattr(kind, "_binary", lambda *args, kind=kind: calls.append(kind.__name__))
        ours = fused(sample, 999, context).sample
    assert not calls  # no post-op left
    with torch.inference_mode():
        assert_close(ours, eager(sample, 999, context).sample)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_folded_upsampling_convolution_computes_the_same(channels_last: bool) -> None:
    """Nearest 2x upsampling and a 3x3 convolution, as one 2x2 convolution per output
    parity: in a Sequential (a tiny decoder's layers) and in diffusers' Upsample2D."""
    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(0)
    sequence = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Upsample(scale_factor=2),
                             nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()).eval()
    upsample = Upsample2D(8, use_conv=True).eval()
    x = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(8))
    for model, inputs in ((sequence, x[:, :4].contiguous()), (upsample, x)):
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        fused, count = packed_and_fused(model, channels_last)
        folded = [m for m in fused.modules() if isinstance(m, FoldedUpsampleConv)]
        assert count == fused_count(fused) == len(folded) == 1
        assert folded[0].conv.activation == ("relu" if model is sequence else "none")
        with torch.inference_mode():
            ours, theirs = fused(inputs), model(inputs)
        assert ours.shape == theirs.shape == (2, 6 if model is sequence else 8, 10, 14)
        if channels_last:  # the interleaved output keeps the input's memory order
            assert ours.is_contiguous(memory_format=torch.channels_last)
        assert_close(ours, theirs)
    # An output size other than twice the input's takes diffusers' way, unfolded.
    fused, _ = packed_and_fused(upsample)
    with torch.inference_mode():
        assert_close(fused(x, output_size=(9, 13)), upsample(x, output_size=(9, 13)))
        assert_close(fused(x, output_size=(10, 14)), upsample(x, output_size=(10, 14)))


# The diffusers methods fusion replaces ---------------------------------------------------------
REPLACED = [
    ("diffusers.models.resnet", "ResnetBlock2D", "forward", "_resnet_forward"),
    ("diffusers.models.transformers.transformer_2d", "Transformer2DModel",
     "_get_output_for_continuous_inputs", "_attention_output"),
    ("diffusers.models.attention", "BasicTransformerBlock", "forward",
     "_transformer_block_forward"),
    ("diffusers.models.autoencoders.vae", "AutoencoderTinyBlock", "forward",
     "_tiny_block_forward"),
    ("diffusers.models.upsampling", "Upsample2D", "forward", "_upsample_forward"),
]


@pytest.mark.parametrize(("module", "cls", "method", "ours"), REPLACED,
                         ids=[r[1] for r in REPLACED])
def test_the_replaced_diffusers_methods_take_what_their_replacements_take(
        module: str, cls: str, method: str, ours: str) -> None:
    """pyproject pins diffusers below its next minor release because fusion replaces these
    methods (one of them private) by class name: moving the pin, this says what changed."""
    import importlib
    import inspect

    from limner.engines.diffusers.accel import fusion

    theirs = getattr(getattr(importlib.import_module(module), cls), method)
    replacement = getattr(fusion, ours)
    assert list(inspect.signature(theirs).parameters)[1:] == \
        list(inspect.signature(replacement).parameters)[1:]
