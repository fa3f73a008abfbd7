"""DiffusersEngine on a tiny random-weight Stable Diffusion pipeline saved to a temp folder."""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
from conftest import RunningServer, images_of
from PIL import Image

import limner.engines.diffusers.accel
from limner.config import EngineConfig
from limner.engines.base import Engine, EngineError
from limner.engines.diffusers.accel import kernel_check
from limner.engines.diffusers.accel.fusion import fused_count
from limner.engines.diffusers.accel.kernel_check import KernelCheck
from limner.engines.diffusers.accel.prepack import PackedConv2d, PackedLinear, packed_count
from limner.engines.diffusers.engine import (
    DiffusersEngine,
    _edit_inputs,
    _edit_steps,
    _has_sd_encode_prompt,
    _pool_for_preview,
)
from limner.engines.registry import build_engine
from limner.jobs import GenerationCancelled, GenerationParams, StepUpdate
from limner.testing.families import build_family
from limner.testing.tiny_pipeline import build_tiny_decoder, build_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("pipelines"))


@pytest.fixture(scope="module")
def engine(tiny_sd: Path) -> DiffusersEngine:
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1)
    engine.load()
    return engine


def request(n: int = 1, seed: int = 0, width: int = 64, height: int = 64) -> GenerationParams:
    return GenerationParams(prompt="a red fox", width=width, height=height,
                            seeds=tuple(range(seed, seed + n)), quality="high")


def test_it_is_an_engine(engine: DiffusersEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.info.native_width == 64 and not engine.info.draws_alpha


def test_generate_batch_with_steps_and_previews(engine: DiffusersEngine) -> None:
    updates: list[tuple[int, int, list[list[Image.Image]]]] = []

    def on_step(update: StepUpdate) -> None:
        updates.append((update.step, update.total, update.preview()))

    out = engine.generate([request(n=2), request(n=1, seed=7)], on_step)
    assert [len(images) for images in out] == [2, 1]
    assert all(im.mode == "RGB" and im.size == (64, 64) for images in out for im in images)
    assert [(s, t) for s, t, _ in updates] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [len(p) for p in updates[0][2]] == [2, 1]
    assert out[0][0].tobytes() != out[0][1].tobytes()


def test_seeds_reproduce(engine: DiffusersEngine) -> None:
    first = engine.generate([request(seed=5)])[0][0]
    again = engine.generate([request(seed=5)])[0][0]
    assert first.tobytes() == again.tobytes()


def test_channels_last_draws_the_same_picture(tiny_sd: Path) -> None:
    # The default: on only for bf16 on a CPU, where it was measured faster.
    assert DiffusersEngine("/models/x", device="cpu", dtype="bfloat16").channels_last
    assert not DiffusersEngine("/models/x", device="cpu", dtype="float32").channels_last
    assert not DiffusersEngine("/models/x", device="cuda").channels_last
    nchw = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, prepack=False)
    nchw.load()
    assert not nchw.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    nhwc = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, channels_last=True,
                           prepack=False)
    nhwc.load()
    assert nhwc.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    ours = pixels(nhwc.generate([request(seed=5)])[0][0])
    theirs = pixels(nchw.generate([request(seed=5)])[0][0])
    # The same arithmetic in another memory order: sums may round differently, no more.
    assert ours.shape == theirs.shape == (64, 64, 3)
    assert np.abs(ours - theirs).max() <= 2


def test_channels_last_keeps_every_activation_nhwc(tmp_path: Path) -> None:
    """With linear projections (SD 2.x), diffusers hands an attention block's output back in
    NCHW order, and the group norms and convolutions after it would read it so."""
    sd2 = build_tiny_sd(tmp_path, linear_projection=True)
    nhwc = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True)
    nhwc.load()
    layouts: list[bool] = []
    norms = [m for m in nhwc.pipe.unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    hooks = [norm.register_forward_pre_hook(
        lambda module, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last)
            and not args[0].is_contiguous())) for norm in norms]
    ours = pixels(nhwc.generate([request(seed=5)])[0][0])
    for hook in hooks:
        hook.remove()
    assert len(layouts) >= len(norms) > 0 and all(layouts)  # each step calls each norm
    plain = DiffusersEngine(str(sd2), dtype="float32", threads=1, prepack=False)
    plain.load()
    assert np.abs(ours - pixels(plain.generate([request(seed=5)])[0][0])).max() <= 2


