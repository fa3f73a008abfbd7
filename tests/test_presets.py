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
from limner.engines.diffusers.presets import PRESETS, resolve_model
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


def test_every_preset_has_three_qualities() -> None:
    for preset in PRESETS.values():
        assert set(preset.steps) == {"low", "medium", "high"}
        assert preset.native_size in (512, 1024)


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
    assert result.exit_code == 0
    for name in ("sd-turbo", "sdxs-512", "sdxl-turbo", "sd15-lcm", "flux-schnell"):
        assert name in result.output
