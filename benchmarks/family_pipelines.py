"""Random-weight pipelines of each served family at real size, built in memory on the device.

The configs are the published models' own (benchmarks/configs/<family>/, sources in
benchmarks/configs/README.md); `pipeline.json` names the pipeline class, a config file per
component, how to make its tokenizer, and the family's steps, size and call arguments. Timing
does not depend on weight values, so random weights stand in for the real ones where no hub
is reachable.

Why in memory, not saved and loaded: the real sizes run to 20 B parameters (Qwen-Image's
transformer) beside 8 B text encoders (T5-XXL, Qwen2.5-VL-7B); writing and re-reading 60 GB
would spend a lent GPU's 15 minutes before anything is measured. So every module is made
directly on the device in its dtype (`torch.device` and the default dtype set while it is
built), where initialising even 20 B parameters takes seconds; only weights left
uninitialised by their constructor (`torch.empty`, which may hold NaNs) are redrawn.

`tiny=True` lays small sizes over the same configs (`TINY`): the same builder, classes,
tokenizers and pipeline calls, at a size a CPU draws in a fraction of a second, so the CPU
rehearsal exercises what the device will run. `device="meta"` builds without memory:
`python benchmarks/family_pipelines.py` counts every family's parameters that way, a check
of the configs against the published sizes.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"

FAMILIES: tuple[str, ...] = (
    "sd-turbo", "sdxl-turbo", "flux1-schnell", "flux2-klein", "qwen-image", "z-image-turbo",
    "sana-sprint", "sd35-medium",
)
"""In the issue's order; `device_check.sh` runs them most important first."""

_CLIP_TINY = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
              "num_hidden_layers": 2, "projection_dim": 32}
