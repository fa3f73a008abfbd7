"""Denoiser calls rewritten into calls OpenVINO can convert, for the transformers whose own
forward it cannot: Qwen-Image's, which takes Python lists of image shapes and slices its
rotary table at Python integers (a trace bakes them, so the IR would be wrong at another
size), and Z-Image's, which loops over Python lists of per-picture tensors and looks its
rotary table up in complex numbers. Each rewrite does in torch, before the converted model,
what depends on those Python values (position ids, rotary tables, patching, padding), and
hands the converted model plain tensors; its result is made back into what the pipeline
reads. The rotary tables cross as real (`view_as_real`) tensors, made complex again inside,
where OpenVINO multiplies them as the model does.

Captions are padded to a multiple of `TEXT_BUCKET` tokens, the padding masked out of
attention, so that prompts of other lengths reuse a compiled shape: what the real tokens
attend to is unchanged, and OpenVINO compiles one model per input shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

TEXT_BUCKET = 64
"""Caption lengths are padded up to a multiple of this many tokens."""
REWRITES_VERSION = "limner-rewrites-1"
"""Part of a rewritten call's cache key: changing a rewrite never reuses an old IR."""

Finish = Callable[[torch.Tensor], Any]
"""Makes the converted model's output into what the pipeline reads from the denoiser."""


class Untraceable(RuntimeError):
    """A call the rewrite does not cover (a ControlNet's residuals, an omni-mode input): a
    RuntimeError, so that the engine steps down to torch for it."""


class CallRewrite:
    """The pipeline's call as it is, for the denoisers that convert as they are called."""

    name = "as-called"

    def __init__(self, module: torch.nn.Module) -> None:
        del module

    def traced(self, module: torch.nn.Module) -> torch.nn.Module:
        """What the converter traces, called with `rewrite`'s arguments and
        `return_dict=False`."""
        return module

    def rewrite(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], Finish]:
        return dict(arguments), _same


def _same(out: torch.Tensor) -> torch.Tensor:
    return out


def rewrite_for(module: torch.nn.Module) -> CallRewrite:
    """The rewrite of `module`'s calls, by its class."""
    kind = REWRITES.get(type(module).__name__, CallRewrite)
    return kind(module)


def bucket(length: int, multiple: int = TEXT_BUCKET) -> int:
    return -(-length // multiple) * multiple


class QwenImageCall(CallRewrite):
    """Qwen-Image's transformer (and its Edit models'): the rotary tables come from the
    model's own `pos_embed` in torch, for the call's image shapes and the padded caption."""

    name = "qwen-image"

    def __init__(self, module: Any) -> None:
        self.pos_embed = module.pos_embed
        self.zero_cond_t = bool(getattr(module.config, "zero_cond_t", False))

    def traced(self, module: torch.nn.Module) -> torch.nn.Module:
        return _QwenImageTraced(module)

    def rewrite(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], Finish]:
        if self.zero_cond_t:  # Edit-2511 modulates per token by the image shapes
            raise Untraceable("the OpenVINO rewrite of Qwen-Image has no per-token "
                              "modulation (zero_cond_t)")
        for name in ("controlnet_block_samples", "additional_t_cond"):
            if arguments.get(name) is not None:
                raise Untraceable(f"the OpenVINO rewrite of Qwen-Image takes no {name}")
        hidden: torch.Tensor = arguments["hidden_states"]
        text: torch.Tensor = arguments["encoder_hidden_states"]
        mask: torch.Tensor | None = arguments.get("encoder_hidden_states_mask")
        batch, length = text.shape[:2]
        padded = bucket(length)
        keep = torch.ones(batch, length, dtype=torch.bool) if mask is None else mask.bool()
        text = F.pad(text, (0, 0, 0, padded - length))
        keep = F.pad(keep, (0, padded - length), value=False)
        image_rotary, text_rotary = self.pos_embed(arguments["img_shapes"],
                                                   max_txt_seq_len=padded,
                                                   device=hidden.device)
        inputs = {"hidden_states": hidden, "encoder_hidden_states": text,
                  "encoder_hidden_states_mask": keep, "timestep": arguments["timestep"],
                  "image_rotary": torch.view_as_real(image_rotary),
                  "text_rotary": torch.view_as_real(text_rotary)}
        if arguments.get("guidance") is not None:
            inputs["guidance"] = arguments["guidance"]
        if arguments.get("attention_kwargs"):
            inputs["attention_kwargs"] = arguments["attention_kwargs"]
        return inputs, _same


