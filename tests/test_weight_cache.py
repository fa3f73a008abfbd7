"""The bf16 weight cache: saved on the first load, read by later ones, same pictures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from limner.engines.diffusers import DiffusersEngine
from limner.engines.diffusers.accel import weight_cache
from limner.jobs import GenerationParams
from limner.testing.tiny_pipeline import build_tiny_sd

torch.set_num_threads(1)


@pytest.fixture
def tiny_sd(tmp_path: Path) -> Path:
    return build_tiny_sd(tmp_path / "pipelines")


def bf16_engine(model: Path, cache: Path, **options: object) -> DiffusersEngine:
    # Without prepack, which is on by default in bf16 on CPUs with AVX512-BF16 or AMX: its
    # packed layers hold their own weights, and these tests look at the modules' own.
    options.setdefault("prepack", False)
    engine = DiffusersEngine(str(model), dtype="bfloat16", threads=1, device="cpu",
                             cache_dir=str(cache), **options)
    engine.load()
    return engine


def draw(engine: DiffusersEngine) -> np.ndarray:
    params = GenerationParams(prompt="a red fox", width=64, height=64, seeds=(3,),
                              quality="low")
    return np.asarray(engine.generate([params])[0][0])


def test_first_load_saves_bf16_copies_and_later_loads_read_them(tiny_sd: Path,
                                                                tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = bf16_engine(tiny_sd, cache)
    assert first.weights_from_cache == []
    assert sorted(first.weights_saved) == ["text_encoder", "unet"]
    saved = sorted(p.name.split("-")[0] for p in (cache / "weights").iterdir())
    assert saved == ["text_encoder", "unet"]  # nothing half-written left beside them
    unet_file = next((cache / "weights").glob("unet-*/*.safetensors"))
    with safe_open(str(unet_file), "pt") as tensors:
        assert {tensors.get_tensor(k).dtype for k in tensors.keys()} == {torch.bfloat16}  # noqa: SIM118

    again = bf16_engine(tiny_sd, cache)
    assert again.weights_from_cache == ["text_encoder", "unet"] and again.weights_saved == []
    assert again.pipe.unet.dtype == torch.bfloat16
    # channels_last (the bf16 default on a CPU): the convolutions' weights were saved in NHWC
    # order and are used as they were mapped, not copied into that layout again.
    conv = again.pipe.unet.conv_in.weight
    assert again.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    with safe_open(str(unet_file), "pt") as tensors:
        nhwc = tensors.get_tensor("conv_in.weight")
    assert nhwc.shape[1:] == (3, 3, 4) and torch.equal(nhwc.permute(0, 3, 1, 2), conv)
    # The cached bf16 weights are the very values the first load converted to.
    assert np.array_equal(draw(first), draw(again))


def test_copies_are_written_from_the_files_as_a_full_load_would_convert(
        tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load writes its copies tensor by tensor from the weight files, never holding
    the fp32 models, and they are the very tensors a full load would have saved."""
    saved_after_loading: list[list[str]] = []
    real_save = weight_cache.save

    def recording_save(pipe: object, source: str, cache_dir: Path, dtype: torch.dtype,
                       names: list[str], channels_last: bool = False) -> list[str]:
        saved_after_loading.append(names)
        return real_save(pipe, source, cache_dir, dtype, names, channels_last)

    monkeypatch.setattr(weight_cache, "save", recording_save)
    for channels_last in (True, False):
        streamed = bf16_engine(tiny_sd, tmp_path / f"streamed-{channels_last}",
                               channels_last=channels_last)
        assert streamed.weights_saved == ["text_encoder", "unet"] and saved_after_loading == []
        assert streamed.weights_from_cache == []
        with monkeypatch.context() as patch:
            patch.setattr(weight_cache, "convert", lambda *args, **kwargs: [])
            loaded = bf16_engine(tiny_sd, tmp_path / f"loaded-{channels_last}",
                                 channels_last=channels_last)
        assert saved_after_loading.pop() == ["text_encoder", "unet"]
        for name in ("unet", "text_encoder"):
            ours = getattr(streamed.pipe, name).state_dict()
            theirs = getattr(loaded.pipe, name).state_dict()
            assert ours.keys() == theirs.keys()
            for key, value in ours.items():
                assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), key
        conv = streamed.pipe.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert np.array_equal(draw(streamed), draw(loaded))