_VAE_TINY = {"block_out_channels": [4, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4,
             "sample_size": 128, "mid_block_add_attention": False}
_QWEN3_TINY = {"hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2,
               "num_key_value_heads": 2, "head_dim": 8, "max_window_layers": 2}

TINY: dict[str, dict[str, dict[str, Any]]] = {
    "sd-turbo": {
        "unet": {"block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 16,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                 "attention_head_dim": [2, 4], "cross_attention_dim": 32},
        "text_encoder": _CLIP_TINY, "vae": _VAE_TINY,
    },
    "sdxl-turbo": {
        # Two CLIPs of 32 (cross attention 64); the added time embedding takes 6 numbers of 8
        # channels and text_encoder_2's 32-channel projection.
        "unet": {"block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 16,
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                 "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 1],
                 "cross_attention_dim": 64, "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 6 * 8 + 32},
        "text_encoder": _CLIP_TINY, "text_encoder_2": _CLIP_TINY, "vae": _VAE_TINY,
    },
    "flux1-schnell": {
        "transformer": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                        "num_attention_heads": 2, "joint_attention_dim": 32,
                        "pooled_projection_dim": 32, "axes_dims_rope": [4, 6, 6]},
        "text_encoder": _CLIP_TINY,
        "text_encoder_2": {"d_model": 32, "d_ff": 37, "d_kv": 8, "num_heads": 4,
                           "num_layers": 1, "num_decoder_layers": 1,
                           "relative_attention_num_buckets": 8},
        "vae": _VAE_TINY,
    },
    "flux2-klein": {
        # The pipeline stacks the Qwen3's hidden states 9, 18 and 27: 28 layers of 16.
        "transformer": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                        "num_attention_heads": 2, "joint_attention_dim": 3 * 16,
                        "axes_dims_rope": [4, 4, 4, 4]},
        "text_encoder": {**_QWEN3_TINY, "num_hidden_layers": 28},
        "vae": {**_VAE_TINY, "sample_size": 128},
    },
    "qwen-image": {
        "transformer": {"num_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
                        "joint_attention_dim": 16, "axes_dims_rope": [8, 4, 4]},
        "text_encoder": {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2,
                         "max_window_layers": 2, "num_attention_heads": 2,
                         "num_key_value_heads": 2,
                         "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default",
                                          "type": "default"},
                         "vision_config": {"depth": 2, "hidden_size": 16, "intermediate_size": 16,
                                           "num_heads": 2, "out_hidden_size": 16,
                                           "fullatt_block_indexes": [1]}},
        "vae": {"base_dim": 4, "num_res_blocks": 1},
    },
    "z-image-turbo": {
        "transformer": {"dim": 32, "n_layers": 1, "n_refiner_layers": 1, "n_heads": 2,
                        "n_kv_heads": 2, "cap_feat_dim": 16, "axes_dims": [8, 4, 4]},
        "text_encoder": {**_QWEN3_TINY, "num_hidden_layers": 2},
        "vae": {**_VAE_TINY, "sample_size": 128},
    },
    "sana-sprint": {
        # sample_size stays 32 (1024 px): SanaSprintPipeline bins sizes by it and knows no other.
        "transformer": {"num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 1,
                        "num_cross_attention_heads": 2, "cross_attention_head_dim": 8,
                        "cross_attention_dim": 16, "caption_channels": 16},
        "text_encoder": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
                         "query_pre_attn_scalar": 8},
        # The deepest blocks need the latent's 32 channels (shortcuts fold whole multiples).
        "vae": {"attention_head_dim": 8,
                "encoder_block_out_channels": [8, 8, 16, 16, 32, 32],
                "decoder_block_out_channels": [8, 8, 16, 16, 32, 32],
                "encoder_layers_per_block": [1] * 6, "decoder_layers_per_block": [1] * 6},
    },
    "sd35-medium": {
        # The two CLIPs' hidden states (32 + 32) are zero-padded up to T5's width (64); the
        # pooled projection takes both CLIPs' projections (32 + 32). One dual-attention
        # block and one plain one (the last, context-pre-only), as MMDiT-X has both kinds.
        "transformer": {"sample_size": 16, "num_layers": 2, "attention_head_dim": 8,
                        "num_attention_heads": 4, "joint_attention_dim": 64,
                        "caption_projection_dim": 32, "pooled_projection_dim": 64,
                        "pos_embed_max_size": 32, "dual_attention_layers": [0]},
        "text_encoder": _CLIP_TINY, "text_encoder_2": _CLIP_TINY,
        "text_encoder_3": {"d_model": 64, "d_ff": 37, "d_kv": 16, "num_heads": 4,
                           "num_layers": 1, "num_decoder_layers": 1,
                           "relative_attention_num_buckets": 8},
        "vae": _VAE_TINY,
    },
}
TINY_SIZE = {"sana-sprint": 1024}
"""The tiny pipelines' draw size where it is not 128 (Sana bins sizes by its sample size)."""


@dataclass(frozen=True)
class FamilySpec:
    """One family's `pipeline.json`: the class, its components, and how the model is drawn."""

    name: str
    pipeline: str
    components: Mapping[str, Any]
    steps: int
    size: int
    call: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of every plain call (guidance as the model card has it)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments of the pipeline that are not components."""

    @classmethod
    def load(cls, name: str) -> FamilySpec:
        data: dict[str, Any] = json.loads((CONFIGS / name / "pipeline.json").read_text())
        return cls(name=name, pipeline=data["_class_name"],
                   components={k: v for k, v in data.items() if not k.startswith("_")},
                   steps=int(data["_steps"]), size=int(data["_size"]),
                   call=data.get("_call", {}), extra=data.get("_extra", {}))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def component_config(family: str, component: str, tiny: bool = False,
                     over: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A component's config as the published file has it, with `TINY`'s sizes if asked and
    `over`'s values (a depth cut, `families_cpu.py`) on top."""
    entry = FamilySpec.load(family).components[component]
    file = entry if isinstance(entry, str) else entry["config"]
    config: dict[str, Any] = json.loads((CONFIGS / family / file).read_text())
    if tiny:
        config = _merge(config, TINY.get(family, {}).get(component, {}))
    if over:
        config = _merge(config, over)
    return config


