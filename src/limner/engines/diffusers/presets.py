"""Well-known diffusers models and how to run each: native size, steps, guidance, decoder.

`limner serve --model sd-turbo` looks the name up here; `limner models pull sd-turbo` fetches
the weights (and the tiny decoder) once, with `huggingface_hub`, into the data folder, after
which serving needs no network. The values are the models' published settings (the model
card, else the diffusers pipeline's own defaults and docs); a comment names the source where
it is not the card's own example.

Steps: `high` is the published step count (the top of a published range); `low` and
`medium` are shorter rungs, published ones where the card or diffusers gives a range or a
second figure, else limner's own (about a half and three quarters of `high`), marked
"limner" beside them.

Memory (estimates from parameter counts, not measurements): `params_b` sums the published
parameter counts of the pipeline's components (`components`, billions; counted from the
repos' configs, embeddings shared between input and output counted once) plus the tiny
decoder. Weights in bf16 take 2 bytes a parameter (GB = 10^9 bytes):

- `memory_cpu_gb` = weights x 1.2 + 2 GB, rounded up: the weights resident in RAM, 20 % for
  activations and the allocator's slack, 2 GB for the Python/torch runtime and a full-VAE
  decode at the native size.
- `memory_gpu_gb` = weights x 1.1 + 1.5 GB, rounded up: everything on the GPU in bf16 with no
  offload, 10 % for activations, 1.5 GB for the CUDA context and the VAE decode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("sd15", "sd2", "sdxl", "sd3", "flux", "flux-kontext", "flux2", "flux2-klein",
            "qwen-image", "qwen-image-edit", "qwen-image-edit-plus", "z-image", "sana",
            "pixart-sigma", "lcm")
"""The model families a preset may name."""

CPU_SHARE, CPU_FIXED_GB = 0.2, 2.0
GPU_SHARE, GPU_FIXED_GB = 0.1, 1.5
BF16_BYTES = 2


def memory_gb(params_b: float, share: float, fixed_gb: float) -> float:
    """bf16 weights of `params_b` billion parameters, plus `share` of them and `fixed_gb`,
    rounded up to a whole GB."""
    weights = params_b * BF16_BYTES
    return float(math.ceil(weights * (1 + share) + fixed_gb))


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    repo: str
    family: str
    """One of `FAMILIES`: the architecture, for the listing (the engine finds its own
    adapter from the pipeline class)."""
    native_size: int
    steps: Mapping[str, int]
    guidance: float
    """What the engine sends as the model's guidance: `guidance_scale`, except for the
    Qwen-Image family, whose adapter sends it as `true_cfg_scale`."""
    components: Mapping[str, float]
    """Billions of parameters per component (transformer or UNet, text encoders, VAE, ...)."""
    tiny_decoder: str | None = None
    """A tiny autoencoder (TAESD family, loadable by diffusers' `AutoencoderTiny`) used for
    partial images and, for one-step models, as the default decoder; the full VAE stays
    available with `decoder = "full"`."""
    default_decoder: str = "full"
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    """Scheduler class and config overrides, e.g. {"class": "EulerAncestralDiscreteScheduler",
    "timestep_spacing": "trailing"}; empty keeps the repo's own scheduler config."""
    true_cfg: float | None = None
    """The published `true_cfg_scale`, for models whose negative prompt works through it
    (descriptive: the engine's family adapter decides what it sends)."""
    licence: str = ""
    params_b: float = field(init=False)
    """Billions of parameters of the whole pipeline (the sum of `components`)."""
    memory_cpu_gb: float = field(init=False)
    """GB of RAM to run it on the CPU in bf16 (see the module's docstring)."""
    memory_gpu_gb: float = field(init=False)
    """GB of GPU memory to run it on CUDA in bf16 with no offload."""

    def __post_init__(self) -> None:
        params = sum(self.components.values())
        object.__setattr__(self, "params_b", round(params, 2))
        object.__setattr__(self, "memory_cpu_gb", memory_gb(params, CPU_SHARE, CPU_FIXED_GB))
        object.__setattr__(self, "memory_gpu_gb", memory_gb(params, GPU_SHARE, GPU_FIXED_GB))

    def engine_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"steps": dict(self.steps), "guidance": self.guidance,
                                   "native_size": self.native_size,
                                   "decoder": self.default_decoder}
        if self.scheduler:
            options["scheduler"] = dict(self.scheduler)
        return options


