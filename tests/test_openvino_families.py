"""OpenVINO for the families beyond Stable Diffusion's UNet (SDXL, SD3, FLUX.1, Kontext, FLUX.2,
Sana, Sana-Sprint, Qwen-Image and Z-Image): each family's denoiser converted at its first call,
the VAE's decoder with it, on tiny random-weight `save_pretrained` folders. In float32 the
pictures must be those torch draws; the CPU's default plan (`backend = "auto"`) must take
OpenVINO exactly for the families that measured faster with it, and a conversion that fails
must step down to torch rather than fail the model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from limner.engines.diffusers import engine as engine_module
from limner.engines.diffusers.engine import DiffusersEngine
from limner.engines.diffusers.families import family_for
from limner.jobs import GenerationParams
from limner.testing.families import build_family, build_tiny_decoder_for

pytest.importorskip("openvino")

from limner.engines.diffusers.accel import openvino as ovb  # after importorskip
from limner.engines.diffusers.accel import openvino_calls as ovc

pytestmark = pytest.mark.slow  # converts models to OpenVINO

GENERIC = ("sdxl", "sd3", "flux", "flux-kontext", "flux2", "flux2-klein", "sana", "sana-sprint",
           "qwen-image", "z-image")
"""The families whose denoiser goes through `OVDenoiser` (SD 1.x/2.x and LCM keep theirs)."""
NATIVE = 128
MAX_MEAN_DIFF = 1.0
"""Mean |OpenVINO - torch| per pixel channel in float32, in 8-bit levels (the IR stores
float32 weights in f32; what differs is the order of sums)."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-families")