@contextmanager
def building_on(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New tensors go to `device` in `dtype` while the block runs: modules are made where
    they will run, in the precision they run in, with no copy and no float32 detour."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _diffusers_model(config: dict[str, Any]) -> Any:
    import diffusers

    cls = getattr(diffusers, config["_class_name"])
    values = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls.from_config(values)


def _transformers_model(config: dict[str, Any], class_name: str | None) -> Any:
    import transformers

    values = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    made = transformers.AutoConfig.for_model(config["model_type"], **values)
    cls = getattr(transformers, class_name or config["architectures"][0])
    return cls(made).eval()


def _tokenizer(kind: str, entry: Mapping[str, Any], scratch: Path) -> Any:
    """Tokenizers made on the spot as `limner.testing.families` makes them: the family's own
    class over a vocabulary of characters or bytes (what a tokenizer costs is the same)."""
    from limner.testing import families
    from limner.testing.tiny_pipeline import clip_tokenizer

    if kind == "clip":
        return clip_tokenizer(scratch / f"clip-{len(list(scratch.iterdir()))}")
    if kind == "t5":
        return families._t5_tokenizer()
    if kind == "qwen":
        return families._qwen_tokenizer(max_length=int(entry.get("max_length", 32768)))
    if kind == "gemma":
        return families._gemma_tokenizer()
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def _redraw_uninitialised(module: torch.nn.Module) -> None:
    """Parameters a constructor left as `torch.empty` (Z-Image's pad tokens) may hold NaNs
    or huge values; everything else keeps its constructor's initialisation."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.is_floating_point() and parameter.device.type != "meta" \
                    and not torch.isfinite(parameter).all():
                parameter.normal_(0.0, 0.02)


def build_components(family: str, device: str, dtype: torch.dtype = torch.bfloat16,
                     tiny: bool = False, only: set[str] | None = None,
                     overrides: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """Every component of `family` (models on `device` in `dtype`, tokenizers, scheduler);
    `only` limits it to the named model components (rebuilding one, as torchao needs);
    `overrides` puts values over a component's config, by component name."""
    import diffusers

    spec = FamilySpec.load(family)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="limner-tok-") as tmp:
        scratch = Path(tmp)
        for name, entry in spec.components.items():
            if only is not None and name not in only:
                continue
            if entry is None:
                out[name] = None
                continue
            if isinstance(entry, Mapping) and "tokenizer" in entry:
                out[name] = _tokenizer(entry["tokenizer"], entry, scratch)
                continue
            config = component_config(family, name, tiny, (overrides or {}).get(name))
            if name == "scheduler":
                out[name] = getattr(diffusers, config["_class_name"]).from_config(
                    {k: v for k, v in config.items() if not k.startswith("_")})
                continue
            class_name = entry.get("class") if isinstance(entry, Mapping) else None
            torch.manual_seed(0)
            with building_on(device, dtype):
                model = _diffusers_model(config) if "_class_name" in config \
                    else _transformers_model(config, class_name)
            model.requires_grad_(False)
            _redraw_uninitialised(model)
            out[name] = model
    return out


def make_pipeline(family: str, components: Mapping[str, Any]) -> Any:
    """A pipeline object over `components` (shared, not copied: each measurement gets a fresh
    object, so what one wraps or replaces on its pipeline does not leak into the next)."""
    import diffusers

    spec = FamilySpec.load(family)
    pipe = getattr(diffusers, spec.pipeline)(**components, **spec.extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(components: Mapping[str, Any]) -> dict[str, int]:
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in components.items() if isinstance(module, torch.nn.Module)}


def main() -> int:
    """Counts each family's parameters at real size on the meta device (no memory): the
    configs' check against the published sizes."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    for family in args.families.split(","):
        components = build_components(family, "meta", torch.bfloat16, tiny=args.tiny)
        counts = parameter_counts(components)
        total = sum(counts.values())
        print(f"{family}: " + ", ".join(f"{k} {v / 1e9:.3f} B" for k, v in counts.items())
              + f"; total {total / 1e9:.2f} B = {total * 2 / 2 ** 30:.1f} GiB in bf16", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
