"""Elementwise passes folded into the packed layers' oneDNN calls (`prepack`), for the UNets,
VAEs and tiny autoencoders of the Stable Diffusion family.

Diffusers adds each residual, the time embedding and GEGLU's gate in passes of their own over
the activations, divides by scale factors of 1.0, and turns each attention block's output into
NCHW order (which `layout` then turns back). Each pass reads and writes a whole activation:
memory traffic that AMX does not speed up, while it speeds the matrix products up several
times. The forwards here run the same blocks with those passes inside the packed layers'
oneDNN calls: a ResNet block's time embedding in its first convolution's bias and its
residual sum in its second convolution, an attention's residual sum in its output projection,
GEGLU's GELU and product in its projection, a tiny autoencoder block's sum and ReLU in its
last convolution (post-ops, all but the bias). Each post-op's second operand has the output's
shape, since oneDNN does not promise broadcasting for every kernel.

Each nearest 2x upsampling followed by a 3x3 convolution (the UNet's `Upsample2D`, a tiny
decoder's layers) also runs as one 2x2 convolution of the small input per output parity
(`FoldedUpsampleConv`): 2.25x fewer FLOPs there, no upsampled copy.

A block is fused only in the configuration these models use, checked when fusing; any other
keeps diffusers' forward, and so does a fused block while training or when called with
arguments the fused forward does not handle (attention masks, cross-attention kwargs).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from limner.engines.diffusers.accel.prepack import PackedConv2d, PackedLinear, release_file_pages


def fuse(model: nn.Module) -> int:
    """Give every eligible block under `model` its fused forward; returns how many. Run it
    after `prepack`, before the first call (GEGLU's projection is split while its weight is
    still plain)."""
    fused = 0
    for module in list(model.modules()):
        block: Any = module
        kind = type(block).__name__
        if kind == "ResnetBlock2D" and _resnet_fusable(block):
            block.forward = MethodType(_resnet_forward, block)
        elif kind == "Transformer2DModel" and _attention_output_fusable(block):
            block._get_output_for_continuous_inputs = MethodType(_attention_output, block)
        elif kind == "BasicTransformerBlock" and _transformer_block_fusable(block):
            _split_geglu(block.ff)
            block.forward = MethodType(_transformer_block_forward, block)
        elif kind == "AutoencoderTinyBlock" and _tiny_block_fusable(block):
            block.forward = MethodType(_tiny_block_forward, block)
        elif kind == "Upsample2D" and _upsample_fusable(block):
            block.folded = FoldedUpsampleConv(block.conv)
            release_file_pages(block.conv.weight)  # kept only for other output sizes
            block.forward = MethodType(_upsample_forward, block)
        elif type(block) is nn.Sequential:
            fused += _fold_upsamples(block)
            continue
        else:
            continue
        fused += 1
    return fused


def _plain(layer: Any, kind: type[Any]) -> bool:
    """Whether `layer` is a packed layer of `kind` with no activation of its own."""
    return isinstance(layer, kind) and layer.activation == "none"


# ResNet blocks -----------------------------------------------------------------------------
def _resnet_fusable(block: Any) -> bool:
    return (_plain(block.conv1, PackedConv2d) and _plain(block.conv2, PackedConv2d)
            and block.time_embedding_norm == "default" and type(block.nonlinearity) is nn.SiLU
            and type(block.dropout) is nn.Dropout)


def _resnet_forward(block: Any, input_tensor: torch.Tensor, temb: torch.Tensor | None,
                    *args: Any, **kwargs: Any) -> torch.Tensor:
    """`ResnetBlock2D.forward`: the time embedding is added to `conv1`'s bias (where the
    batch shares one timestep), the residual inside `conv2`; a scale factor of 1 divides
    nothing."""
    if block.training:
        return type(block).forward(  # type: ignore[no-any-return]
            block, input_tensor, temb, *args, **kwargs)
    hidden = F.silu(block.norm1(input_tensor), inplace=True)
    if block.upsample is not None:
        if hidden.shape[0] >= 64:  # as diffusers: upsample_nearest_nhwc fails on large batches
            input_tensor, hidden = input_tensor.contiguous(), hidden.contiguous()
        input_tensor, hidden = block.upsample(input_tensor), block.upsample(hidden)
    elif block.downsample is not None:
        input_tensor, hidden = block.downsample(input_tensor), block.downsample(hidden)
    if block.time_emb_proj is not None and temb is not None:
        if not block.skip_time_act:
            temb = block.nonlinearity(temb)
        temb = block.time_emb_proj(temb)
        if bool((temb == temb[:1]).all()):  # one timestep for the whole batch, as usual
            hidden = block.conv1.plus_per_channel(hidden, temb[0])
        else:
            hidden = block.conv1(hidden) + temb[:, :, None, None]
    else:
        hidden = block.conv1(hidden)
    hidden = block.dropout(F.silu(block.norm2(hidden), inplace=True))
    shortcut = input_tensor if block.conv_shortcut is None else block.conv_shortcut(input_tensor)
    out: torch.Tensor = block.conv2.plus(hidden, shortcut)
    if block.output_scale_factor != 1:
        out = out / block.output_scale_factor
    return out


# Attention blocks --------------------------------------------------------------------------
def _attention_output_fusable(model: Any) -> bool:
    return bool(model.is_input_continuous and model.use_linear_projection
                and _plain(model.proj_out, PackedLinear))


def _attention_output(model: Any, hidden_states: torch.Tensor, residual: torch.Tensor,
                      batch_size: int, height: int, width: int, inner_dim: int
                      ) -> torch.Tensor:
    """`Transformer2DModel._get_output_for_continuous_inputs` with a linear `proj_out`: the
    residual is added inside it, and the output stays in the NHWC order it comes out in.
    An NCHW residual (a model not in channels_last) keeps diffusers' way."""
    if not residual.is_contiguous(memory_format=torch.channels_last):
        return type(model)._get_output_for_continuous_inputs(  # type: ignore[no-any-return]
            model, hidden_states, residual, batch_size, height, width, inner_dim)
    tokens = residual.permute(0, 2, 3, 1).reshape(batch_size, height * width, inner_dim)
    out: torch.Tensor = model.proj_out.plus(hidden_states, tokens)
    return out.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2)


