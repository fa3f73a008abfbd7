"""LoRA adapters in the diffusers engine, on the tiny random-weight pipelines of
`limner.testing.families`: per-request switching (pixels per adapter, scale 0, both ways
and back), static adapters fused at load under the default plan and plain torch, the
`request_loras` choice, misfits refused as the request's error with the pipeline left as
it was, a transformer family, and the torch-free shape check the server lists them with.

Tiny LoRAs are made with PEFT (`init_lora_weights=False`, so they change the pixels) and
saved as diffusers' `save_lora_weights` does; every draw is 64 px in 2 steps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from safetensors.torch import load_file, save_file

from limner import adapter_shapes
from limner.adapter_shapes import AdapterShape, describe, fits, model_shape
from limner.engines.base import EngineError
from limner.engines.diffusers import adapters
from limner.engines.diffusers.accel import weight_cache
from limner.engines.diffusers.engine import DiffusersEngine
from limner.errors import InvalidRequest
from limner.jobs import Adapter, GenerationParams
from limner.testing.families import build_family, load_pipeline
from limner.testing.loras import ATTENTION, make_lora

torch.set_num_threads(1)
PLAIN = {"dtype": "float32", "backend": "torch", "prepack": False}
"""Plain torch in float32: nothing replaces torch's layers, so `auto` takes LoRAs."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def sd15(root: Path) -> Path:
    return build_family("sd15", root)


@pytest.fixture(scope="module")
def sdxl(root: Path) -> Path:
    return build_family("sdxl", root)


@pytest.fixture(scope="module")
def flux(root: Path) -> Path:
    return build_family("flux", root)