class _Given(torch.nn.Module):
    """Stands in for a module the trace must not run, answering with what it is given."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.answer


class _QwenImageTraced(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_mask: torch.Tensor, timestep: torch.Tensor,
                image_rotary: torch.Tensor, text_rotary: torch.Tensor,
                guidance: torch.Tensor | None = None,
                attention_kwargs: dict[str, Any] | None = None,
                return_dict: bool = False) -> tuple[torch.Tensor]:
        module: Any = self.module
        own = module.pos_embed
        module.pos_embed = _Given((torch.view_as_complex(image_rotary),
                                   torch.view_as_complex(text_rotary)))
        try:
            out: tuple[torch.Tensor] = module(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                encoder_hidden_states_mask=encoder_hidden_states_mask, timestep=timestep,
                img_shapes=None, guidance=guidance, attention_kwargs=attention_kwargs,
                return_dict=False)
        finally:
            module.pos_embed = own
        return out


class ZImageCall(CallRewrite):
    """Z-Image's transformer in its basic mode (one picture per batch item): patching,
    padding to its 32-token multiples, position ids and rotary tables in torch, as its own
    `patchify_and_embed` and `_prepare_sequence` make them; the embedders, the refiners,
    the layers and the final layer in the converted model, over a batch padded to one
    caption length with the padding masked out of attention."""

    name = "z-image"

    def __init__(self, module: Any) -> None:
        from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF

        self.rope = module.rope_embedder
        self.grid = type(module).create_coordinate_grid
        self.multiple = int(SEQ_MULTI_OF)
        self.out_channels = int(module.out_channels)

    def traced(self, module: torch.nn.Module) -> torch.nn.Module:
        return _ZImageTraced(module)

    def rewrite(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], Finish]:
        images: Sequence[Any] = arguments["x"]
        captions: Sequence[torch.Tensor] = arguments["cap_feats"]
        if not isinstance(images[0], torch.Tensor):
            raise Untraceable("the OpenVINO rewrite of Z-Image has no omni mode")
        for name in ("controlnet_block_samples", "siglip_feats", "image_noise_mask"):
            if arguments.get(name) is not None:
                raise Untraceable(f"the OpenVINO rewrite of Z-Image takes no {name}")
        patch = int(arguments.get("patch_size", 2))
        frame_patch = int(arguments.get("f_patch_size", 1))
        rounded = [bucket(len(caption), self.multiple) for caption in captions]
        width = bucket(max(rounded))
        tokens, token_pads, token_rotary = [], [], []
        texts, text_pads, text_keep, text_rotary = [], [], [], []
        for image, caption, length in zip(images, captions, rounded, strict=True):
            channels, frames, height, columns = image.shape
            grid = (frames // frame_patch, height // patch, columns // patch)
            patches = image.reshape(channels, grid[0], frame_patch, grid[1], patch, grid[2],
                                    patch).permute(1, 3, 5, 2, 4, 6, 0).reshape(
                grid[0] * grid[1] * grid[2], frame_patch * patch * patch * channels)
            count = patches.shape[0]
            total = bucket(count, self.multiple)
            tokens.append(torch.cat([patches, patches[-1:].repeat(total - count, 1)]))
            token_pads.append(torch.arange(total) >= count)
            ids = self.grid(grid, (length + 1, 0, 0)).flatten(0, 2)
            ids = torch.cat([ids, ids.new_zeros(total - count, 3)])
            token_rotary.append(torch.view_as_real(self.rope(ids)))
            # The caption's own padding (to its 32-token multiple) is attended, as the
            # model does; the batch padding past it is not.
            texts.append(F.pad(caption, (0, 0, 0, width - len(caption))))
            text_pads.append(torch.arange(width) >= len(caption))
            text_keep.append(torch.arange(width) < length)
            ids = self.grid((length, 1, 1), (1, 0, 0)).flatten(0, 2)
            ids = torch.cat([ids, ids.new_zeros(width - length, 3)])
            text_rotary.append(torch.view_as_real(self.rope(ids)))
        inputs = {"t": arguments["t"], "tokens": torch.stack(tokens),
                  "token_pads": torch.stack(token_pads),
                  "token_rotary": torch.stack(token_rotary),
                  "caption": torch.stack(texts), "caption_pads": torch.stack(text_pads),
                  "caption_keep": torch.stack(text_keep),
                  "caption_rotary": torch.stack(text_rotary),
                  "patch": f"{patch}-{frame_patch}"}
        shapes = [tuple(image.shape) for image in images]

        def finish(out: torch.Tensor) -> list[torch.Tensor]:
            pictures = []
            for item, (_, frames, height, columns) in zip(out, shapes, strict=True):
                grid = (frames // frame_patch, height // patch, columns // patch)
                count = grid[0] * grid[1] * grid[2]
                pictures.append(item[:count].reshape(
                    *grid, frame_patch, patch, patch, self.out_channels
                ).permute(6, 0, 3, 1, 4, 2, 5).reshape(self.out_channels, frames, height,
                                                       columns))
            return pictures

        return inputs, finish


class _ZImageTraced(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, t: torch.Tensor, tokens: torch.Tensor, token_pads: torch.Tensor,
                token_rotary: torch.Tensor, caption: torch.Tensor, caption_pads: torch.Tensor,
                caption_keep: torch.Tensor, caption_rotary: torch.Tensor, patch: str,
                return_dict: bool = False) -> tuple[torch.Tensor]:
        model: Any = self.module
        x = model.all_x_embedder[patch](tokens)
        adaln = model.t_embedder(t * model.t_scale).type_as(x)
        x = torch.where(token_pads.unsqueeze(-1), model.x_pad_token, x)
        rotary = torch.view_as_complex(token_rotary)
        for layer in model.noise_refiner:
            x = layer(x, None, rotary, adaln)
        text = model.cap_embedder(caption)
        text = torch.where(caption_pads.unsqueeze(-1), model.cap_pad_token, text)
        rotary = torch.view_as_complex(caption_rotary)
        for layer in model.context_refiner:
            text = layer(text, caption_keep, rotary)
        unified = torch.cat([x, text], dim=1)
        rotary = torch.view_as_complex(torch.cat([token_rotary, caption_rotary], dim=1))
        keep = torch.cat([torch.ones_like(token_pads), caption_keep], dim=1)
        for layer in model.layers:
            unified = layer(unified, keep, rotary, adaln)
        out: torch.Tensor = model.all_final_layer[patch](unified, c=adaln)
        return (out,)


REWRITES: dict[str, type[CallRewrite]] = {
    "QwenImageTransformer2DModel": QwenImageCall,
    "ZImageTransformer2DModel": ZImageCall,
}
"""The rewrites by the denoiser's class; any other converts as it is called."""
