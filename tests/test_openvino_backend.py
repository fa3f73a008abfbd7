"""backend = "openvino" on the tiny random-weight pipeline: real conversion, IR cache, images."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from limner.engines.base import EngineError
from limner.engines.diffusers import engine as engine_module
from limner.engines.diffusers.engine import PREVIEW_MAX_SIDE, DiffusersEngine
from limner.jobs import GenerationParams
from limner.testing.tiny_pipeline import build_tiny_decoder, build_tiny_sd

pytest.importorskip("openvino")

from limner.engines.diffusers.accel import openvino as openvino_backend  # after importorskip

pytestmark = pytest.mark.slow  # converts models to OpenVINO

torch.set_num_threads(1)
MAX_MEAN_DIFF = 1.0
"""Mean |OpenVINO - torch| per pixel channel, in 8-bit levels (measured ~0.2: fp16-stored
weights, f32 compute: 0.12-0.19 per image, one pixel off by up to 10 levels)."""


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pipelines")
    return build_tiny_sd(folder), build_tiny_decoder(folder / "taesd")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make(parts: tuple[Path, Path], cache: Path | None, backend: str = "openvino",
         tiny: Path | None = None, native_size: int | None = None) -> DiffusersEngine:
    sd, taesd = parts
    engine = DiffusersEngine(str(sd), dtype="float32", threads=1, backend=backend,
                             cache_dir=str(cache) if cache else None,
                             tiny_decoder=str(tiny or taesd), decoder="tiny",
                             native_size=native_size)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def ov_engine(parts: tuple[Path, Path], cache: Path) -> DiffusersEngine:
    return make(parts, cache)


def request(n: int = 2, seed: int = 0, width: int = 64,
            height: int = 64) -> list[GenerationParams]:
    return [GenerationParams(prompt="a red fox", width=width, height=height,
                             seeds=tuple(range(seed, seed + n)), quality="high")]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_openvino_draws_close_to_torch(ov_engine: DiffusersEngine,
                                       parts: tuple[Path, Path]) -> None:
    assert type(ov_engine.pipe.unet).__name__ == "OVUNet"
    assert type(ov_engine.pipe.vae).__name__ == "OVTinyAutoencoder"
    assert type(ov_engine.pipe.text_encoder).__name__ == "OVTextEncoder"
    ov_images = ov_engine.generate(request())[0]
    torch_images = make(parts, None, backend="torch").generate(request())[0]
    assert [im.size for im in ov_images] == [(64, 64), (64, 64)]
    diffs = [np.abs(pixels(a) - pixels(b)).mean() for a, b in zip(ov_images, torch_images,
                                                                   strict=True)]
    assert max(diffs) < MAX_MEAN_DIFF, diffs
    assert np.abs(pixels(ov_images[0]) - pixels(ov_images[1])).mean() > 10 * max(diffs)


def test_openvino_edits_with_torchs_tiny_encoder(ov_engine: DiffusersEngine) -> None:
    assert ov_engine.info.edits
    editor = ov_engine._editors["inpaint"]
    assert editor.unet is ov_engine.pipe.unet and editor.vae is ov_engine.pipe.vae
    start = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                              dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    for kind_mask in (None, mask):
        params = GenerationParams(prompt="a red fox", width=64, height=64, seeds=(0, 1),
                                  quality="high", init_image=start.convert("RGBA"),
                                  mask=kind_mask, strength=0.5)
        out = ov_engine.generate([params])[0]
        assert [(im.mode, im.size) for im in out] == [("RGB", (64, 64))] * 2
        assert out[0].tobytes() != out[1].tobytes()
        assert np.abs(pixels(out[0]) - pixels(start)).mean() > 1, "nothing was redrawn"


def a_cpu_with_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine_module.detect_platform
    monkeypatch.setattr(engine_module, "detect_platform", lambda: dataclasses.replace(
        real(), cpu_bf16=False, openvino=True))  # f32, as the module's engine asks


def test_auto_draws_with_openvino_on_a_cpu(
        ov_engine: DiffusersEngine, parts: tuple[Path, Path], cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a_cpu_with_openvino(monkeypatch)
    sd, taesd = parts
    engine = DiffusersEngine(str(sd), threads=1, cache_dir=str(cache),
                             tiny_decoder=str(taesd), decoder="tiny")  # every option left
    assert (engine.backend, engine.plan.openvino_precision, engine.prepack) == (
        "openvino", "f32", False)
    engine.load()  # the IR the module's engine cached
    assert type(engine.pipe.unet).__name__ == "OVUNet"
    assert "openvino" in engine.info.speedups and "prepack" not in engine.info.speedups
    auto = engine.generate(request())[0]
    asked = ov_engine.generate(request())[0]
    assert [pixels(a).tolist() for a in auto] == [pixels(b).tolist() for b in asked]


def test_auto_goes_back_to_torch_for_a_pipeline_openvino_cannot_run(
        parts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a_cpu_with_openvino(monkeypatch)
    monkeypatch.setattr(engine_module, "openvino_runs", lambda config: False)
    engine = DiffusersEngine(str(parts[0]), threads=1)
    assert engine.backend == "openvino"
    engine.load()
    assert (engine.backend, engine.prepack, engine.fuse) == ("torch", True, True)
    assert type(engine.pipe.unet).__name__ == "UNet2DConditionModel"
    assert engine.plan.reasons[0] == ("backend torch (auto: OpenVINO does not run "
                                      "StableDiffusionPipeline)")
    assert "openvino" not in engine.info.speedups and "prepack" in engine.info.speedups
    assert [im.size for im in engine.generate(request(n=1))[0]] == [(64, 64)]
    with pytest.raises(EngineError, match="use backend = 'torch' for StableDiffusionPipeline"):
        DiffusersEngine(str(parts[0]), threads=1, backend="openvino").load()  # asked: refused


def test_auto_going_back_to_torch_loads_the_pipeline_as_torch_runs_it(
        parts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with bf16, torch's plan draws in bf16 where OpenVINO's kept torch's parts in
    float32: the pipeline must be loaded in the plan it will run, not converted after."""
    real = engine_module.detect_platform
    monkeypatch.setattr(engine_module, "detect_platform", lambda: dataclasses.replace(
        real(), cpu_bf16=True, openvino=True))
    monkeypatch.setattr(engine_module, "openvino_runs", lambda config: False)
    engine = DiffusersEngine(str(parts[0]), threads=1)
    assert (engine.backend, engine.dtype) == ("openvino", torch.float32)
    engine.load()
    assert (engine.backend, engine.dtype) == ("torch", torch.bfloat16)
    assert engine.pipe.unet.dtype == torch.bfloat16
    assert [im.size for im in engine.generate(request(n=1))[0]] == [(64, 64)]