@pytest.fixture
def openvino_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The platform as it is, OpenVINO included (the suite hides it by default)."""
    real = engine_module.detect_platform
    monkeypatch.setattr(engine_module, "detect_platform",
                        lambda: dataclasses.replace(real(), openvino=True))
    yield


def params(width: int = NATIVE, height: int = NATIVE, seed: int = 3) -> list[GenerationParams]:
    return [GenerationParams(prompt="a lighthouse at dusk", width=width, height=height,
                             seeds=(seed,), steps=2)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def pipeline_class(folder: Path) -> str:
    return str(json.loads((folder / "model_index.json").read_text())["_class_name"])


def denoiser(engine: DiffusersEngine) -> Any:
    return getattr(engine.pipe, "transformer", None) or engine.pipe.unet


@pytest.mark.parametrize("family", GENERIC)
def test_openvino_in_float32_draws_what_torch_draws(family: str, folders: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = build_family(family, folders)
    torch_engine = DiffusersEngine(str(folder), backend="torch", dtype="float32",
                                   prepack=False, warmup=False, threads=2, native_size=NATIVE)
    torch_engine.load()
    ov_engine = DiffusersEngine(str(folder), backend="openvino", dtype="float32", threads=2,
                                cache_dir=str(tmp_path), native_size=NATIVE)
    ov_engine.load()
    assert ov_engine.stepped_down == [], ov_engine.stepped_down
    assert type(denoiser(ov_engine)).__name__ == "OVDenoiser"
    assert type(ov_engine.pipe.vae).__name__ == "OVDecoder"
    # What a pipeline reads off its VAE beyond decode (FLUX.2's `bn`) is the torch VAE's.
    assert ov_engine.pipe.vae.use_slicing is False
    with pytest.raises(AttributeError):
        ov_engine.pipe.vae.no_such_attribute  # noqa: B018
    assert "openvino" in ov_engine.info.speedups
    sizes = []
    for size in ((NATIVE, NATIVE), (2 * NATIVE, NATIVE)):  # a second shape, the same IR
        want = torch_engine.generate(params(*size))[0][0]
        got = ov_engine.generate(params(*size))[0][0]
        assert (got.mode, got.size) == (want.mode, want.size)
        sizes.append(got.size)
        assert np.abs(pixels(got) - pixels(want)).mean() < MAX_MEAN_DIFF
        assert pixels(got).std() > 5, "a flat picture"
    if family != "sana-sprint":  # its pipeline bins every size to one of its aspect ratios
        assert sizes[0] == (NATIVE, NATIVE) and sizes[1][0] > sizes[1][1], sizes
    # A second load reads the IR the first one saved: converting again is forbidden.

    def no_conversion(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("converted again")

    monkeypatch.setattr(ovb, "convert_model", no_conversion)
    again = DiffusersEngine(str(folder), backend="openvino", dtype="float32", threads=2,
                            cache_dir=str(tmp_path), native_size=NATIVE)
    again.load()
    assert again.stepped_down == []
    assert pixels(again.generate(params())[0][0]).tolist() == \
        pixels(ov_engine.generate(params())[0][0]).tolist()


@pytest.mark.parametrize("family", ["qwen-image", "qwen-image-edit", "z-image"])
def test_a_rewritten_call_answers_as_the_transformer_does(family: str, folders: Path,
                                                          tmp_path: Path) -> None:
    """Qwen-Image's and Z-Image's calls are rewritten before conversion (`traceable`): for
    each call torch's transformer meets (prompts of two lengths, none a multiple of the
    caption bucket, a negative prompt's guidance, which batches Z-Image's captions at two
    lengths, and a second size), the converted denoiser must answer what it answers."""
    folder = build_family(family, folders)
    torch_engine = DiffusersEngine(str(folder), backend="torch", dtype="float32",
                                   prepack=False, warmup=False, threads=2, native_size=NATIVE)
    torch_engine.load()
    calls: list[tuple[tuple[Any, ...], dict[str, Any], Any]] = []
    transformer = torch_engine.pipe.transformer
    forward = transformer.forward

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        calls.append((args, kwargs, out[0]))
        return out

    transformer.forward = recorded
    for prompt, negative, size in (("a lighthouse", None, (NATIVE, NATIVE)),
                                   ("a lighthouse on a cliff at dusk, waves and gulls, oil",
                                    "blurry", (NATIVE, NATIVE)),
                                   ("a red fox in snow", None, (2 * NATIVE, NATIVE))):
        batch = [GenerationParams(prompt=prompt, negative_prompt=negative, width=size[0],
                                  height=size[1], seeds=(1,), steps=2)]
        torch_engine.generate(batch)
    ov_engine = DiffusersEngine(str(folder), backend="openvino", dtype="float32", threads=2,
                                cache_dir=str(tmp_path), native_size=NATIVE)
    ov_engine.load()
    assert ov_engine.stepped_down == [] and type(denoiser(ov_engine)).__name__ == "OVDenoiser"
    shapes = set()
    for args, kwargs, want in calls:
        got = denoiser(ov_engine)(*args, **kwargs)[0]
        wants = list(want) if isinstance(want, list) else [want]
        gots = list(got) if isinstance(got, list) else [got]
        assert [g.shape for g in gots] == [w.shape for w in wants]
        for g, w in zip(gots, wants, strict=True):
            assert (g - w).abs().max() < 1e-3 * w.abs().max(), (g - w).abs().max()
        shapes.add(tuple(w.shape for w in wants))
    assert len(calls) >= 4 and len(shapes) >= 2, shapes


@pytest.mark.parametrize("family", ["flux", "flux2-klein", "sd3", "sana-sprint", "qwen-image",
                                    "z-image"])
def test_the_default_plan_takes_openvino_where_it_measured_faster(
        family: str, folders: Path, tmp_path: Path, openvino_installed: None) -> None:
    folder = build_family(family, folders)
    engine = DiffusersEngine(str(folder), threads=2, cache_dir=str(tmp_path),
                             native_size=NATIVE)  # every option left to the plan
    kind = pipeline_class(folder)
    way = family_for(kind).openvino
    assert way in ("auto", "decoder", "asked")
    engine.load()
    if way == "auto":
        assert engine.backend == "openvino"
        assert type(denoiser(engine)).__name__ == "OVDenoiser"
    elif way == "decoder":  # torch's denoiser, in torch's plan; OpenVINO's VAE decoder
        assert engine.backend == "torch" and engine.prepack == engine.plan.prepack
        assert isinstance(denoiser(engine), torch.nn.Module)
        assert type(engine.pipe.vae).__name__ == "OVDecoder"
        assert engine.plan.reasons[0] == (
            f"backend torch, the VAE decoder in OpenVINO (auto: for {kind} on a CPU torch's "
            "denoiser is as fast, OpenVINO's decoder faster)")
        assert "openvino" in engine.info.speedups
    else:
        assert engine.backend == "torch"
        assert engine.plan.reasons[0] == (f"backend torch (auto: torch is faster than "
                                          f"OpenVINO for {kind} on a CPU)")
    assert engine.stepped_down == []
    previews: list[Any] = []
    image = engine.generate(params(), lambda update: previews.append(update.preview()))[0][0]
    assert (image.mode, image.size) == ("RGB", (NATIVE, NATIVE))
    assert pixels(image).std() > 5
    assert previews and all(p is None or p[0][0].mode == "RGB" for p in previews)
    if way == "decoder":  # torch's VAE encoder hands torch's denoiser latents it can read
        start = Image.fromarray(np.random.default_rng(0).integers(
            0, 256, (NATIVE, NATIVE, 3), dtype=np.uint8)).convert("RGBA")
        edited = engine.generate([GenerationParams(
            prompt="a red fox", width=NATIVE, height=NATIVE, seeds=(0,), steps=2,
            init_image=start, strength=0.6)])[0][0]
        assert (edited.mode, edited.size) == ("RGB", (NATIVE, NATIVE))
        assert engine.stepped_down == [] and engine.backend == "torch"
        assert type(engine.pipe.vae).__name__ == "OVDecoder"


def test_a_decoder_that_fails_to_draw_under_torch_steps_down_to_torch(
        folders: Path, tmp_path: Path, openvino_installed: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The `decoder` way is a speed-up as any other: a draw that fails inside it switches it
    off, and the model is drawn again all in torch."""
    folder = build_family("z-image", folders)
    engine = DiffusersEngine(str(folder), threads=2, cache_dir=str(tmp_path),
                             native_size=NATIVE)
    engine.load()
    assert type(engine.pipe.vae).__name__ == "OVDecoder"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp")

    monkeypatch.setattr(ovb.OVDecoder, "decode", broken)
    image = engine.generate(params())[0][0]
    assert engine.stepped_down == [
        "openvino off: RuntimeError: Exception from src/inference/src/cpp/infer_request.cpp"]
    assert type(engine.pipe.vae).__name__ == "AutoencoderKL"
    assert engine.plan.reasons[0] == "backend torch (asked)"
    assert "openvino" not in engine.info.speedups
    assert image.size == (NATIVE, NATIVE) and pixels(image).std() > 5


