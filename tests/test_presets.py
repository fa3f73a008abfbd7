"""Model presets: pull from a local folder, resolve `--model NAME`, run with a tiny decoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from limner.cli import main
from limner.engines.diffusers import DiffusersEngine
from limner.engines.diffusers.presets import FAMILIES, PRESETS, Preset, resolve_model
from limner.jobs import GenerationParams, StepUpdate
from limner.testing.tiny_pipeline import build_tiny_decoder, build_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like a pulled preset: the pipeline, plus tiny_decoder/."""
    root = tmp_path_factory.mktemp("preset-source")
    pipeline = build_tiny_sd(root / "build")
    target = root / "sd-turbo"
    shutil.copytree(pipeline, target)
    build_tiny_decoder(target / "tiny_decoder")
    return target


def test_every_preset_has_three_ordered_qualities() -> None:
    for preset in PRESETS.values():
        assert set(preset.steps) == {"low", "medium", "high"}, preset.name
        low, medium, high = (preset.steps[q] for q in ("low", "medium", "high"))
        assert 1 <= low <= medium <= high, preset.name


def test_every_preset_is_described() -> None:
    assert len(PRESETS) == len({p.name for p in PRESETS.values()})
    assert len({p.repo for p in PRESETS.values()}) == len(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.repo.count("/") == 1 and " " not in preset.repo, name
        assert preset.family in FAMILIES, name
        assert preset.licence, name
        # Qwen-Image publishes 1328x1328: the patch grid (VAE factor 8 x patch 2) is 16.
        assert preset.native_size >= 512 and preset.native_size % 16 == 0, name
        assert preset.guidance >= 0, name
        assert preset.true_cfg is None or preset.true_cfg > 1, name
        assert preset.default_decoder in ("full", "tiny"), name
        assert preset.default_decoder == "full" or preset.tiny_decoder, name
        assert preset.tiny_decoder is None or preset.tiny_decoder.startswith("madebyollin/")


def test_memory_follows_from_the_parameter_counts() -> None:
    for name, preset in PRESETS.items():
        assert preset.components and all(n > 0 for n in preset.components.values()), name
        assert preset.params_b == round(sum(preset.components.values()), 2), name
        weights = preset.params_b * 2  # bf16
        assert weights < preset.memory_gpu_gb <= preset.memory_cpu_gb, name
        assert preset.memory_cpu_gb == int(preset.memory_cpu_gb), name
    flux = PRESETS["flux-dev"]
    assert 16.5 < flux.params_b < 17.5  # 12B transformer, 4.8B T5-XXL, CLIP-L, VAE
    assert PRESETS["flux2-dev"].memory_gpu_gb > 100 > PRESETS["qwen-image"].memory_gpu_gb


def test_engine_options_stay_what_the_engine_takes() -> None:
    for preset in PRESETS.values():
        options = preset.engine_options()
        assert set(options) <= {"steps", "guidance", "native_size", "decoder", "scheduler"}
        assert options["steps"] == dict(preset.steps)
    assert "scheduler" not in PRESETS["flux-dev"].engine_options()


def test_a_preset_computes_its_memory() -> None:
    preset = Preset(name="x", repo="o/x", family="sd15", native_size=512,
                    steps={"low": 1, "medium": 2, "high": 4}, guidance=0.0,
                    components={"unet": 0.86, "text_encoder": 0.123, "vae": 0.084})
    assert preset.params_b == 1.07
    assert preset.memory_cpu_gb == 5.0  # 2.13 GB x 1.2 + 2 = 4.6, rounded up
    assert preset.memory_gpu_gb == 4.0  # 2.13 GB x 1.1 + 1.5 = 3.8, rounded up


def test_unpulled_preset_resolves_to_its_hub_id(tmp_path: Path) -> None:
    name, source, options = resolve_model("sd-turbo", tmp_path)
    assert (name, source) == ("sd-turbo", "stabilityai/sd-turbo")
    assert options["tiny_decoder"] == "madebyollin/taesd" and options["decoder"] == "tiny"
    assert resolve_model("/models/my-sd/", tmp_path) == ("my-sd", "/models/my-sd/", {})


def test_pull_then_serve_options_point_at_local_copies(source: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "pull", "sd-turbo", "--source", str(source),
                                       "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    name, path, options = resolve_model("sd-turbo", tmp_path)
    assert path == str(tmp_path / "models" / "sd-turbo")
    assert options["tiny_decoder"] == str(tmp_path / "models" / "sd-turbo" / "tiny_decoder")
    assert options["scheduler"] == {"class": "EulerAncestralDiscreteScheduler",
                                    "timestep_spacing": "trailing"}

    engine = DiffusersEngine(path, name=name, dtype="float32", threads=1,
                             **{**options, "native_size": 64})
    engine.load()
    assert type(engine.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert type(engine.pipe.vae).__name__ == "AutoencoderTiny"
    previews: list[list[list[Image.Image]]] = []

    def on_step(update: StepUpdate) -> None:
        previews.append(update.preview())

    params = GenerationParams(prompt="a fox", width=512, height=512, seeds=(1, 2),
                              quality="high")
    images = engine.generate([params], on_step)[0]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert len(previews) == 4 and len(previews[0][0]) == 2


def test_unknown_preset_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["models", "pull", "sd-9", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown preset" in result.output


def test_presets_listing() -> None:
    result = CliRunner().invoke(main, ["models", "presets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["name", "family"]
    assert len(lines) == len(PRESETS) + 1
    for preset, line in zip(PRESETS.values(), lines[1:], strict=True):
        cells = line.split()
        assert cells[:3] == [preset.name, preset.family, str(preset.native_size)]
        assert f"{preset.memory_cpu_gb:g}" in cells and f"{preset.memory_gpu_gb:g}" in cells
        assert cells[-1] == preset.repo and preset.licence in line
