"""What a LoRA is made for, and what a saved pipeline is, read without torch or diffusers.

The server lists which of its LoRAs each model can take without loading either: `describe`
reads a LoRA's safetensors header only (names and shapes), `model_shape` a saved pipeline's
`model_index.json` and its denoiser's `config.json`, and `fits` compares the two. The check
is a plausibility one (a LoRA it passes may still miss a layer, which the engine finds when
it loads one); what it refuses cannot load: a UNet's LoRA on a transformer, or an SD 1.x
LoRA on SDXL, whose cross-attention widths differ.

Three layouts are read: diffusers' (`save_lora_weights`: keys under `unet.`,
`transformer.`, `text_encoder.`), kohya's (`lora_unet_`, `lora_te1_`), and PEFT's
(`adapter_model.safetensors` beside `adapter_config.json`, keys under `base_model.model.`).
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Target = Literal["unet", "transformer"]
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_FILE = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
HEADER_LIMIT = 100 * 1024 * 1024
"""A safetensors header above this is not one (the first 8 bytes of some other file)."""
CONTEXT_NAMES = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x",
                 2048: "Stable Diffusion XL"}
"""The cross-attention width of a UNet family's text features: what tells their LoRAs apart."""

_UNET_BLOCKS = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks",
                "middle_block", "conv_in", "time_embedding")
_TRANSFORMER_BLOCKS = ("transformer_blocks", "single_transformer_blocks", "double_blocks",
                       "single_blocks", "joint_blocks", "layers", "noise_refiner",
                       "context_refiner", "blocks", "context_embedder", "x_embedder",
                       "proj_out", "norm_out", "time_text_embed", "caption_projection")
_ENCODERS = {"text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2",
             "text_encoder_3": "text_encoder_3"}
_KOHYA_ENCODERS = {"lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": "text_encoder_2", "lora_te3_": "text_encoder_3"}
_KOHYA_TRANSFORMER = ("double_blocks", "single_blocks", "joint_blocks")
"""kohya names FLUX.1's and SD3's blocks under `lora_unet_` too: these say a transformer."""
_LORA_WEIGHT = re.compile(r"(lora_[AB]|lora_down|lora_up|lora[._](down|up)|lokr_|hada_)")
_DOWN = re.compile(r"(lora_A|lora_down|lora[._]down)(\.[A-Za-z0-9_]+)?\.weight$")
_CROSS_KEY = re.compile(r"attn2[._](processor[._])?to_k")
_PROJECTION = re.compile(r"(^|[._])(to_[qkv]|qkv)([._]|$)")


@dataclass(frozen=True)
class AdapterShape:
    """What a LoRA is for (`describe`), or what a pipeline offers one (`model_shape`)."""

    target: Target | None
    """The denoiser a LoRA changes or a model has; None: a LoRA of text encoders only (or a
    model with neither)."""
    context_dim: int | None = None
    """A UNet's cross-attention width (its text features): 768 SD 1.x, 1024 SD 2.x, 2048
    SDXL; None where unknown."""
    width: int | None = None
    """A transformer's hidden width (its attention projections' in-features)."""
    text_encoders: tuple[str, ...] = ()
    """The text encoders a LoRA changes, or a model has."""
    layout: str = ""
    """`diffusers`, `kohya` or `peft` for a LoRA; `pipeline` for a model."""
    pipeline: str | None = None
    """A model's pipeline class (`model_index.json`'s `_class_name`)."""

    def label(self) -> str:
        """A few words a person knows the kind by: 'a Stable Diffusion XL UNet'."""
        if self.target is None:
            return f"text encoders only ({', '.join(self.text_encoders) or 'none'})"
        if self.target == "unet":
            name = CONTEXT_NAMES.get(self.context_dim or 0)
            if self.context_dim is None:
                return "a UNet"
            return f"a {name + ' ' if name else ''}UNet ({self.context_dim}-wide text features)"
        return f"a transformer{f' {self.width} wide' if self.width else ''}"