def _attention_fusable(attn: Any) -> bool:
    to_out = list(getattr(attn, "to_out", ()))
    return (type(attn).__name__ == "Attention"
            and type(attn.processor).__name__ == "AttnProcessor2_0"
            and attn.spatial_norm is None and attn.group_norm is None
            and attn.norm_q is None and attn.norm_k is None and attn.norm_cross is None
            and not attn.residual_connection and attn.rescale_output_factor == 1
            and len(to_out) == 2 and _plain(to_out[0], PackedLinear)
            and type(to_out[1]) is nn.Dropout)


def _attention(attn: Any, hidden: torch.Tensor, context: torch.Tensor | None,
               residual: torch.Tensor) -> torch.Tensor:
    """`AttnProcessor2_0` on 3-D tokens without a mask, plus `residual`, added inside the
    output projection."""
    context = hidden if context is None else context
    batch = hidden.shape[0]
    query, key, value = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
                         for t in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
    return attn.to_out[0].plus(out, residual)  # type: ignore[no-any-return]


# Transformer blocks ------------------------------------------------------------------------
def _feed_forward_fusable(ff: Any) -> bool:
    net = list(getattr(ff, "net", ()))
    return (type(ff).__name__ == "FeedForward" and len(net) >= 3
            and all(type(layer) is nn.Dropout for layer in net[1:2] + net[3:])
            and _plain(net[2], PackedLinear))


def _transformer_block_fusable(block: Any) -> bool:
    return (block.norm_type == "layer_norm" and block.pos_embed is None
            and not block.only_cross_attention and block._chunk_size is None
            and _attention_fusable(block.attn1)
            and (block.attn2 is None or _attention_fusable(block.attn2))
            and _feed_forward_fusable(block.ff))


def _transformer_block_forward(block: Any, hidden_states: torch.Tensor,
                               attention_mask: torch.Tensor | None = None,
                               encoder_hidden_states: torch.Tensor | None = None,
                               encoder_attention_mask: torch.Tensor | None = None,
                               timestep: torch.Tensor | None = None,
                               cross_attention_kwargs: dict[str, Any] | None = None,
                               class_labels: torch.Tensor | None = None,
                               added_cond_kwargs: dict[str, torch.Tensor] | None = None
                               ) -> torch.Tensor:
    """`BasicTransformerBlock.forward` with layer norms: each residual is added inside the
    layer before it (attention output projections, the feed-forward's last linear)."""
    if block.training or attention_mask is not None or encoder_attention_mask is not None \
            or cross_attention_kwargs or hidden_states.dim() != 3:
        return type(block).forward(  # type: ignore[no-any-return]
            block, hidden_states, attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, timestep=timestep,
            cross_attention_kwargs=cross_attention_kwargs, class_labels=class_labels,
            added_cond_kwargs=added_cond_kwargs)
    hidden = _attention(block.attn1, block.norm1(hidden_states), None, hidden_states)
    if block.attn2 is not None:
        hidden = _attention(block.attn2, block.norm2(hidden), encoder_hidden_states, hidden)
    net = block.ff.net
    activated = net[0](block.norm3(hidden))
    return net[2].plus(activated, hidden)  # type: ignore[no-any-return]