def test_packed_convolutions_draw_the_same_picture(engine: DiffusersEngine,
                                                    tiny_sd: Path) -> None:
    """The default for eager torch on a CPU: convolution and linear weights packed once for
    oneDNN, in the UNet, the VAE and the text encoder."""
    assert engine.prepack and packed_count(engine.pipe.unet) > 0
    assert packed_count(engine.pipe.vae) > 0 and packed_count(engine.pipe.text_encoder) > 0
    fresh = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1)
    fresh.load()  # its warm-up draw packs every weight, so the first request need not
    assert fresh.warmup and fresh.pipe.unet.conv_in.packed is not None
    linears = [m for m in fresh.pipe.text_encoder.modules() if isinstance(m, PackedLinear)]
    assert linears and all(m.packed is not None for m in linears)
    assert not DiffusersEngine("/models/x", device="cpu", compile=True).prepack
    assert not DiffusersEngine("/models/x", device="cuda").prepack
    assert DiffusersEngine("/models/x", device="cpu", dtype="bfloat16").prepack == \
        bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    plain = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, prepack=False)
    plain.load()
    assert packed_count(plain.pipe.unet) == 0
    for seed, size in ((5, (64, 64)), (6, (64, 128))):  # a second shape after the first
        ours = pixels(engine.generate([request(seed=seed, width=size[0], height=size[1])])[0][0])
        theirs = pixels(plain.generate([request(seed=seed, width=size[0],
                                                height=size[1])])[0][0])
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 2
    conv_in = engine.pipe.unet.conv_in
    assert conv_in.packed is not None and conv_in.weight is None  # the plain copy is gone
    with pytest.raises(ValueError, match="prepack = true packs layer weights"):
        DiffusersEngine("/models/x", device="cpu", compile=True, prepack=True)


def test_fused_blocks_draw_the_same_picture(tmp_path: Path) -> None:
    """The default with prepack: the elementwise work around the packed layers runs inside
    their calls (`fusion`), in the UNet's ResNet, attention and transformer blocks and the
    VAE's ResNet blocks."""
    sd2 = build_tiny_sd(tmp_path, linear_projection=True)
    fused = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True)
    fused.load()
    assert fused.fuse and fused_count(fused.pipe.unet) > 0 and fused_count(fused.pipe.vae) > 0
    unfused = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True,
                              fuse=False)
    unfused.load()
    assert unfused.prepack and fused_count(unfused.pipe.unet) == 0
    for seed in (5, 6):
        ours = pixels(fused.generate([request(seed=seed)])[0][0])
        theirs = pixels(unfused.generate([request(seed=seed)])[0][0])
        assert ours.shape == theirs.shape == (64, 64, 3)
        assert np.abs(ours - theirs).max() <= 2
    assert not DiffusersEngine("/models/x", device="cpu", prepack=False).fuse
    with pytest.raises(ValueError, match="fuse = true runs elementwise work"):
        DiffusersEngine("/models/x", device="cpu", prepack=False, fuse=True)


def test_a_fused_call_turned_down_falls_back_to_diffusers_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where this machine's oneDNN refuses a post-op at a model's own shapes (the small
    layers of `kernel_check` having passed), the load's warm-up finds out, and the engine
    draws with diffusers' blocks instead of failing every request."""
    sd2 = build_tiny_sd(tmp_path, linear_projection=True)

    def refuse(*args: Any) -> None:
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(PackedConv2d, "_binary", refuse)
    monkeypatch.setattr(kernel_check, "verdict", lambda *args: KernelCheck())
    engine = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True)
    with caplog.at_level("WARNING"):
        engine.load()
    assert "drawing failed with fuse on" in caplog.text
    assert not engine.fuse
    # Only the folded upsampling stays: a plain convolution, no post-op.
    assert fused_count(engine.pipe.unet) == 1 and all(
        "forward" not in vars(m) for m in engine.pipe.unet.modules()
        if type(m).__name__ != "Upsample2D")
    ours = pixels(engine.generate([request(seed=5)])[0][0])
    monkeypatch.undo()
    plain = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True,
                            fuse=False)
    plain.load()
    assert np.abs(ours - pixels(plain.generate([request(seed=5)])[0][0])).max() <= 2