def lora_file(path: str | Path) -> tuple[Path, Path | None]:
    """(the LoRA's safetensors file, the PEFT config beside it or None) for a `.safetensors`
    file or a folder from `save_lora_weights` or PEFT. `FileNotFoundError` where nothing is
    there; `ValueError` where what is there is no safetensors LoRA (a pickle is never read:
    unpickling runs code)."""
    where = Path(path)
    if where.is_file():
        if where.suffix != ".safetensors":
            raise ValueError(f"{where.name} is not a .safetensors file (only those are read)")
        return where, None
    if not where.is_dir():
        raise FileNotFoundError(f"no LoRA file or folder at {where}")
    if (where / DIFFUSERS_FILE).is_file():
        return where / DIFFUSERS_FILE, None
    if (where / PEFT_FILE).is_file():
        config = where / PEFT_CONFIG
        return where / PEFT_FILE, config if config.is_file() else None
    files = sorted(where.glob("*.safetensors"))
    if len(files) == 1:
        return files[0], None
    raise ValueError(f"{where} holds no {DIFFUSERS_FILE} or {PEFT_FILE}"
                     + (f", and {len(files)} other .safetensors files" if files else ""))


def fingerprint(path: str | Path) -> tuple[str, int, int]:
    """(the LoRA's weight file, its size, its mtime in ns): a file replaced under the same
    path is read and judged again (`lora_file`'s errors where there is none)."""
    file, _ = lora_file(path)
    stat = file.stat()
    return str(file.resolve()), stat.st_size, stat.st_mtime_ns