# Parameter counts (billions) of components several presets share, counted from the repos'
# published configs (the diffusers/transformers classes built empty and their parameters
# summed); they match the published totals (FLUX.1 12B, Qwen-Image 20B, SD3.5 2.5B/8.1B...).
CLIP_L = 0.123  # CLIP ViT-L/14 text encoder (SD 1.x, SDXL, FLUX.1)
CLIP_L_PROJ = 0.124  # the same with its projection (SD3's first text encoder)
OPENCLIP_H = 0.340  # OpenCLIP ViT-H/14 text encoder as SD 2.x runs it (23 layers)
OPENCLIP_G = 0.695  # OpenCLIP ViT-bigG/14 text encoder with projection (SDXL, SD3)
T5_XXL = 4.762  # T5 v1.1 XXL encoder (FLUX.1, SD3)
QWEN3_4B = 4.022  # Qwen3-4B, tied embeddings (FLUX.2 klein 4B, Z-Image)
QWEN3_8B = 8.191  # Qwen3-8B (FLUX.2 klein 9B)
MISTRAL_24B = 24.011  # Mistral-Small-3.2-24B with its vision tower (FLUX.2 dev)
QWEN25_VL_7B = 8.292  # Qwen2.5-VL-7B with its vision tower (Qwen-Image)
GEMMA2_2B = 2.614  # Gemma-2-2B-it, no LM head (Sana)
SD_VAE = 0.084  # AutoencoderKL, 4 latent channels (SD 1.x/2.x, SDXL): 83.7M
FLUX_VAE = 0.084  # AutoencoderKL, 16 latent channels (FLUX.1, SD3, Z-Image): 83.8M
FLUX2_VAE = 0.084  # AutoencoderKLFlux2, 32 latent channels
QWEN_VAE = 0.127  # AutoencoderKLQwenImage (a Wan-2.1-style 3-D VAE)
DC_AE = 0.312  # AutoencoderDC f32c32 (Sana)
TAESD = 0.0024  # a TAESD-family tiny autoencoder, encoder and decoder
SAFETY_CHECKER = 0.304  # StableDiffusionSafetyChecker (CLIP ViT-L/14 vision), where shipped