@pytest.mark.parametrize("wrong", ["_binary", "_run"])
def test_calls_that_compute_something_else_are_not_used(
        wrong: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A oneDNN call that raises nothing but computes something else would draw wrong
    pictures silently. The load checks each kind of call on small layers first
    (`kernel_check`): a wrong fused call leaves the blocks unfused, a wrong packed layer
    leaves the layers unpacked, and the pictures are diffusers' own."""
    sd2 = build_tiny_sd(tmp_path, linear_projection=True)
    real = getattr(PackedConv2d, wrong)

    def doubled(self: PackedConv2d, *args: Any) -> torch.Tensor:
        return 2 * real(self, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(PackedConv2d, wrong, doubled)
    kernel_check.verdict.cache_clear()
    engine = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True)
    try:
        with caplog.at_level("WARNING"):
            engine.load()
    finally:
        kernel_check.verdict.cache_clear()  # no later test may see this verdict
    assert not engine.fuse and fused_count(engine.pipe.unet) == 0
    if wrong == "_binary":
        assert "oneDNN's fused calls disagree with torch on this CPU in torch.float32 " \
               "(convolution plus a tensor: relative error" in caplog.text
        assert engine.prepack and packed_count(engine.pipe.unet) > 0
    else:
        assert "oneDNN's packed layers disagree with torch on this CPU in torch.float32 " \
               "(convolution: relative error" in caplog.text
        assert not engine.prepack and packed_count(engine.pipe.unet) == 0
    assert "warm-up draw failed" not in caplog.text
    ours = pixels(engine.generate([request(seed=5)])[0][0])
    monkeypatch.undo()
    plain = DiffusersEngine(str(sd2), dtype="float32", threads=1, channels_last=True,
                            prepack=False)
    plain.load()
    assert np.abs(ours - pixels(plain.generate([request(seed=5)])[0][0])).max() <= 2


def test_cancel_skips_the_rest(engine: DiffusersEngine) -> None:
    steps: list[int] = []

    def on_step(update: StepUpdate) -> None:
        steps.append(update.step)
        if update.step == 2:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate([request()], on_step)
    assert steps == [1, 2]


def test_aspect_ratio_is_kept_on_the_draw_grid(engine: DiffusersEngine) -> None:
    out = engine.generate([request(width=1536, height=1024)])[0][0]
    assert out.size == (64, 64) or out.size[0] > out.size[1]


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="could not load"):
        DiffusersEngine(str(tmp_path / "nothing-here"), dtype="float32").load()


def test_served_end_to_end(serve: Callable[..., RunningServer], tiny_sd: Path) -> None:
    engine = DiffusersEngine(str(tiny_sd), name="tiny-sd", dtype="float32", threads=1)
    server = serve(engines={"tiny-sd": engine})
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    response = client.images.generate(prompt="a fox", model="gpt-image-1", size="1024x1536",
                                      background="transparent", quality="low")
    b64 = images_of(response)[0].b64_json
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.size == (1024, 1536) and image.mode == "RGBA"
    events = list(client.images.generate(prompt="a fox", model="tiny-sd", stream=True,
                                         partial_images=2, quality="high"))
    assert [e.type for e in events].count("image_generation.partial_image") == 2
    # What the load settled on is reported beside what was asked.
    assert engine.applied[0].startswith("kernel check: ") or engine.applied[0].startswith(
        "prepack: ")
    assert any(step.startswith("prepack: ") and step.endswith(" layers")
               for step in engine.applied)
    metrics = httpx.get(server.base_url + "/metrics").text
    assert 'limner_engine_speedup{model="tiny-sd",speedup="prepack"} 1' in metrics
    assert 'limner_engine_speedup{model="tiny-sd",speedup="prompt_cache"} 1' in metrics
    assert 'speedup="openvino"' not in metrics