@pytest.fixture(scope="module")
def loras(root: Path, sd15: Path, sdxl: Path, flux: Path) -> dict[str, Path]:
    made = {"a": make_lora(sd15, root / "lora-a", 1), "b": make_lora(sd15, root / "lora-b", 2),
            "te": make_lora(sd15, root / "lora-te", 3, text_encoder=True, denoiser=False),
            "xl": make_lora(sdxl, root / "lora-xl", 4), "flux": make_lora(flux, root / "lora-f", 5)}
    # A LoRA whose header passes the shape check but one layer of which has the wrong width.
    state = load_file(str(made["a"] / adapter_shapes.DIFFUSERS_FILE))
    bad = next(key for key in sorted(state) if "attn1.to_q.lora_A" in key)
    state[bad] = torch.randn(4, state[bad].shape[1] + 8)
    (root / "lora-bad").mkdir(exist_ok=True)
    made["bad"] = root / "lora-bad" / "bad.safetensors"
    save_file(state, str(made["bad"]))
    made["junk"] = root / "junk.safetensors"
    made["junk"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    # PEFT's own layout (alpha 8 at rank 4: scale 2, read from its adapter_config.json).
    pipe = load_pipeline(sd15)
    torch.manual_seed(6)
    get_peft_model(pipe.unet, LoraConfig(r=4, lora_alpha=8, target_modules=ATTENTION,
                                         init_lora_weights=False)).save_pretrained(
        str(root / "lora-peft"))
    made["peft"] = root / "lora-peft"
    return made


def engine_for(model: Path, **options: Any) -> DiffusersEngine:
    engine = DiffusersEngine(str(model), threads=1, native_size=64,
                             steps={"low": 2, "medium": 2, "high": 2}, **options)
    engine.load()
    return engine


def draw(engine: DiffusersEngine, *adapters: Adapter, seed: int = 3) -> np.ndarray:
    params = GenerationParams(prompt="a red fox", width=64, height=64, seeds=(seed,),
                              adapters=adapters)
    return np.asarray(engine.generate([params])[0][0], dtype=np.int16)


def lora(path: Path, name: str | None = None, scale: float = 1.0) -> Adapter:
    return Adapter(name=name or path.name, path=str(path), scale=scale)


def counting_loads(engine: DiffusersEngine) -> list[str]:
    """The names `load_lora_weights` is called with from now on (it still loads)."""
    calls: list[str] = []
    real: Callable[..., Any] = engine.pipe.load_lora_weights

    def load(path: str, adapter_name: str) -> Any:
        calls.append(adapter_name)
        return real(path, adapter_name=adapter_name)

    engine.pipe.load_lora_weights = load
    return calls


@pytest.fixture(scope="module")
def plain(sd15: Path) -> Iterator[DiffusersEngine]:
    engine = engine_for(sd15, **PLAIN)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def base(plain: DiffusersEngine) -> np.ndarray:
    return draw(plain)


def test_per_request_loras_switch_both_ways(plain: DiffusersEngine, base: np.ndarray,
                                            loras: dict[str, Path], sd15: Path) -> None:
    assert plain.info.adapters and plain.plan.request_loras
    loads = counting_loads(plain)
    a, b = lora(loras["a"]), lora(loras["b"])
    with_a = draw(plain, a)
    assert np.abs(with_a - base).max() > 8  # the LoRA changes the picture
    assert np.array_equal(draw(plain, lora(loras["a"], scale=0.0)), base)  # scale 0: nothing
    with_b = draw(plain, b)
    assert np.abs(with_b - with_a).max() > 8 and np.abs(with_b - base).max() > 8
    half = draw(plain, lora(loras["a"], scale=0.5))
    assert not np.array_equal(half, with_a) and not np.array_equal(half, base)
    both = draw(plain, a, b)
    assert not np.array_equal(both, with_a) and not np.array_equal(both, with_b)
    # Back and forth: each draws what it drew before, and no adapter the model's own.
    assert np.array_equal(draw(plain, a), with_a)
    assert np.array_equal(draw(plain), base)
    assert np.array_equal(draw(plain, b), with_b)
    assert np.array_equal(draw(plain, a), with_a)
    assert loads == [a.name, b.name]  # each file read once, then only switched
    assert set(plain.loras.loaded) == {a.name, b.name}
    # B after A draws what B draws on a pipeline that never had A.
    fresh = engine_for(sd15, **PLAIN)
    assert np.array_equal(draw(fresh, b), with_b)
    fresh.close()
    assert fresh.loras.loaded == ()


def test_the_least_recently_used_lora_is_unloaded_past_the_cap(
        plain: DiffusersEngine, base: np.ndarray, loras: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "MAX_LOADED", 1)
    a, b = lora(loras["a"]), lora(loras["b"])
    with_a, with_b = draw(plain, a), draw(plain, b)
    assert plain.loras.loaded == (b.name,)  # A went: B's batch keeps B
    loads = counting_loads(plain)
    assert np.array_equal(draw(plain, b), with_b) and loads == []
    assert np.array_equal(draw(plain, a), with_a) and loads == [a.name]
    assert plain.loras.loaded == (a.name,) and np.array_equal(draw(plain), base)


def test_edits_draw_with_the_batchs_lora(plain: DiffusersEngine, loras: dict[str, Path]
                                         ) -> None:
    """Edit pipelines share the pipeline's modules, and so its active LoRA."""
    start = Image.new("RGBA", (64, 64), (200, 40, 40, 255))

    def edit(*adapters: Adapter) -> np.ndarray:
        params = GenerationParams(prompt="a red fox", width=64, height=64, seeds=(3,),
                                  init_image=start, strength=0.6, adapters=adapters)
        return np.asarray(plain.generate([params])[0][0], dtype=np.int16)

    own = edit()
    with_a = edit(lora(loras["a"]))
    assert np.abs(with_a - own).max() > 8
    assert np.array_equal(edit(), own) and np.array_equal(edit(lora(loras["a"])), with_a)


def test_a_text_encoders_lora_is_not_served_stale_prompts(plain: DiffusersEngine,
                                                          base: np.ndarray,
                                                          loras: dict[str, Path]) -> None:
    """Prompt embeddings are cached per prompt: a LoRA of the text encoder going on or off
    must not draw with those of the other state."""
    assert plain._cache_prompts
    te = lora(loras["te"])
    with_te = draw(plain, te)
    assert np.abs(with_te - base).max() > 8
    assert np.array_equal(draw(plain), base)
    assert np.array_equal(draw(plain, te), with_te)


def test_a_peft_folder_is_read_with_its_own_scale(plain: DiffusersEngine, base: np.ndarray,
                                                  loras: dict[str, Path]) -> None:
    with_peft = draw(plain, lora(loras["peft"]))
    assert np.abs(with_peft - base).max() > 8
    # Its alpha of 8 at rank 4 doubles it: as the same weights at scale 2 under alpha 4.
    half = draw(plain, lora(loras["peft"], scale=0.5))
    assert not np.array_equal(half, with_peft)


@pytest.mark.parametrize("plan", ["default", "fp32", "openvino"])
def test_static_loras_are_fused_under_every_plan(plan: str, sd15: Path, root: Path,
                                                 loras: dict[str, Path],
                                                 plain: DiffusersEngine) -> None:
    """The CPU's default torch plan (bf16, NHWC, packing and fusion where it has them, the
    weight cache), torch in float32 (packing and fusion where oneDNN agrees) and OpenVINO
    (whose IR cache must not hand the model's own UNet to a load with a LoRA) draw with it."""
    plans: dict[str, dict[str, Any]] = {
        "default": {"cache_dir": str(root / "cache-sd15")},
        "fp32": {"dtype": "float32", "backend": "torch"},
        "openvino": {"backend": "openvino", "warmup": False, "cache_dir": str(root / "cache-ov")}}
    options = plans[plan]
    if plan == "openvino":
        pytest.importorskip("openvino")
    without = engine_for(sd15, **options)
    own = draw(without)
    without.close()
    static = [{"name": "a", "path": str(loras["a"]), "scale": 1.0}]
    engine = engine_for(sd15, loras=static, **options)
    assert any(step.startswith("loras: fused a at 1") for step in engine.applied)
    assert engine.pipe.get_list_adapters() in ({}, {"unet": []})  # plain weights left
    fused = draw(engine)
    assert np.abs(fused - own).max() > 8
    if plan == "fp32":  # the fused weights draw what the wrapped layers draw
        assert np.abs(fused - draw(plain, lora(loras["a"]))).max() <= 3
    engine.close()


def test_static_and_per_request_loras_together(sd15: Path, loras: dict[str, Path],
                                               plain: DiffusersEngine) -> None:
    engine = engine_for(sd15, loras=[{"name": "a", "path": str(loras["a"])}], **PLAIN)
    assert engine.info.adapters
    fused = draw(engine)
    assert np.abs(fused - draw(plain, lora(loras["a"]))).max() <= 3
    assert np.abs(draw(engine, lora(loras["b"])) - fused).max() > 8
    assert np.array_equal(draw(engine), fused)
    engine.close()


def test_a_pipeline_diffusers_loads_no_loras_into(root: Path, loras: dict[str, Path]) -> None:
    pixart = build_family("pixart-sigma", root)
    engine = engine_for(pixart, **PLAIN)
    assert not engine.info.adapters  # the plan could not know: the load does
    with pytest.raises(InvalidRequest) as refused:
        draw(engine, lora(loras["a"]))
    assert refused.value.code == "lora_unsupported" and "PixArt" in refused.value.message
    engine.close()
    with pytest.raises(EngineError, match="cannot take the LoRAs"):
        engine_for(pixart, loras=[{"name": "a", "path": str(loras["a"])}], **PLAIN)


def test_static_loras_with_packing_and_the_weight_cache(sdxl: Path, root: Path,
                                                        loras: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """SDXL's torch plan on a CPU has every speed-up of its own (bf16 where the CPU has
    it): the LoRA is fused before them. The weight cache keeps the model's own
    weights only: with the copies written after the load (as for files that do not convert
    one to one), a load with a static LoRA writes none, and one without it draws the
    model's own picture."""
    monkeypatch.setattr(weight_cache, "convert", lambda *args, **kwargs: [])
    cache, static = str(root / "cache-sdxl"), [{"name": "xl", "path": str(loras["xl"])}]
    first = engine_for(sdxl, cache_dir=cache, loras=static, backend="torch")
    fused, speedups = draw(first), first.info.speedups
    assert first.weights_saved == [] and not first.info.adapters
    first.close()
    plain_load = engine_for(sdxl, cache_dir=cache, backend="torch")
    own = draw(plain_load)
    assert plain_load.weights_saved
    assert set(plain_load.info.speedups) == {*speedups, "weight_cache"}
    plain_load.close()
    assert np.abs(fused - own).max() > 8
    for options, pixels in (({}, own), ({"loras": static}, fused)):  # from the cache now
        engine = engine_for(sdxl, cache_dir=cache, backend="torch", **options)
        assert engine.weights_from_cache and np.array_equal(draw(engine), pixels)
        engine.close()


def test_request_loras_follow_the_plan(sd15: Path, loras: dict[str, Path]) -> None:
    packed = DiffusersEngine(str(sd15), backend="torch", dtype="float32", native_size=64)
    assert packed.plan.prepack and not packed.plan.request_loras
    assert not packed.info.adapters and "per-request LoRAs off (auto: prepack" \
        in packed.plan.describe()
    packed.load()
    running = set(packed.info.speedups)
    # After the load, what runs: a kernel check may have turned packing off.
    assert packed.info.adapters == (not running & {"prepack", "fuse"})
    if not packed.info.adapters:
        with pytest.raises(InvalidRequest) as refused:
            draw(packed, lora(loras["a"]))
        assert refused.value.param == "lora" and refused.value.code == "lora_unsupported"
    packed.close()
    # In the CPU's own dtype (bf16 and NHWC where it has bf16): only packing goes.
    asked = DiffusersEngine(str(sd15), backend="torch", native_size=64, threads=1,
                            request_loras=True, steps={"low": 2, "medium": 2, "high": 2})
    assert not asked.plan.prepack and not asked.plan.fuse and asked.info.adapters
    assert "prepack off (request_loras" in asked.plan.describe()
    asked.load()
    assert asked.info.adapters and not set(asked.info.speedups) & {"prepack", "fuse"}
    assert np.abs(draw(asked, lora(loras["a"])) - draw(asked)).max() > 8
    never = DiffusersEngine(str(sd15), native_size=64, request_loras=False, **PLAIN)
    assert not never.info.adapters
    with pytest.raises(ValueError, match="request_loras"):
        DiffusersEngine(str(sd15), request_loras=True, prepack=True, device="cpu")


def test_a_misfit_is_the_requests_error_and_changes_nothing(
        sdxl: Path, loras: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(sdxl, **PLAIN)
    own = draw(engine)
    xl = lora(loras["xl"])
    with_xl = draw(engine, xl)
    loads = counting_loads(engine)
    # An SD 1.5 LoRA on SDXL: the header's widths tell, before anything loads.
    with pytest.raises(InvalidRequest) as misfit:
        draw(engine, lora(loras["a"], "sd15-style"))
    assert misfit.value.param == "lora" and misfit.value.code == "lora_mismatch"
    assert "'sd15-style'" in misfit.value.message and "'sdxl'" in misfit.value.message
    assert "UNet (32-wide text features)" in misfit.value.message
    assert loads == []
    # Without the header check the load itself fails, and what it left is taken out again.
    monkeypatch.setattr(adapter_shapes, "fits", lambda adapter, model: None)
    with pytest.raises(InvalidRequest) as failed:
        draw(engine, lora(loras["a"], "loaded-anyway"))
    assert failed.value.code == "lora_mismatch" and "size mismatch" in failed.value.message
    assert "loaded-anyway" not in str(engine.pipe.get_list_adapters())
    assert np.array_equal(draw(engine), own)
    assert np.array_equal(draw(engine, xl), with_xl)
    # The verdict is kept: a second request fails without reading the file again.
    loads.clear()
    with pytest.raises(InvalidRequest):
        draw(engine, lora(loras["a"], "loaded-anyway"))
    assert loads == []
    with pytest.raises(InvalidRequest) as junk:
        draw(engine, lora(loras["junk"]))
    assert junk.value.code == "lora_mismatch" and "not a safetensors file" in junk.value.message
    with pytest.raises(InvalidRequest) as gone:
        draw(engine, Adapter(name="gone", path=str(loras["a"] / "missing.safetensors")))
    assert gone.value.code == "lora_not_found" and gone.value.param == "lora"
    assert np.array_equal(draw(engine, xl), with_xl) and np.array_equal(draw(engine), own)
    engine.close()


def test_a_layer_of_the_wrong_width_is_refused(plain: DiffusersEngine, base: np.ndarray,
                                               loras: dict[str, Path]) -> None:
    a = lora(loras["a"])
    with_a = draw(plain, a)
    with pytest.raises(InvalidRequest) as misfit:
        draw(plain, lora(loras["bad"], "bad"))
    assert misfit.value.code == "lora_mismatch" and "size mismatch" in misfit.value.message
    assert "bad" not in plain.loras.loaded
    assert np.array_equal(draw(plain), base) and np.array_equal(draw(plain, a), with_a)


def test_a_transformer_family_takes_a_lora(flux: Path, loras: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(flux, **PLAIN)
    assert engine.info.adapters
    own = draw(engine)
    with_lora = draw(engine, lora(loras["flux"]))
    assert np.abs(with_lora - own).max() > 8
    assert np.array_equal(draw(engine, lora(loras["flux"], scale=0.0)), own)
    assert np.array_equal(draw(engine), own)
    with pytest.raises(InvalidRequest) as misfit:  # a UNet's LoRA on a transformer
        draw(engine, lora(loras["a"], "unet-lora"))
    assert misfit.value.code == "lora_mismatch" and "transformer" in misfit.value.message
    # Past the header check, diffusers only warns that no key matched: still refused.
    monkeypatch.setattr(adapter_shapes, "fits", lambda adapter, model: None)
    with pytest.raises(InvalidRequest) as nothing:
        draw(engine, lora(loras["a"], "no-keys"))
    assert "none of its weights match" in nothing.value.message
    assert np.array_equal(draw(engine, lora(loras["flux"])), with_lora)
    assert np.array_equal(draw(engine), own)
    engine.close()


# --------------------------------------------------------------------------- adapter_shapes


def kohya(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, str(path))
    return path


def test_shapes_of_loras_and_models(root: Path, loras: dict[str, Path], sd15: Path,
                                    sdxl: Path, flux: Path) -> None:
    a, xl, f = describe(loras["a"]), describe(loras["xl"]), describe(loras["flux"])
    assert (a.target, a.context_dim, a.layout) == ("unet", 32, "diffusers")
    assert (xl.target, xl.context_dim) == ("unet", 64)
    assert (f.target, f.width) == ("transformer", 32)
    te = describe(loras["te"])
    assert te.target is None and te.text_encoders == ("text_encoder",)
    peft = describe(loras["peft"])
    assert (peft.target, peft.context_dim, peft.layout) == ("unet", 32, "peft")
    assert describe(loras["a"] / adapter_shapes.DIFFUSERS_FILE) == a  # the file or its folder
    models = {name: model_shape(folder) for name, folder in
              (("sd15", sd15), ("sdxl", sdxl), ("flux", flux))}
    assert (models["sd15"].target, models["sd15"].context_dim) == ("unet", 32)
    assert models["sdxl"].text_encoders == ("text_encoder", "text_encoder_2")
    assert (models["flux"].target, models["flux"].width) == ("transformer", 32)
    assert fits(a, models["sd15"]) is None and fits(peft, models["sd15"]) is None
    assert fits(xl, models["sdxl"]) is None and fits(f, models["flux"]) is None
    assert fits(te, models["sd15"]) is None
    assert "64-wide" in (fits(a, models["sdxl"]) or "")
    assert "transformer" in (fits(a, models["flux"]) or "")
    assert "UNet" in (fits(f, models["sd15"]) or "")


def test_shapes_of_kohya_files(root: Path) -> None:
    sd1 = describe(kohya(root / "kohya-sd1.safetensors", {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            (4, 768),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            (320, 4),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha": (),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)}))
    assert (sd1.target, sd1.context_dim, sd1.layout) == ("unet", 768, "kohya")
    assert sd1.text_encoders == ("text_encoder",)
    sdxl = AdapterShape("unet", context_dim=2048, text_encoders=("text_encoder",
                                                                 "text_encoder_2"))
    why = fits(sd1, sdxl) or ""
    assert "Stable Diffusion 1.x" in why and "Stable Diffusion XL" in why
    flux1 = describe(kohya(root / "kohya-flux.safetensors", {
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (4, 3072),
        "lora_unet_single_blocks_0_linear1.lora_down.weight": (4, 3072)}))
    assert (flux1.target, flux1.width) == ("transformer", 3072)
    assert fits(flux1, AdapterShape("transformer", width=3072)) is None
    assert "1536" in (fits(flux1, AdapterShape("transformer", width=1536)) or "")
    xl_te2 = describe(kohya(root / "kohya-te2.safetensors", {
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280)}))
    assert "text_encoder_2" in (fits(xl_te2, AdapterShape("unet", 768, text_encoders=(
        "text_encoder",))) or "")


def test_what_is_no_lora(root: Path, loras: dict[str, Path], sd15: Path) -> None:
    with pytest.raises(ValueError, match="not a safetensors file"):
        describe(loras["junk"])
    with pytest.raises(ValueError, match="no LoRA weights"):
        describe(sd15 / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError):
        describe(root / "nothing-here")
    (root / "weights.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="safetensors"):
        describe(root / "weights.bin")
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="holds no"):
        describe(root / "empty")
    assert json.loads((sd15 / "model_index.json").read_text())["_class_name"] == \
        model_shape(sd15).pipeline


def test_adapter_shapes_imports_no_torch() -> None:
    code = ("import sys\nimport limner.adapter_shapes\n"
            "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'safetensors')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