def header(file: Path) -> dict[str, Any]:
    """A safetensors file's header: tensor name -> {dtype, shape, offsets}, plus
    `__metadata__`; `ValueError` where the file is not safetensors."""
    with file.open("rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise ValueError(f"{file.name} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", start)
        if size > HEADER_LIMIT:
            raise ValueError(f"{file.name} is not a safetensors file")
        try:
            doc = json.loads(handle.read(size))
        except ValueError as exc:
            raise ValueError(f"{file.name} is not a safetensors file ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{file.name} is not a safetensors file")
    return doc


def describe(path: str | Path) -> AdapterShape:
    """What the LoRA at `path` (`lora_file`'s kinds) is for, from its header's names and
    shapes. `ValueError` where it holds no LoRA weights."""
    file, config = lora_file(path)
    shapes = {name: tuple(int(d) for d in entry.get("shape", ()))
              for name, entry in header(file).items()
              if name != "__metadata__" and isinstance(entry, dict)}
    shape = shape_of_keys(shapes, peft=config is not None or file.name == PEFT_FILE)
    if shape is None:
        raise ValueError(f"{file.name} holds no LoRA weights (no lora_A/lora_down tensors)")
    return shape


def shape_of_keys(shapes: Mapping[str, tuple[int, ...]], peft: bool = False
                  ) -> AdapterShape | None:
    """A LoRA's shape from its tensors' names and shapes; None where none is a LoRA's."""
    parts: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    modules: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, dims in shapes.items():
        if not _LORA_WEIGHT.search(name):
            continue
        part, module, layout = _split(name, peft)
        if part is None:
            continue
        parts[part] += 1
        layouts[layout] += 1
        modules.setdefault(part, []).append((module, dims))
    if not parts:
        return None
    target: Target | None = None
    if parts["unet"] or parts["transformer"]:  # the one most of its weights are for
        target = "unet" if parts["unet"] >= parts["transformer"] else "transformer"
    keys = modules.get(target or "", [])
    context = _most_common(dims[1] for module, dims in keys
                           if _CROSS_KEY.search(module) and _DOWN.search(module)
                           and len(dims) == 2) if target == "unet" else None
    width = _most_common(dims[1] for module, dims in keys
                         if _PROJECTION.search(module) and _DOWN.search(module)
                         and len(dims) == 2) if target == "transformer" else None
    encoders = tuple(sorted(p for p in parts if p.startswith("text_encoder")))
    return AdapterShape(target=target, context_dim=context, width=width,
                        text_encoders=encoders, layout=layouts.most_common(1)[0][0])


def _split(name: str, peft: bool) -> tuple[str | None, str, str]:
    """(the part a key belongs to, the rest of its name, its layout)."""
    if name.startswith("lora_"):
        for prefix, encoder in _KOHYA_ENCODERS.items():
            if name.startswith(prefix):
                return encoder, name[len(prefix):], "kohya"
        if name.startswith("lora_unet_"):
            rest = name[len("lora_unet_"):]
            part = "transformer" if rest.startswith(_KOHYA_TRANSFORMER) else "unet"
            return part, rest, "kohya"
        if name.startswith("lora_transformer_"):
            return "transformer", name[len("lora_transformer_"):], "kohya"
    first, _, rest = name.partition(".")
    if first in ("unet", "transformer"):
        return first, rest, "diffusers"
    if first in _ENCODERS:
        return _ENCODERS[first], rest, "diffusers"
    layout = "peft" if peft else "diffusers"
    for prefix in ("base_model.model.", "diffusion_model.", "model.diffusion_model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("text_model."):
        return "text_encoder", name, layout
    head = name.split(".", 1)[0]
    if head in _UNET_BLOCKS:
        return "unet", name, layout
    if head in _TRANSFORMER_BLOCKS:
        return "transformer", name, layout
    return None, name, layout


def _most_common(values: Iterable[int]) -> int | None:
    counted = Counter(values).most_common(1)
    return counted[0][0] if counted else None


def model_shape(folder: str | Path) -> AdapterShape:
    """What a saved pipeline folder offers a LoRA, from `model_index.json` and its UNet's or
    transformer's `config.json`. `FileNotFoundError` where it is no pipeline folder."""
    where = Path(folder)
    index = json.loads((where / "model_index.json").read_text())
    components: dict[str, Mapping[str, Any] | None] = {}
    for name in ("unet", "transformer"):
        if _present(index.get(name)):
            config = where / name / "config.json"
            components[name] = json.loads(config.read_text()) if config.is_file() else {}
    encoders = [name for name in index if name.startswith("text_encoder")
                and _present(index[name])]
    return shape_of_model(index.get("_class_name"), components, encoders)


def _present(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def shape_of_model(pipeline: str | None, denoisers: Mapping[str, Mapping[str, Any] | None],
                   text_encoders: Iterable[str]) -> AdapterShape:
    """A model's shape from its pipeline class, its denoiser's config (`unet` or
    `transformer` -> config) and its text encoders' names; the engine calls it with a loaded
    pipeline's configs."""
    encoders = tuple(sorted(text_encoders))
    unet = denoisers.get("unet")
    if "unet" in denoisers:
        cross = (unet or {}).get("cross_attention_dim")
        if isinstance(cross, list | tuple):
            cross = cross[0] if cross else None
        return AdapterShape(target="unet", context_dim=cross if isinstance(cross, int) else None,
                            text_encoders=encoders, layout="pipeline", pipeline=pipeline)
    if "transformer" in denoisers:
        return AdapterShape(target="transformer", width=_width(denoisers["transformer"] or {}),
                            text_encoders=encoders, layout="pipeline", pipeline=pipeline)
    return AdapterShape(target=None, text_encoders=encoders, layout="pipeline",
                        pipeline=pipeline)


def _width(config: Mapping[str, Any]) -> int | None:
    """A transformer's hidden width: heads times head width (FLUX, SD3, Qwen-Image, Sana,
    PixArt), or `dim` (Z-Image)."""
    heads, head = config.get("num_attention_heads"), config.get("attention_head_dim")
    if isinstance(heads, int) and isinstance(head, int):
        return heads * head
    for key in ("inner_dim", "dim", "hidden_size"):
        value = config.get(key)
        if isinstance(value, int):
            return value
    return None


def fits(adapter: AdapterShape, model: AdapterShape) -> str | None:
    """None where the LoRA plausibly fits the model; else why it does not, in a phrase."""
    if adapter.target is not None and model.target is None:
        return f"it is a LoRA for {adapter.label()}, and the model has no UNet or transformer"
    if adapter.target is not None and adapter.target != model.target:
        return f"it is a LoRA for {adapter.label()}, and the model has {model.label()}"
    if adapter.target == "unet" and None not in (adapter.context_dim, model.context_dim) \
            and adapter.context_dim != model.context_dim:
        return f"it is a LoRA for {adapter.label()}, and the model is {model.label()}"
    if adapter.target == "transformer" and None not in (adapter.width, model.width) \
            and adapter.width != model.width:
        return (f"its attention layers take {adapter.width} features, and the model's "
                f"{model.width}")
    missing = [name for name in adapter.text_encoders if name not in model.text_encoders]
    if missing:
        return f"it changes {', '.join(missing)}, which the model does not have"
    return None