def test_edits_served_end_to_end(serve: Callable[..., RunningServer], tiny_sd: Path) -> None:
    engine = DiffusersEngine(str(tiny_sd), name="tiny-sd", dtype="float32", threads=1)
    server = serve(engines={"tiny-sd": engine})
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    source = Image.effect_noise((256, 256), 60).convert("RGB")
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (96, 96, 160, 160))
    buffers = []
    for picture in (source, mask):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        buffers.append(buffer.getvalue())
    events = list(client.images.edit(prompt="a fox", model="gpt-image-1", image=buffers[0],
                                     mask=buffers[1], size="1024x1024", stream=True,
                                     partial_images=1, quality="high"))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    edited = Image.open(io.BytesIO(base64.b64decode(events[-1].b64_json))).convert("RGB")
    assert edited.size == (1024, 1024)
    expected = source.resize((1024, 1024), Image.Resampling.LANCZOS)
    kept = (0, 0, 1024, 300)
    assert np.array_equal(pixels(edited.crop(kept)), pixels(expected.crop(kept)))
    assert not np.array_equal(pixels(edited.crop((448, 448, 576, 576))),
                              pixels(expected.crop((448, 448, 576, 576))))
    variation = client.images.create_variation(image=buffers[0], model="dall-e-2", n=2,
                                               size="256x256", response_format="b64_json")
    assert len(images_of(variation)) == 2


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def count_text_encoder_calls(engine: DiffusersEngine) -> list[int]:
    calls: list[int] = []
    engine.pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_prompt_cache_skips_the_text_encoder(tiny_sd: Path) -> None:
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, guidance=0.0)
    engine.load()
    calls = count_text_encoder_calls(engine)
    cold = engine.generate([request(n=2, seed=3)])[0]
    warm = engine.generate([request(n=2, seed=3)])[0]
    assert len(calls) == 1
    assert [im.size for im in warm] == [(64, 64), (64, 64)]
    assert [im.tobytes() for im in cold] == [im.tobytes() for im in warm]
    assert cold[0].tobytes() != cold[1].tobytes()


def test_prompt_cache_with_guidance_matches_the_plain_pipeline(tiny_sd: Path) -> None:
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1)  # SD default: CFG 7.5
    engine.load()
    assert engine._cfg and engine._cache_prompts
    calls = count_text_encoder_calls(engine)
    fox = engine.generate([request(seed=4)])[0][0]
    assert len(calls) == 2  # the prompt and the empty negative prompt
    mixed = engine.generate([GenerationParams(prompt="a blue whale", width=64, height=64,
                                              seeds=(1, 2), quality="high"),
                             request(seed=4)])
    assert len(calls) == 4  # only the new prompt (and its negative) were encoded
    assert [len(images) for images in mixed] == [2, 1]
    # batched with other images, kernels may sum in another order: a level at most
    assert np.abs(pixels(mixed[1][0]) - pixels(fox)).max() <= 1
    assert len(engine._embeds) == 2
    assert engine._embeds[("a blue whale", True, None)][1] is \
        engine._embeds[("a red fox", True, None)][1]
    engine._cache_prompts = False  # the pipeline's own `prompt=` path gives the same picture
    plain = engine.generate([request(seed=4)])[0][0]
    assert len(calls) == 6
    assert plain.tobytes() == fox.tobytes()


def test_two_encoder_pipelines_keep_prompt() -> None:
    class SDXLLike:
        def encode_prompt(self, prompt: str, prompt_2: str | None, device: Any,
                          num_images_per_prompt: int, do_classifier_free_guidance: bool,
                          negative_prompt: str | None = None) -> None: ...

        def __call__(self, prompt: str, prompt_embeds: Any = None) -> None: ...

    assert not _has_sd_encode_prompt(SDXLLike())