def test_files_unlike_the_state_dict_are_converted_after_loading(
        tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_model_state = weight_cache._model_state

    def unet_differs(cls: type, library: str, folder: Path) -> weight_cache._ModelState:
        model = real_model_state(cls, library, folder)
        if folder.name == "unet":
            return model._replace(shapes={**model.shapes, "renamed.weight": (1,)})
        return model

    monkeypatch.setattr(weight_cache, "_model_state", unet_differs)
    assert weight_cache.convert(str(tiny_sd), tmp_path / "c", torch.bfloat16,
                                ["unet", "text_encoder"]) == ["text_encoder"]
    engine = bf16_engine(tiny_sd, tmp_path / "cache")
    assert engine.weights_saved == ["text_encoder", "unet"]  # the UNet after loading
    assert bf16_engine(tiny_sd, tmp_path / "cache").weights_from_cache == ["text_encoder",
                                                                            "unet"]


def test_an_older_text_encoder_file_is_converted_too(tiny_sd: Path, tmp_path: Path) -> None:
    """transformers 4 saved CLIP's text encoder under `text_model.` and with its
    `position_ids` buffer (SD-Turbo's own file): the same tensors under other names."""
    older = tmp_path / "older"
    shutil.copytree(tiny_sd, older)
    file = older / "text_encoder" / "model.safetensors"
    state = load_file(file)
    positions = torch.arange(77).unsqueeze(0)
    save_file({"text_model.embeddings.position_ids": positions,
               **{f"text_model.{key}": value for key, value in state.items()}}, file,
              metadata={"format": "pt"})
    assert weight_cache.convert(str(older), tmp_path / "c", torch.bfloat16,
                                ["text_encoder"]) == ["text_encoder"]
    converted = bf16_engine(older, tmp_path / "cache")
    assert converted.weights_saved == ["text_encoder", "unet"]
    reference = bf16_engine(tiny_sd, tmp_path / "reference")
    ours = converted.pipe.text_encoder.state_dict()
    theirs = reference.pipe.text_encoder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(value, theirs[key]) for key, value in ours.items())


def test_new_source_weights_are_converted_again(tiny_sd: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bf16_engine(tiny_sd, cache)
    weights = next((tiny_sd / "unet").glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    engine = bf16_engine(tiny_sd, cache)
    assert engine.weights_from_cache == ["text_encoder"] and engine.weights_saved == ["unet"]


def test_a_damaged_copy_is_replaced(tiny_sd: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bf16_engine(tiny_sd, cache)
    for file in (cache / "weights").glob("unet-*/*.safetensors"):
        file.write_bytes(b"not safetensors")
    engine = bf16_engine(tiny_sd, cache)
    assert engine.weights_saved == ["unet"]
    assert bf16_engine(tiny_sd, cache).weights_from_cache == ["text_encoder", "unet"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("Some tensors share memory")])
def test_an_unwritable_cache_still_loads(tiny_sd: Path, tmp_path: Path, error: Exception,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_save(target: Path, write: object) -> None:
        raise error

    monkeypatch.setattr(weight_cache, "save_folder", cannot_save)
    engine = bf16_engine(tiny_sd, tmp_path / "cache")
    assert engine.weights_saved == [] and draw(engine).shape == (64, 64, 3)


def test_nchw_engines_keep_copies_of_their_own(tiny_sd: Path, tmp_path: Path) -> None:
    """Without channels_last the UNet's copy is diffusers' own format, in NCHW order, and the
    NHWC one of a channels_last engine is not mistaken for it; the text encoder's is shared."""
    cache = tmp_path / "cache"
    nhwc = bf16_engine(tiny_sd, cache)
    first = bf16_engine(tiny_sd, cache, channels_last=False)
    assert first.weights_from_cache == ["text_encoder"] and first.weights_saved == ["unet"]
    nchw = bf16_engine(tiny_sd, cache, channels_last=False)
    assert nchw.weights_from_cache == ["text_encoder", "unet"]
    conv = nchw.pipe.unet.conv_in.weight
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv, nhwc.pipe.unet.conv_in.weight)
    files = sorted(p.name for p in (cache / "weights").glob("unet-*/*.safetensors"))
    assert files == ["diffusion_pytorch_model.safetensors", weight_cache.NHWC_FILE]


@pytest.mark.parametrize("options", [{"dtype": "float32"}, {"cache_weights": False}])
def test_no_copies_in_fp32_or_when_turned_off(tiny_sd: Path, tmp_path: Path,
                                              options: dict[str, object]) -> None:
    settings: dict[str, object] = {"dtype": "bfloat16", **options}
    engine = DiffusersEngine(str(tiny_sd), threads=1, device="cpu",
                             cache_dir=str(tmp_path / "cache"), **settings)
    engine.load()
    assert engine.weights_saved == [] and not (tmp_path / "cache").exists()


def test_cache_weights_is_checked() -> None:
    with pytest.raises(ValueError, match="cache_weights must be true or false"):
        DiffusersEngine("/models/x", cache_weights="yes")