def test_previews_and_the_final_picture_through_the_tiny_decoder(
        folders: Path, tmp_path: Path) -> None:
    folder = build_family("flux", folders)
    tiny = build_tiny_decoder_for("flux", folders)
    engine = DiffusersEngine(str(folder), backend="openvino", dtype="float32", threads=2,
                             cache_dir=str(tmp_path), native_size=NATIVE,
                             tiny_decoder=str(tiny), decoder="tiny")
    engine.load()
    assert type(engine.pipe.vae).__name__ == "OVTinyAutoencoder"
    previews: list[Any] = []
    image = engine.generate(params(), lambda update: previews.append(update.preview()))[0][0]
    assert image.size == (NATIVE, NATIVE) and pixels(image).std() > 1
    assert len(previews) == 2 and previews[-1][0][0].mode == "RGB"


def test_a_denoiser_that_fails_to_convert_steps_down_to_torch(
        folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = build_family("flux", folders)
    real = ovb.convert_model

    def refuse_transformers(module: torch.nn.Module, example_input: Any) -> Any:
        if isinstance(module, ovc.CallForward):
            raise RuntimeError("no conversion rule for this operation")
        return real(module, example_input)

    monkeypatch.setattr(ovb, "convert_model", refuse_transformers)
    engine = DiffusersEngine(str(folder), backend="openvino", threads=2,
                             cache_dir=str(tmp_path), native_size=NATIVE)
    engine.load()  # the warm-up's first call converts, fails, and the model loads in torch
    assert engine.backend == "torch"
    assert engine.stepped_down == [
        "openvino off: ConversionFailed: OpenVINO cannot convert the transformer: "
        "RuntimeError: no conversion rule for this operation"]
    assert type(denoiser(engine)).__name__ == "FluxTransformer2DModel"
    assert engine.generate(params())[0][0].size == (NATIVE, NATIVE)


@pytest.mark.parametrize(("family", "vae"), [("sana", "AutoencoderDC"),
                                             ("flux2-klein", "AutoencoderKLFlux2")])
def test_a_vae_that_fails_to_convert_stays_in_torch(
        family: str, vae: str, folders: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In float32, whatever the plan's dtype: the converted denoiser hands it float32
    latents, and FLUX.2's pipeline does not cast them to the VAE's dtype."""
    folder = build_family(family, folders)
    real = ovb.convert_model

    def refuse_decoders(module: torch.nn.Module, example_input: Any) -> Any:
        if isinstance(module, ovb._Decode):
            raise RuntimeError("not enough values to unpack")
        return real(module, example_input)

    monkeypatch.setattr(ovb, "convert_model", refuse_decoders)
    engine = DiffusersEngine(str(folder), backend="openvino", threads=2,
                             cache_dir=str(tmp_path), native_size=NATIVE)
    engine.load()
    assert engine.backend == "openvino"
    assert type(denoiser(engine)).__name__ == "OVDenoiser"
    assert type(engine.pipe.vae).__name__ == vae and engine.pipe.vae.dtype == torch.float32
    assert engine.stepped_down == [
        "openvino VAE decoder off: RuntimeError: not enough values to unpack"]
    assert pixels(engine.generate(params())[0][0]).std() > 5


def test_a_call_laid_out_otherwise_than_converted_raises(folders: Path) -> None:
    """The engine answers the RuntimeError by stepping down; the denoiser must not guess."""
    from diffusers import FluxTransformer2DModel

    folder = build_family("flux", folders)
    module = FluxTransformer2DModel.from_pretrained(  # type: ignore[no-untyped-call]
        folder / "transformer").eval()
    runtime = ovb.OpenVINORuntime(None, 2, "f32")
    wrapped: Any = runtime.denoiser(module, str(folder), "transformer")
    inputs = dict(hidden_states=torch.randn(1, 16, 64), timestep=torch.tensor([0.5]),
                  guidance=torch.tensor([3.5]), pooled_projections=torch.randn(1, 32),
                  encoder_hidden_states=torch.randn(1, 8, 32), txt_ids=torch.zeros(8, 3),
                  img_ids=torch.zeros(16, 3))
    with torch.no_grad():
        want = module(**inputs, return_dict=False)[0]
    got = wrapped(**inputs, joint_attention_kwargs={}, return_dict=False)[0]
    assert wrapped.module is None, "the torch module is kept after conversion"
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4)
    assert wrapped(**inputs, joint_attention_kwargs={}).sample.shape == want.shape
    with pytest.raises(RuntimeError, match="was converted for a call laid out as"):
        wrapped(**inputs, joint_attention_kwargs={"scale": 0.5}, return_dict=False)


def test_int8_quantizes_a_family_transformer_once(folders: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nncf")
    folder = build_family("flux", folders)
    options: dict[str, Any] = dict(backend="openvino", quantize="int8", quantize_samples=2,
                                   threads=2, cache_dir=str(tmp_path), native_size=NATIVE)
    engine = DiffusersEngine(str(folder), **options)
    engine.load()
    assert engine.stepped_down == []
    assert any(step.startswith("int8: quantized transformer from 2 draws")
               for step in engine.applied), engine.applied
    first = engine.generate(params())[0][0]
    assert first.size == (NATIVE, NATIVE) and pixels(first).std() > 5

    def no_quantizing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("quantized again")

    monkeypatch.setattr(ovb, "quantize_model", no_quantizing)
    again = DiffusersEngine(str(folder), **options)
    again.load()
    assert "int8: int8 IR read from the cache: transformer" in again.applied
    assert pixels(again.generate(params())[0][0]).tolist() == \
        pixels(engine.generate(params())[0][0]).tolist()


def test_a_text_encoder_that_fails_to_convert_stays_in_torch_in_bf16(
        folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond SD the parts left in torch are large: on a bf16 CPU they run in bf16, and a
    text encoder the converter refuses runs there, the denoiser still in OpenVINO."""
    real_platform = engine_module.detect_platform
    monkeypatch.setattr(engine_module, "detect_platform", lambda: dataclasses.replace(
        real_platform(), cpu_bf16=True, openvino=True))
    folder = build_family("sana", folders)
    real = ovb.convert_model

    def refuse_encoders(module: torch.nn.Module, example_input: Any) -> Any:
        if isinstance(module, ovc.CallForward) and "Gemma" in type(module.module).__name__:
            raise RuntimeError("Conversion is failed for: SequenceMark")
        return real(module, example_input)

    monkeypatch.setattr(ovb, "convert_model", refuse_encoders)
    engine = DiffusersEngine(str(folder), threads=2, cache_dir=str(tmp_path),
                             native_size=NATIVE)
    engine.load()  # the family is known from the folder before anything loads
    assert engine.backend == "openvino" and engine.dtype == torch.bfloat16
    assert "OpenVINO in bf16; the parts left in torch in bfloat16 (beyond SD they are large)" \
        in engine.plan.reasons
    assert engine.stepped_down == []
    assert type(denoiser(engine)).__name__ == "OVDenoiser"
    encoder = engine.pipe.text_encoder
    assert type(encoder).__name__ == "OVEncoder" and encoder.torch_module is not None
    assert encoder.torch_module.dtype == torch.bfloat16  # back as it was before the attempt
    assert pixels(engine.generate(params())[0][0]).std() > 5


def test_a_large_text_encoder_runs_in_openvino(folders: Path, tmp_path: Path) -> None:
    folder = build_family("flux", folders)
    engine = DiffusersEngine(str(folder), backend="openvino", dtype="float32", threads=2,
                             cache_dir=str(tmp_path), native_size=NATIVE)
    engine.load()
    t5 = engine.pipe.text_encoder_2
    assert type(t5).__name__ == "OVEncoder" and t5.torch_module is None and t5.module is None
    assert type(engine.pipe.text_encoder).__name__ == "CLIPTextModel"  # read for pooled
    assert pixels(engine.generate(params())[0][0]).std() > 5
