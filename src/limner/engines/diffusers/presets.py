"""Well-known diffusers models and how to run each: native size, steps, guidance, decoder.

`limner serve --model sd-turbo` looks the name up here; `limner models pull sd-turbo` fetches
the weights (and the tiny decoder) once, with `huggingface_hub`, into the data folder, after
which serving needs no network. The values are the models' published settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    repo: str
    native_size: int
    steps: Mapping[str, int]
    guidance: float
    tiny_decoder: str | None = None
    """A tiny autoencoder (TAESD family) used for partial images and, for one-step models,
    as the default decoder; the full VAE stays available with `decoder = "full"`."""
    default_decoder: str = "full"
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    """Scheduler class and config overrides, e.g. {"class": "EulerAncestralDiscreteScheduler",
    "timestep_spacing": "trailing"}."""
    licence: str = ""

    def engine_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"steps": dict(self.steps), "guidance": self.guidance,
                                   "native_size": self.native_size,
                                   "decoder": self.default_decoder}
        if self.scheduler:
            options["scheduler"] = dict(self.scheduler)
        return options


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("sd-turbo", "stabilityai/sd-turbo", 512, {"low": 1, "medium": 2, "high": 4}, 0.0,
           tiny_decoder="madebyollin/taesd", default_decoder="tiny",
           scheduler={"class": "EulerAncestralDiscreteScheduler",
                      "timestep_spacing": "trailing"},
           licence="Stability AI Non-Commercial Research Community License"),
    Preset("sdxs-512", "IDKiro/sdxs-512-0.9", 512, {"low": 1, "medium": 1, "high": 1}, 0.0,
           tiny_decoder="madebyollin/taesd", default_decoder="full",
           licence="OpenRAIL++ (see the model card)"),
    Preset("sdxl-turbo", "stabilityai/sdxl-turbo", 512, {"low": 1, "medium": 2, "high": 4}, 0.0,
           tiny_decoder="madebyollin/taesdxl", default_decoder="tiny",
           scheduler={"class": "EulerAncestralDiscreteScheduler",
                      "timestep_spacing": "trailing"},
           licence="Stability AI Non-Commercial Research Community License"),
    Preset("sd15-lcm", "SimianLuo/LCM_Dreamshaper_v7", 512, {"low": 4, "medium": 6, "high": 8},
           8.0, tiny_decoder="madebyollin/taesd", scheduler={"class": "LCMScheduler"},
           licence="CreativeML OpenRAIL-M"),
    Preset("flux-schnell", "black-forest-labs/FLUX.1-schnell", 1024,
           {"low": 1, "medium": 2, "high": 4}, 0.0, tiny_decoder="madebyollin/taef1",
           licence="Apache-2.0"),
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
                      allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"],
                      ignore_patterns=["*.fp32.*", "*/diffusion_pytorch_model.bin"])
    if preset.tiny_decoder:
        snapshot_download(preset.tiny_decoder, local_dir=target / "tiny_decoder",
                          allow_patterns=["*.json", "*.safetensors"])
    return target