def test_openvino_other_shapes_and_previews(ov_engine: DiffusersEngine,
                                            parts: tuple[Path, Path], cache: Path) -> None:
    wider = make(parts, cache, native_size=128)  # the same IR, compiled for a new shape
    previews: list[list[list[Image.Image]]] = []
    wide = wider.generate(request(n=1, width=1536, height=768),
                          lambda update: previews.append(update.preview()))[0][0]
    assert wide.size == (192, 64)
    # Previews are decoded small (at most PREVIEW_MAX_SIDE px), with the image's aspect.
    assert len(previews) == 4
    width, height = previews[-1][0][0].size
    assert width == PREVIEW_MAX_SIDE and abs(height - PREVIEW_MAX_SIDE / 3) <= 2


def test_ir_is_cached_and_reused(ov_engine: DiffusersEngine, parts: tuple[Path, Path],
                                 cache: Path, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    saved = sorted(p.parent.name.rsplit("-", 1)[0] for p in cache.glob("openvino/*/model.xml"))
    assert saved == ["text_encoder", "tiny_decoder", "unet"]
    assert all(p.with_suffix(".bin").stat().st_size > 0
               for p in cache.glob("openvino/*/model.xml"))
    first = ov_engine.generate(request(seed=9))[0]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again instead of reading the cached IR")

    monkeypatch.setattr(openvino_backend, "convert_model", forbidden)
    with caplog.at_level(logging.INFO, logger="limner.engines.openvino"):
        again = make(parts, cache).generate(request(seed=9))[0]
    assert "using the cached OpenVINO IR" in caplog.text
    assert [im.tobytes() for im in again] == [im.tobytes() for im in first]


def test_f32_keeps_f32_weights_and_bf16_stores_fp16(ov_engine: DiffusersEngine,
                                                     parts: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    """In f32, fp16-stored weights stay fp16 in OpenVINO's matrix products, widened on every
    call; in bf16 they are narrowed at compile time anyway, so storing fp16 only saves disk."""
    def stored_types(cache: Path) -> set[str]:
        import openvino

        model = openvino.Core().read_model(next(cache.glob("openvino/unet-*/model.xml")))
        return {op.get_element_type().get_type_name() for op in model.get_ordered_ops()
                if op.get_type_name() == "Constant" and op.get_element_type().is_real()}

    assert ov_engine.ov_precision == "f32"
    assert stored_types(Path(str(ov_engine.cache_dir))) == {"f32"}
    sd, taesd = parts
    bf16 = DiffusersEngine(str(sd), dtype="bfloat16", threads=1, backend="openvino",
                           cache_dir=str(tmp_path), tiny_decoder=str(taesd), decoder="tiny")
    bf16.load()
    assert "f16" in stored_types(tmp_path)  # the weights; a few scalars stay f32
    assert bf16.generate(request(n=1))[0][0].size == (64, 64)


def test_new_weights_are_converted_again(parts: tuple[Path, Path], cache: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taesd = shutil.copytree(parts[1], tmp_path / "taesd")
    make(parts, cache, tiny=taesd)  # same files, new folder: a new IR for the decoder only
    weights = next(taesd.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    converted: list[str] = []
    real = openvino_backend.convert_model

    def counting(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> object:
        converted.append(type(module).__name__)
        return real(module, example)

    monkeypatch.setattr(openvino_backend, "convert_model", counting)
    make(parts, cache, tiny=taesd)
    assert converted == ["_TinyDecode"]


def test_a_pipelines_own_tiny_vae_runs_in_openvino(parts: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """SDXS ships a tiny autoencoder as its `vae`: the decode runs in OpenVINO too."""
    sd, taesd = parts
    sdxs = tmp_path / "sdxs-like"
    shutil.copytree(sd, sdxs)
    shutil.rmtree(sdxs / "vae")
    shutil.copytree(taesd, sdxs / "vae")
    index = json.loads((sdxs / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderTiny"]
    (sdxs / "model_index.json").write_text(json.dumps(index))
    engine = DiffusersEngine(str(sdxs), dtype="float32", threads=1, backend="openvino",
                             cache_dir=str(tmp_path / "cache"))
    engine.load()
    assert type(engine.pipe.vae).__name__ == "OVTinyAutoencoder"
    images = engine.generate(request(n=1))[0]
    assert [im.size for im in images] == [(64, 64)]
    assert list((tmp_path / "cache" / "openvino").glob("tiny_decoder-*/model.xml"))


def test_openvino_warms_up_at_load(parts: tuple[Path, Path], cache: Path) -> None:
    """The default with backend = "openvino": a throw-away image at the native size during
    the load compiles every component for it, so the first request does not wait for that."""
    sd, taesd = parts
    options: dict[str, Any] = {"dtype": "float32", "threads": 1, "backend": "openvino",
                               "cache_dir": str(cache), "tiny_decoder": str(taesd),
                               "decoder": "tiny"}
    warm = DiffusersEngine(str(sd), **options)
    warm.load()
    assert warm.warmup
    latent = warm.info.native_width // warm.pipe.vae_scale_factor
    (unet_shapes,) = warm.pipe.unet.runner._compiled  # one: (sample, timestep, text)
    assert unet_shapes[0][1:] == (4, latent, latent)
    assert list(warm.pipe.text_encoder.runner._compiled) == [((1, 77),)]
    assert ((1, 4, latent, latent),) in warm.tiny.runner._compiled
    cold = DiffusersEngine(str(sd), warmup=False, **options)
    cold.load()
    assert not cold.pipe.unet.runner._compiled
    assert not DiffusersEngine(str(sd), device="cpu", prepack=False).warmup  # no need
    assert DiffusersEngine(str(sd), device="cpu").warmup  # packs its weights on first use
    assert DiffusersEngine(str(sd), device="cpu", compile=True).warmup
    with pytest.raises(ValueError, match="warmup must be true or false"):
        DiffusersEngine(str(sd), warmup="yes")


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


def make_int8(parts: tuple[Path, Path], cache: Path, samples: int = 2,
              native_size: int | None = None) -> DiffusersEngine:
    sd, taesd = parts
    engine = DiffusersEngine(str(sd), dtype="float32", threads=1, backend="openvino",
                             cache_dir=str(cache), tiny_decoder=str(taesd), decoder="tiny",
                             quantize="int8", quantize_samples=samples, native_size=native_size)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def int8_engine(parts: tuple[Path, Path], int8_cache: Path) -> DiffusersEngine:
    return make_int8(parts, int8_cache)


def test_int8_quantizes_the_unet_and_decoder_once_and_draws(
        int8_engine: DiffusersEngine, int8_cache: Path) -> None:
    assert any(step.startswith("int8: quantized unet, tiny_decoder from 2 draws")
               for step in int8_engine.applied), int8_engine.applied
    assert "int8" in int8_engine.info.speedups
    saved = sorted(p.parent.name.rsplit("-", 1)[0]
                   for p in int8_cache.glob("openvino/*-int8-*/model.xml"))
    assert saved == ["tiny_decoder-int8", "unet-int8"]
    xml = next(int8_cache.glob("openvino/unet-int8-*/model.xml")).read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # int8 really is in the IR
    images = int8_engine.generate(request())[0]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert np.abs(pixels(images[0]) - pixels(images[1])).mean() > 1  # two seeds, two pictures


def test_int8_ir_is_cached_and_reused(int8_engine: DiffusersEngine, parts: tuple[Path, Path],
                                      int8_cache: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = int8_engine.generate(request(seed=5))[0]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantized or converted again instead of reading the cached IR")

    monkeypatch.setattr(openvino_backend, "quantize_model", forbidden)
    monkeypatch.setattr(openvino_backend, "convert_model", forbidden)  # all three IRs cached
    again = make_int8(parts, int8_cache)
    assert "int8: int8 IR read from the cache: unet, tiny_decoder" in again.applied
    assert [im.tobytes() for im in again.generate(request(seed=5))[0]] == \
        [im.tobytes() for im in first]


def test_int8_keeps_more_in_floating_point_in_f32_than_in_bf16() -> None:
    """In bf16 the precision's own rounding outweighs what the larger set saves (the
    figures: benchmarks/results/2026-12-01-int8-recipe/)."""
    names = ["__module.unet.down_blocks.1.resnets.0.conv_shortcut/aten::_convolution/Convolution",
             "__module.unet.mid_block.attentions.0.proj_out/aten::linear/MatMul",
             "__module.unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0/aten",
             "__module.unet.up_blocks.2.resnets.1.conv2/aten::_convolution/Convolution",
             "__module.unet.down_blocks.0.downsamplers.0.conv/aten::_convolution/Convolution",
             "__module.unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q/aten",
             "__module.unet.down_blocks.2.resnets.1.conv2/aten::_convolution/Convolution"]
    kept = {precision: [n for n in names if pattern.search(n)]
            for precision, pattern in openvino_backend.KEPT_IN_FLOAT.items()}
    assert kept["bf16"] == names[:1]
    assert kept["f32"] == names[:5]


def test_a_new_calibration_quantizes_again(int8_engine: DiffusersEngine,
                                           parts: tuple[Path, Path], int8_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    quantized: list[tuple[str, int]] = []
    real = openvino_backend.quantize_model

    def counting(model: Any, samples: Any, component: str, precision: str) -> Any:
        assert precision == "f32"
        quantized.append((component, len(samples)))
        return real(model, samples, component, precision)

    monkeypatch.setattr(openvino_backend, "quantize_model", counting)
    make_int8(parts, int8_cache, samples=3)
    # Three draws at the step counts 1, 2, 4 in turn: 7 UNet calls, one decode per draw.
    assert quantized == [("unet", 7), ("tiny_decoder", 3)]
    # Another native size calibrates at that size: quantized anew, and drawn at the size asked.
    wide = make_int8(parts, int8_cache, native_size=128)
    assert [component for component, _ in quantized[2:]] == ["unet", "tiny_decoder"]
    [[picture]] = wide.generate(request(n=1, width=1536, height=768))
    assert picture.size == (192, 64)
    assert len(list(int8_cache.glob("openvino/unet-int8-*/model.xml"))) == 3


def test_a_tiny_decoder_for_previews_only_stays_in_floating_point(
        parts: tuple[Path, Path], int8_cache: Path) -> None:
    """With the full VAE drawing the image, calibration never meets the tiny decoder (it
    draws previews only): the UNet is quantized, the decoder left as it was."""
    sd, taesd = parts
    engine = DiffusersEngine(str(sd), dtype="float32", threads=1, backend="openvino",
                             cache_dir=str(int8_cache), tiny_decoder=str(taesd),
                             decoder="full", quantize="int8", quantize_samples=2)
    engine.load()
    assert any(step.startswith("int8: quantized unet from 2 draws") for step in engine.applied)
    previews: list[list[list[Image.Image]]] = []
    [[image]] = engine.generate(request(n=1), lambda update: previews.append(update.preview()))
    assert image.size == (64, 64) and len(previews) == 4