class _FusedGEGLU(nn.Module):
    """GEGLU (`value * gelu(gate)`, both halves of one projection) as two packed linears:
    the gate's with the GELU inside its call, the value's with the product inside its own."""

    def __init__(self, value: PackedLinear, gate: PackedLinear) -> None:
        super().__init__()
        self.value, self.gate = value, gate
        self.fused = True
        """False: the product in a pass of its own (see `unfuse`)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.value.times(hidden, self.gate(hidden))
        product: torch.Tensor = self.value(hidden) * self.gate(hidden)
        return product


def _split_geglu(ff: Any) -> None:
    """Replace the feed-forward's GEGLU by `_FusedGEGLU` where its projection is packed and
    not yet used (its plain weight is still there to split)."""
    act = ff.net[0]
    proj: Any = getattr(act, "proj", None)
    if type(act).__name__ != "GEGLU" or not _plain(proj, PackedLinear) or proj.weight is None:
        return
    half = proj.out_features // 2
    weight, bias = proj.weight, proj.bias
    value = PackedLinear.of(weight[:half], None if bias is None else bias[:half])
    gate = PackedLinear.of(weight[half:], None if bias is None else bias[half:],
                           activation="gelu")
    ff.net[0] = _FusedGEGLU(value, gate)


# Tiny autoencoder blocks -------------------------------------------------------------------
def _tiny_block_fusable(block: Any) -> bool:
    convs = block.conv
    return (type(convs) is nn.Sequential and len(convs) > 0
            and _plain(convs[-1], PackedConv2d) and type(block.fuse) is nn.ReLU)


def _tiny_block_forward(block: Any, x: torch.Tensor) -> torch.Tensor:
    """`AutoencoderTinyBlock.forward`: relu(conv(x) + skip(x)), the sum and the ReLU inside
    the last convolution."""
    if block.training:
        return type(block).forward(block, x)  # type: ignore[no-any-return]
    hidden = x
    for layer in list(block.conv)[:-1]:
        hidden = layer(hidden)
    return block.conv[-1].plus(hidden, block.skip(x), "relu")  # type: ignore[no-any-return]


# Nearest upsampling and a convolution ------------------------------------------------------
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))
"""An output pixel's (row, column) parity after a 2x upsampling."""


def _fold(weight: torch.Tensor, phase: int, axis: int) -> torch.Tensor:
    """A 3x3 kernel's taps along `axis` as the 2 taps they meet on the small input, for
    outputs of this parity: even ones see the rows above (tap 0) and their own (taps 1 and
    2), odd ones their own (taps 0 and 1) and the rows below (tap 2)."""
    before, middle, after = weight.unbind(axis)
    pair = (before, middle + after) if phase == 0 else (before + middle, after)
    return torch.stack(pair, axis)


