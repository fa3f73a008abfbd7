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

A block is fused only in the configuration these models use, checked when fusing; any other
keeps diffusers' forward, and so does a fused block while training or when called with
arguments the fused forward does not handle (attention masks, cross-attention kwargs).
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from limner.engines.prepack import PackedConv2d, PackedLinear


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


def unfuse(model: nn.Module) -> int:
    """Give every fused block under `model` diffusers' forward back (a split GEGLU keeps its
    two packed halves, its product in a pass of its own); returns how many. For a machine
    whose oneDNN turns a fused call down."""
    unfused = 0
    for module in model.modules():
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
    """How many blocks under `model` run a fused forward."""
    return sum("forward" in vars(m) or "_get_output_for_continuous_inputs" in vars(m)
               for m in model.modules())