@pytest.mark.parametrize(("options", "match"), [
    ({"backend": "onnx"}, "'torch', 'openvino'"),
    ({"backend": "openvino", "compile": True}, "choose one"),
    ({"compile": "yes"}, "true, false or a torch.compile mode"),
    ({"compile": 1}, "true, false or a torch.compile mode"),
    ({"prepack": "yes"}, "prepack must be true or false"),
    ({"prepack": True, "device": "cuda"}, "needs backend = 'torch' on a CPU"),
    ({"channels_last": "yes"}, "channels_last must be true or false"),
    ({"channels_last": True, "backend": "openvino"}, "needs backend = 'torch'"),
    ({"backend": "openvino", "device": "cuda"}, "CPU"),
    ({"backend": "openvino", "dtype": "float16"}, "f32 or bf16"),
    ({"quantize": "int4", "backend": "openvino"}, "quantize must be one of 'none', 'int8'"),
    ({"quantize": "int8"}, "needs backend = 'openvino'"),
])
def test_fast_path_options_are_checked(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiffusersEngine("/models/x", **options)


def test_compile_is_accepted() -> None:
    engine = DiffusersEngine("/models/x", compile=True, device="cpu")
    assert engine.compile and engine.backend == "torch" and engine.compile_mode == "default"
    graphs = DiffusersEngine("/models/x", compile="reduce-overhead", device="cpu")
    assert graphs.compile_mode == "reduce-overhead"
    assert DiffusersEngine("/models/x", device="cpu").compile_mode is None


@pytest.mark.slow
def test_compiled_engine_draws_the_eager_picture(tiny_sd: Path, tmp_path: Path) -> None:
    """The UNet and the decoder run compiled; partial images keep the eager decoder."""
    taesd = str(build_tiny_decoder(tmp_path / "taesd"))
    eager = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, tiny_decoder=taesd,
                            decoder="tiny")
    eager.load()
    compiled = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, tiny_decoder=taesd,
                               decoder="tiny", compile=True)
    compiled.load()
    assert compiled._preview_decoder is not None
    assert type(compiled.pipe.vae.decoder).__name__ == "OptimizedModule"
    assert type(compiled.pipe.unet).__name__ == "OptimizedModule"
    previews: list[list[list[Image.Image]]] = []
    ours = compiled.generate([request()], lambda update: previews.append(update.preview()))[0]
    reference = eager.generate([request()])[0]
    assert ours[0].size == reference[0].size == (64, 64)
    assert np.abs(pixels(ours[0]) - pixels(reference[0])).max() <= 2
    assert len(previews) == 4 and previews[-1][0][0].mode == "RGB"


@pytest.mark.slow
def test_a_compiled_transformer_draws_the_eager_picture(tmp_path: Path) -> None:
    """`compile` wraps a family's transformer as it wraps a UNet (a GPU's FLUX or Sana)."""
    from limner.testing.families import build_family

    folder = str(build_family("flux", tmp_path))
    options: dict[str, Any] = dict(dtype="float32", threads=1, prepack=False, native_size=64)
    eager = DiffusersEngine(folder, **options)
    eager.load()
    compiled = DiffusersEngine(folder, compile=True, **options)
    compiled.load()
    assert type(compiled.pipe.transformer).__name__ == "OptimizedModule"
    assert "compile: transformer, vae decoder (default)" in compiled.applied
    ours = compiled.generate([request()])[0]
    reference = eager.generate([request()])[0]
    assert ours[0].size == reference[0].size
    assert np.abs(pixels(ours[0]) - pixels(reference[0])).max() <= 2


def test_cache_dir_defaults_to_the_data_dir(tmp_path: Path) -> None:
    built = build_engine(EngineConfig("sd", "diffusers", "/models/sd", {}), None, tmp_path)
    assert isinstance(built, DiffusersEngine) and built.cache_dir == str(tmp_path / "cache")
    chosen = build_engine(EngineConfig("sd", "diffusers", "/models/sd", {"cache_dir": "/c"}),
                          None, tmp_path)
    assert isinstance(chosen, DiffusersEngine) and chosen.cache_dir == "/c"