class FoldedUpsampleConv(nn.Module):
    """Nearest 2x upsampling, then a 3x3 convolution with padding 1, run as one 2x2
    convolution of the small input. After the upsampling each output pixel's 3x3 window
    covers only 2x2 distinct input pixels, so the kernel folds into four 2x2 kernels, one per
    output parity; their outputs interleave into the large image. 2.25x fewer FLOPs (SD's
    UNet: 38 of 804 GFLOP per 512x512 image; a tiny decoder: 14 of 141), and no upsampled
    copy for the convolution to read, at 1.8x the convolution's weight."""

    def __init__(self, conv: PackedConv2d) -> None:
        super().__init__()
        assert conv.weight is not None, "fold before the first call packs the weight"
        weight = conv.weight.float()  # the folded sums in fp32, rounded once
        # In the original's memory order: oneDNN lays its output out as its weight is.
        nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last) \
            and not conv.weight.is_contiguous()
        kernels = torch.cat([_fold(_fold(weight, row, 2), column, 3)
                             for row, column in _PHASES]).to(conv.weight.dtype).contiguous(
            memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        bias = None if conv.bias is None else conv.bias.repeat(len(_PHASES))
        self.conv = PackedConv2d.of(kernels, bias, padding=1, activation=conv.activation)
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Output (i, j) of the 2x2 convolution over the input padded by 1 sees input rows
        # i-1, i and columns j-1, j: what even outputs need at i, and odd ones at i - 1.
        phases: torch.Tensor = self.conv(x)
        batch, _, height, width = phases.shape
        channels, height, width = self.out_channels, height - 1, width - 1
        layout = torch.channels_last if phases.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((batch, channels, 2 * height, 2 * width), dtype=phases.dtype,
                          device=phases.device, memory_format=layout)
        for index, (row, column) in enumerate(_PHASES):
            out[:, :, row::2, column::2] = phases[:, index * channels:(index + 1) * channels,
                                                  row:row + height, column:column + width]
        return out


def _foldable(conv: Any) -> bool:
    return (isinstance(conv, PackedConv2d) and conv.weight is not None
            and tuple(conv.weight.shape[2:]) == (3, 3) and conv.padding == [1, 1]
            and list(conv.stride) == [1, 1] and list(conv.dilation) == [1, 1]
            and conv.groups == 1)


def _upsample_fusable(block: Any) -> bool:
    return (block.use_conv and not block.use_conv_transpose and block.norm is None
            and block.interpolate and block.name == "conv" and _foldable(block.conv))


def _upsample_forward(block: Any, hidden_states: torch.Tensor,
                      output_size: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`Upsample2D.forward` with its convolution folded (`FoldedUpsampleConv`); an output
    size other than twice the input's takes diffusers' way, with the unfolded convolution."""
    doubled = tuple(2 * side for side in hidden_states.shape[-2:])
    if block.training or (output_size is not None and tuple(output_size) != doubled):
        return type(block).forward(  # type: ignore[no-any-return]
            block, hidden_states, output_size, *args, **kwargs)
    return block.folded(hidden_states)  # type: ignore[no-any-return]


def _doubles_nearest(module: Any) -> bool:
    scale = module.scale_factor if type(module) is nn.Upsample else None
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    return (type(module) is nn.Upsample and module.mode == "nearest" and module.size is None
            and all(factor == 2 for factor in scales) and not module.recompute_scale_factor)


def _fold_upsamples(sequence: nn.Sequential) -> int:
    """In a Sequential (a tiny decoder's layers), each nearest 2x upsampling followed by a
    foldable convolution becomes one `FoldedUpsampleConv` (and an `nn.Identity`); returns how
    many."""
    names = list(sequence._modules)
    folded = 0
    for first, second in itertools.pairwise(names):
        upsample, conv = sequence._modules[first], sequence._modules[second]
        if _doubles_nearest(upsample) and _foldable(conv):
            setattr(sequence, first, FoldedUpsampleConv(conv))  # type: ignore[arg-type]
            setattr(sequence, second, nn.Identity())
            folded += 1
    return folded


def unfuse(model: nn.Module) -> int:
    """Give every block with post-ops under `model` diffusers' forward back (a split GEGLU
    keeps its two packed halves, its product in a pass of its own); returns how many. For a
    machine whose oneDNN turns a fused call down. Folded upsamplings stay: they are plain
    convolutions."""
    unfused = 0
    for module in model.modules():
        if type(module).__name__ == "Upsample2D":
            continue
        own = vars(module)
        for name in ("forward", "_get_output_for_continuous_inputs"):
            if name in own:
                del own[name]
                unfused += 1
        if isinstance(module, _FusedGEGLU) and module.fused:
            module.fused = False
            unfused += 1
    return unfused


def fused_count(model: nn.Module) -> int:
    """How many blocks under `model` run a fused forward (folded upsamplings included)."""
    # An Upsample2D's forward counts through its FoldedUpsampleConv.
    return sum(type(m) is FoldedUpsampleConv or "_get_output_for_continuous_inputs" in vars(m)
               or ("forward" in vars(m) and type(m).__name__ != "Upsample2D")
               for m in model.modules())


def apply(parts: Sequence[nn.Module]) -> int:
    """Fuses every eligible block of `parts` (after `prepack.apply`); returns how many."""
    return sum(fuse(part) for part in parts)