PRESETS: dict[str, Preset] = {p.name: p for p in (
    # SD-Turbo (SD 2.1 distilled): 1 step (card), up to 4.
    Preset(name="sd-turbo", repo="stabilityai/sd-turbo", family="sd2", native_size=512,
           steps={"low": 1, "medium": 2, "high": 4}, guidance=0.0,
           components={"unet": 0.866, "text_encoder": OPENCLIP_H, "vae": SD_VAE,
                       "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesd", default_decoder="tiny",
           scheduler={"class": "EulerAncestralDiscreteScheduler",
                      "timestep_spacing": "trailing"},
           licence="SAI NC Community"),  # Stability AI Non-Commercial Research Community
    # SDXS-512-0.9: one step; a pruned UNet (0.32B, the SDXS paper) and its own tiny VAE.
    Preset(name="sdxs-512", repo="IDKiro/sdxs-512-0.9", family="sd2", native_size=512,
           steps={"low": 1, "medium": 1, "high": 1}, guidance=0.0,
           components={"unet": 0.32, "text_encoder": OPENCLIP_H, "vae": TAESD,
                       "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesd", default_decoder="full",
           licence="OpenRAIL++"),
    Preset(name="sdxl-turbo", repo="stabilityai/sdxl-turbo", family="sdxl", native_size=512,
           steps={"low": 1, "medium": 2, "high": 4}, guidance=0.0,
           components={"unet": 2.567, "text_encoder": CLIP_L, "text_encoder_2": OPENCLIP_G,
                       "vae": SD_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesdxl", default_decoder="tiny",
           scheduler={"class": "EulerAncestralDiscreteScheduler",
                      "timestep_spacing": "trailing"},
           licence="SAI NC Community"),
    # LCM-Dreamshaper-v7: 1-8 steps, 4 recommended, guidance 8.0 (card). The repo's tag is
    # MIT; the DreamShaper v7 it distils is CreativeML OpenRAIL-M.
    Preset(name="sd15-lcm", repo="SimianLuo/LCM_Dreamshaper_v7", family="lcm",
           native_size=512, steps={"low": 4, "medium": 6, "high": 8}, guidance=8.0,
           components={"unet": 0.860, "text_encoder": CLIP_L, "vae": SD_VAE,
                       "safety_checker": SAFETY_CHECKER, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesd", scheduler={"class": "LCMScheduler"},
           licence="MIT / OpenRAIL-M"),
    # FLUX.1 [schnell]: 4 steps, guidance 0 (card, diffusers docs), 1-4 work.
    Preset(name="flux-schnell", repo="black-forest-labs/FLUX.1-schnell", family="flux",
           native_size=1024, steps={"low": 1, "medium": 2, "high": 4}, guidance=0.0,
           components={"transformer": 11.891, "text_encoder": CLIP_L, "text_encoder_2": T5_XXL,
                       "vae": FLUX_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taef1", licence="Apache-2.0"),
    # FLUX.1 [dev]: 50 steps, guidance 3.5 (card); 28 is FluxPipeline's default; low: limner.
    Preset(name="flux-dev", repo="black-forest-labs/FLUX.1-dev", family="flux",
           native_size=1024, steps={"low": 20, "medium": 28, "high": 50}, guidance=3.5,
           components={"transformer": 11.901, "text_encoder": CLIP_L, "text_encoder_2": T5_XXL,
                       "vae": FLUX_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taef1",
           licence="FLUX.1-dev NC"),  # FLUX.1 [dev] Non-Commercial License
    # FLUX.1 Kontext [dev]: guidance 2.5 (card); the card keeps FluxKontextPipeline's 28
    # steps; low and medium: limner.
    Preset(name="flux-kontext-dev", repo="black-forest-labs/FLUX.1-Kontext-dev",
           family="flux-kontext", native_size=1024,
           steps={"low": 14, "medium": 20, "high": 28}, guidance=2.5,
           components={"transformer": 11.901, "text_encoder": CLIP_L, "text_encoder_2": T5_XXL,
                       "vae": FLUX_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taef1", licence="FLUX.1-dev NC"),
    # FLUX.2 [klein] 4B and 9B (distilled): 4 steps, guidance 1.0 (cards); low/medium:
    # limner. Transformers 5+20 and 8+24 blocks (diffusers' conversion script). No tiny
    # decoder: madebyollin/taef2 exists but is not loadable by AutoencoderTiny (its card
    # gives wrapper code), and the engine loads tiny decoders with AutoencoderTiny.
    Preset(name="flux2-klein-4b", repo="black-forest-labs/FLUX.2-klein-4B",
           family="flux2-klein", native_size=1024,
           steps={"low": 2, "medium": 3, "high": 4}, guidance=1.0,
           components={"transformer": 3.876, "text_encoder": QWEN3_4B, "vae": FLUX2_VAE},
           licence="Apache-2.0"),
    Preset(name="flux2-klein-9b", repo="black-forest-labs/FLUX.2-klein-9B",
           family="flux2-klein", native_size=1024,
           steps={"low": 2, "medium": 3, "high": 4}, guidance=1.0,
           components={"transformer": 9.079, "text_encoder": QWEN3_8B, "vae": FLUX2_VAE},
           licence="FLUX NC"),  # FLUX Non-Commercial License
    # FLUX.2 [dev]: 50 steps, "28 steps can be a good trade-off", guidance 4 (card); low:
    # limner. 32B transformer, Mistral-Small-3.2-24B text encoder.
    Preset(name="flux2-dev", repo="black-forest-labs/FLUX.2-dev", family="flux2",
           native_size=1024, steps={"low": 20, "medium": 28, "high": 50}, guidance=4.0,
           components={"transformer": 32.223, "text_encoder": MISTRAL_24B, "vae": FLUX2_VAE},
           licence="FLUX NC"),
    # Qwen-Image: 50 steps, true_cfg_scale 4.0 with negative prompt " ", 1:1 at 1328x1328
    # (card); low and medium: limner (as the engine's qwen-image family). `guidance` is
    # the true CFG scale: the family adapter sends it as `true_cfg_scale`. No tiny decoder
    # for its 3-D VAE that AutoencoderTiny loads could be verified.
    Preset(name="qwen-image", repo="Qwen/Qwen-Image", family="qwen-image", native_size=1328,
           steps={"low": 20, "medium": 30, "high": 50}, guidance=4.0, true_cfg=4.0,
           components={"transformer": 20.430, "text_encoder": QWEN25_VL_7B, "vae": QWEN_VAE},
           licence="Apache-2.0"),
    # Qwen-Image-Edit-2511 (Dec 2025, after 2509; QwenImageEditPlusPipeline): 40 steps,
    # true_cfg_scale 4.0, guidance_scale 1.0, negative prompt " " (card); it draws at
    # about 1024x1024 (the pipeline's target area); low and medium: limner.
    Preset(name="qwen-image-edit", repo="Qwen/Qwen-Image-Edit-2511",
           family="qwen-image-edit-plus", native_size=1024,
           steps={"low": 20, "medium": 30, "high": 40}, guidance=4.0, true_cfg=4.0,
           components={"transformer": 20.430, "text_encoder": QWEN25_VL_7B, "vae": QWEN_VAE},
           licence="Apache-2.0"),
    # Z-Image-Turbo: 8 NFEs, guidance 0 (card). The card's num_inference_steps=9 gave 8
    # transformer passes in older diffusers; the installed one runs 8 for 8 (its docstring
    # example says 8). Scheduler: the repo's FlowMatchEuler, shift 3.0. It shares FLUX.1's
    # VAE latent space, so TAEF1 decodes it.
    Preset(name="z-image-turbo", repo="Tongyi-MAI/Z-Image-Turbo", family="z-image",
           native_size=1024, steps={"low": 4, "medium": 6, "high": 8}, guidance=0.0,
           components={"transformer": 6.155, "text_encoder": QWEN3_4B, "vae": FLUX_VAE,
                       "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taef1", licence="Apache-2.0"),
    # SD 3.5 Medium: 40 steps, guidance 4.5 (card); 28 is StableDiffusion3Pipeline's
    # default; low: limner. The 2.5B MMDiT-X counts its 0.23B position table (a buffer).
    Preset(name="sd35-medium", repo="stabilityai/stable-diffusion-3.5-medium", family="sd3",
           native_size=1024, steps={"low": 20, "medium": 28, "high": 40}, guidance=4.5,
           components={"transformer": 2.470, "text_encoder": CLIP_L_PROJ,
                       "text_encoder_2": OPENCLIP_G, "text_encoder_3": T5_XXL,
                       "vae": FLUX_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesd3",
           licence="SAI Community"),  # Stability AI Community License
    # SD 3.5 Large Turbo (ADD-distilled): 4 steps, guidance 0 (card); low/medium: limner.
    # The 8.1B MMDiT counts its 0.09B position table.
    Preset(name="sd35-large-turbo", repo="stabilityai/stable-diffusion-3.5-large-turbo",
           family="sd3", native_size=1024, steps={"low": 2, "medium": 3, "high": 4},
           guidance=0.0,
           components={"transformer": 8.146, "text_encoder": CLIP_L_PROJ,
                       "text_encoder_2": OPENCLIP_G, "text_encoder_3": T5_XXL,
                       "vae": FLUX_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesd3", licence="SAI Community"),
    # SANA-Sprint 1.6B (the one diffusers' and NVlabs' docs use; a 0.6B exists): 1-4 steps,
    # 2 by default, guidance 4.5 embedded in the transformer (SanaSprintPipeline's defaults
    # and its docs). TAESANA ships only as a .pth in madebyollin's GitHub repository.
    # Licence: NVIDIA NSCL v2-custom (the card), Gemma Terms of Use for the text encoder.
    Preset(name="sana-sprint", repo="Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers",
           family="sana", native_size=1024, steps={"low": 1, "medium": 2, "high": 4},
           guidance=4.5,
           components={"transformer": 1.610, "text_encoder": GEMMA2_2B, "vae": DC_AE},
           licence="NVIDIA NSCL v2"),
    # SDXL 1.0 base: the card runs the pipeline's defaults, 50 steps and guidance 5.0;
    # low and medium: limner.
    Preset(name="sdxl-base", repo="stabilityai/stable-diffusion-xl-base-1.0", family="sdxl",
           native_size=1024, steps={"low": 20, "medium": 30, "high": 50}, guidance=5.0,
           components={"unet": 2.567, "text_encoder": CLIP_L, "text_encoder_2": OPENCLIP_G,
                       "vae": SD_VAE, "tiny_decoder": TAESD},
           tiny_decoder="madebyollin/taesdxl",
           licence="OpenRAIL++-M"),  # CreativeML Open RAIL++-M
)}


def model_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "models" / name


def resolve_model(spec: str, data_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """`--model` value -> (engine name, path or hub id, engine options).

    A preset name uses its pulled copy when there is one (else its hub id); anything else is
    a local folder or a hub id with the engine's defaults.
    """
    preset = PRESETS.get(spec)
    if preset is None:
        name = Path(spec.rstrip("/")).name or "diffusers"
        return name, spec, {}
    local = model_dir(data_dir, preset.name)
    options = preset.engine_options()
    source = str(local) if (local / "model_index.json").is_file() else preset.repo
    if preset.tiny_decoder:
        tiny = local / "tiny_decoder"
        options["tiny_decoder"] = str(tiny) if (tiny / "config.json").is_file() \
            else preset.tiny_decoder
    return preset.name, source, options


def pull(preset: Preset, data_dir: Path, source: Path | None = None) -> Path:
    """Fetch a preset's weights into `DATA_DIR/models/NAME` (with `tiny_decoder/` inside).

    `source` copies from a local folder laid out the same way instead of downloading: for
    machines with no hub access, and for tests.
    """
    import shutil

    target = model_dir(data_dir, preset.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target
    from huggingface_hub import snapshot_download

    snapshot_download(preset.repo, local_dir=target,
                      allow_patterns=["*.json", "*.txt", "*.model", "*.jinja",
                                      # the components' weights, not the single-file
                                      # checkpoint some repos also keep at their root
                                      "*/*.safetensors"],
                      ignore_patterns=["*.fp32.*", "*/diffusion_pytorch_model.bin"])
    if preset.tiny_decoder:
        snapshot_download(preset.tiny_decoder, local_dir=target / "tiny_decoder",
                          allow_patterns=["*.json", "*.safetensors"])
    return target