def test_openvino_missing_is_a_clear_error(tiny_sd: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` -> ImportError
    monkeypatch.delitem(sys.modules, "limner.engines.diffusers.accel.openvino", raising=False)
    monkeypatch.delattr(limner.engines.diffusers.accel, "openvino", raising=False)
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, backend="openvino",
                             cache_dir=str(tmp_path))
    with pytest.raises(EngineError, match=r"pip install 'limner\[openvino\]'"):
        engine.load()


def test_nncf_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 is refused when the engine is made, before any load: NNCF is an opt-in extra."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs NNCF.*pip install 'limner\[int8\]'"):
        DiffusersEngine("/models/x", backend="openvino", quantize="int8")
    assert DiffusersEngine("/models/x", backend="openvino").quantize == "none"


def test_previews_decode_small_latents() -> None:
    latents = torch.randn(2, 4, 64, 96, generator=torch.Generator().manual_seed(0))
    pooled = _pool_for_preview(latents, 8)
    assert pooled.shape == (2, 4, 13, 20)  # 160 px on the long side after an 8x decoder
    # Averages of neighbourhoods: a constant stays itself, and no value leaves the range.
    flat = torch.full((1, 4, 64, 96), 0.25)
    assert torch.equal(_pool_for_preview(flat, 8), torch.full((1, 4, 13, 20), 0.25))
    assert latents.min() <= pooled.min() and pooled.max() <= latents.max()
    small = torch.randn(1, 4, 16, 16)
    assert _pool_for_preview(small, 8) is small


def test_cpu_engines_draw_one_request_at_a_time(engine: DiffusersEngine) -> None:
    """On a CPU batching requests buys no throughput, only latency; n > 1 is still one batch."""
    assert engine.device == "cpu" and engine.info.max_batch_images == 1
    wider = DiffusersEngine(engine.model, device="cpu", max_batch_images=4)
    assert wider.info.max_batch_images == 4


def test_a_diffusers_model_without_diffusers_installed_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install limner` serves the embedded model; diffusers comes with an extra."""
    import importlib.util

    real = importlib.util.find_spec

    def without_diffusers(name: str, *args: Any) -> Any:
        return None if name == "diffusers" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_diffusers)
    with pytest.raises(ValueError, match=r"needs diffusers, which is not installed: "
                                         r"pip install 'limner\[diffusers\]'"):
        build_engine(EngineConfig("sd", "diffusers", "/models/sd"))


def edit(n: int = 1, seed: int = 0, strength: float = 0.5, mask: Image.Image | None = None,
         size: tuple[int, int] = (64, 64), steps: int | None = None,
         min_steps: int = 0) -> GenerationParams:
    """An edit of a noisy picture (opaque), redrawn whole or, with `mask`, in part."""
    rng = np.random.default_rng(seed)
    start = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return GenerationParams(prompt="a red fox", width=size[0], height=size[1],
                            seeds=tuple(range(seed, seed + n)), quality="high", steps=steps,
                            min_steps=min_steps, init_image=start.convert("RGBA"), mask=mask,
                            strength=strength)


def left_half(size: tuple[int, int] = (64, 64)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return mask


def test_sdxl_pipelines_own_watermark_is_off(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers' SDXL pipelines mark every picture wherever the invisible-watermark package
    is installed; limner's `watermark` setting decides instead, so what a seed draws does
    not depend on what else is installed. Here the package is made to look installed, its
    mark a negative of the picture."""
    from diffusers.pipelines.stable_diffusion_xl import (
        pipeline_stable_diffusion_xl,
        pipeline_stable_diffusion_xl_img2img,
        pipeline_stable_diffusion_xl_inpaint,
    )

    class Negative:
        def apply_watermark(self, images: torch.Tensor) -> torch.Tensor:
            return -images

    for module in (pipeline_stable_diffusion_xl, pipeline_stable_diffusion_xl_img2img,
                   pipeline_stable_diffusion_xl_inpaint):
        monkeypatch.setattr(module, "is_invisible_watermark_available", lambda: True)
        monkeypatch.setattr(module, "StableDiffusionXLWatermarker", Negative, raising=False)
    engine = DiffusersEngine(str(build_family("sdxl", tmp_path)), dtype="float32",
                             prepack=False, warmup=False, threads=1, native_size=64)
    engine.load()
    assert engine.pipe.watermark is None
    assert set(engine._editors) == {"redraw", "inpaint"}
    assert all(editor.watermark is None for editor in engine._editors.values())


def test_edit_pipelines_share_the_loaded_weights(engine: DiffusersEngine) -> None:
    assert engine.info.edits
    assert any(step.startswith("edits: redraw pipelines (StableDiffusionImg2ImgPipeline)")
               for step in engine.applied)
    for kind in ("redraw", "inpaint"):
        editor = engine._editors[kind]
        assert editor.unet is engine.pipe.unet and editor.vae is engine.pipe.vae
        assert editor.text_encoder is engine.pipe.text_encoder
    assert type(engine._editors["inpaint"]).__name__ == "StableDiffusionInpaintPipeline"


@pytest.mark.parametrize("masked", [False, True], ids=["redraw", "inpaint"])
def test_edit_batch_with_steps_and_previews(engine: DiffusersEngine, masked: bool) -> None:
    updates: list[tuple[int, int, list[list[Image.Image]]]] = []

    def on_step(update: StepUpdate) -> None:
        updates.append((update.step, update.total, update.preview()))

    batch = [edit(n=2, mask=left_half() if masked else None),
             edit(n=1, seed=7, mask=left_half() if masked else None)]
    assert {p.edit for p in batch} == {"inpaint" if masked else "redraw"}
    out = engine.generate(batch, on_step)
    assert [len(images) for images in out] == [2, 1]
    assert all(im.mode == "RGB" and im.size == (64, 64) for images in out for im in images)
    # "high" asks 4 steps; at strength 0.5 diffusers runs the last 2 of them.
    assert [(s, t) for s, t, _ in updates] == [(1, 2), (2, 2)]
    assert [len(p) for p in updates[0][2]] == [2, 1]
    assert out[0][0].tobytes() != out[0][1].tobytes()


def test_edits_run_at_least_one_step(engine: DiffusersEngine) -> None:
    """A one-step preset at strength 0.5 would run int(1 * 0.5) = 0 steps, which diffusers
    refuses: the engine asks for enough steps that one runs; `min_steps` counts steps run."""
    totals: list[tuple[int, int]] = []
    out = engine.generate([edit(steps=1, strength=0.5)],
                          lambda update: totals.append((update.step, update.total)))
    assert out[0][0].size == (64, 64) and totals == [(1, 1)]
    totals.clear()
    engine.generate([edit(steps=1, strength=0.3, min_steps=3)],
                    lambda update: totals.append((update.step, update.total)))
    assert totals == [(1, 3), (2, 3), (3, 3)]
    assert _edit_steps(1, 0.5) == 2 and _edit_steps(4, 0.5) == 4
    for steps, strength, at_least in ((1, 0.29, 1), (1, 0.7, 1), (3, 0.01, 2), (100, 0.29, 5)):
        asked = _edit_steps(steps, strength, at_least)
        assert int(asked * strength) >= at_least and asked >= steps
        assert asked == steps or int((asked - 1) * strength) < at_least


def capture_latents(engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The mean of each encoded starting picture and each latent the VAE decodes, both
    unscaled, taken from the VAE the edit pipelines share."""
    vae = engine.pipe.vae
    encode, decode = vae.encode, vae.decode
    means: list[torch.Tensor] = []
    decoded: list[torch.Tensor] = []

    def encoding(pixels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = encode(pixels, *args, **kwargs)
        means.append(out.latent_dist.mean)
        return out

    def decoding(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        decoded.append(latents.clone())
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(vae, "encode", encoding)
    monkeypatch.setattr(vae, "decode", decoding)
    return means, decoded


def test_strength_says_how_far_an_edit_leaves_its_start(
        engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured in latents: random weights decode any latent to much the same grey, but a
    strength of 0.2 starts (and so ends) near the encoded picture and 1.0 from pure noise.
    The encoder samples around its mean (a spread near 1 here), hence the bound of 2."""
    means, decoded = capture_latents(engine, monkeypatch)
    distance = {}
    for strength in (0.2, 1.0):
        means.clear()
        decoded.clear()
        engine.generate([edit(seed=3, strength=strength)])
        distance[strength] = float((decoded[-1] - means[0]).abs().mean())
    assert distance[0.2] < 2.0 and distance[1.0] > 10 * distance[0.2]
    # Inpainting keeps the unmasked (right) half at the start's latents, even at strength 1.
    means.clear()
    decoded.clear()
    engine.generate([edit(seed=3, strength=1.0, mask=left_half())])
    away = (decoded[-1] - means[0]).abs()
    half = away.shape[-1] // 2
    kept, redrawn = float(away[..., half:].mean()), float(away[..., :half].mean())
    assert kept < 2.0 and redrawn > 10 * kept


def test_edit_inputs_are_drawn_at_the_draw_size(engine: DiffusersEngine) -> None:
    """The starting picture comes at the request's size and goes in at the draw size (here
    128x64 for 384x128), transparent pixels white; the mask stays two-valued."""
    start = Image.new("RGBA", (384, 128), (10, 200, 30, 255))
    start.paste((0, 0, 0, 0), (0, 0, 192, 128))  # the left half transparent (black beneath)
    mask = Image.new("L", (384, 128), 0)
    mask.paste(255, (0, 0, 97, 128))  # ends inside a drawn pixel: that pixel is redrawn
    params = GenerationParams(prompt="a fox", width=384, height=128, seeds=(1, 2),
                              init_image=start, mask=mask, strength=0.6)
    size = engine._draw_size(384, 128)
    assert size == (128, 64)
    inputs = _edit_inputs([params], size)
    assert len(inputs["image"]) == len(inputs["mask_image"]) == 2
    image, drawn_mask = inputs["image"][0], inputs["mask_image"][0]
    assert image.mode == "RGB" and image.size == drawn_mask.size == size
    assert image.getpixel((10, 32)) == (255, 255, 255)
    assert image.getpixel((120, 32)) == (10, 200, 30)
    assert set(np.unique(np.asarray(drawn_mask))) == {0, 255}
    assert drawn_mask.getpixel((32, 10)) == 255 and drawn_mask.getpixel((33, 10)) == 0
    out = engine.generate([params])
    assert [im.size for im in out[0]] == [size, size]
    assert list(_edit_inputs([edit()], (64, 64))) == ["image"]


def test_a_pipeline_without_edit_pipelines_edits_through_limners_own(
        tiny_sd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where diffusers has no image-to-image pipeline for a class, the generic one (noise
    the picture to the strength's timestep, denoise the schedule's tail) draws the edit;
    where even that cannot run, the engine does not edit and says so."""
    import diffusers

    from limner.engines.diffusers import generic_edit

    def unknown(pipeline: Any, **kwargs: Any) -> Any:
        raise ValueError("AutoPipeline can't find a pipeline linked to SomePipeline")

    monkeypatch.setattr(diffusers.AutoPipelineForImage2Image, "from_pipe", unknown)
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, prepack=False)
    engine.load()
    assert engine.info.edits and engine._edit_ways == {"redraw": "generic",
                                                       "inpaint": "pipelines"}
    steps: list[tuple[int, int]] = []
    out = engine.generate([edit()], lambda u: steps.append((u.step, u.total)))
    assert out[0][0].size == (64, 64) and steps == [(1, 2), (2, 2)]

    monkeypatch.setattr(diffusers.AutoPipelineForInpainting, "from_pipe", unknown)
    monkeypatch.setattr(generic_edit, "supported", lambda pipe: "no timesteps")
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1, prepack=False)
    engine.load()
    assert not engine.info.edits and not any(s.startswith("edits") for s in engine.applied)
    with pytest.raises(EngineError, match="cannot draw over a starting picture"):
        engine.generate([edit()])
    assert engine.generate([request()])[0][0].size == (64, 64)
