"""The diffusers engine's options and their resolution, without torch: every default and
every incompatibility is decided by `options.resolve` from the options and the machine."""

from __future__ import annotations

from typing import Any

import pytest

from limner.engines.diffusers.options import DiffusersOptions, LoadPlan, Platform, resolve

AVX2 = Platform(cuda=False, cpu_bf16=False, onednn=True, onednn_bf16=False)
AMX = Platform(cuda=False, cpu_bf16=True, onednn=True, onednn_bf16=True)
GPU = Platform(cuda=True, cpu_bf16=False, onednn=True, onednn_bf16=False)
AVX2_OV = Platform(cuda=False, cpu_bf16=False, onednn=True, onednn_bf16=False, openvino=True)
AMX_OV = Platform(cuda=False, cpu_bf16=True, onednn=True, onednn_bf16=True, openvino=True)
GPU_OV = Platform(cuda=True, cpu_bf16=False, onednn=True, onednn_bf16=False, openvino=True)


def plan(platform: Platform = AVX2, folder: bool = True, **options: Any) -> LoadPlan:
    return resolve(DiffusersOptions.parse(options), platform, model_is_folder=folder)


def test_an_avx2_cpu_draws_in_float32_with_packed_and_fused_layers() -> None:
    p = plan(cache_dir="/c")
    assert (p.device, p.dtype, p.openvino_precision) == ("cpu", "float32", None)
    assert (p.channels_last, p.prepack, p.fuse, p.warmup) == (False, True, True, True)
    assert not p.cache_weights and p.max_batch_images == 1  # no bf16 copies of fp32 weights
    assert p.steps == {"low": 1, "medium": 2, "high": 4, "xhigh": 6, "max": 8}
    assert "prepack on (eager torch on a CPU in a dtype oneDNN packs)" in p.reasons


def test_a_bf16_cpu_draws_in_bfloat16_nhwc_and_keeps_bf16_copies_of_a_folder() -> None:
    p = plan(AMX, cache_dir="/c")
    assert (p.dtype, p.channels_last, p.prepack, p.fuse, p.cache_weights) == (
        "bfloat16", True, True, True, True)
    assert not plan(AMX, folder=False, cache_dir="/c").cache_weights  # a hub id
    assert not plan(AMX).cache_weights  # nowhere to keep them


def test_bf16_without_onednn_bf16_draws_with_torchs_own_layers() -> None:
    p = plan(Platform(cuda=False, cpu_bf16=True, onednn=True, onednn_bf16=False))
    assert (p.dtype, p.prepack, p.fuse, p.warmup) == ("bfloat16", False, False, False)
    assert "prepack off (not eager torch on a CPU in a dtype oneDNN packs)" in p.reasons


def test_a_gpu_draws_in_float16_in_batches_of_four() -> None:
    p = plan(GPU)
    assert (p.device, p.dtype, p.max_batch_images) == ("cuda", "float16", 4)
    assert (p.prepack, p.fuse, p.channels_last, p.warmup) == (False, False, False, False)
    assert plan(GPU, compile="reduce-overhead").warmup  # the first call of a shape compiles
    assert plan(GPU, device="cpu").device == "cpu"


def test_openvino_runs_on_the_cpu_with_torch_left_in_float32() -> None:
    p = plan(AMX, backend="openvino")
    assert (p.device, p.dtype, p.openvino_precision) == ("cpu", "float32", "bf16")
    assert (p.prepack, p.channels_last, p.warmup, p.cache_weights) == (False, False, True,
                                                                       False)
    assert plan(AVX2, backend="openvino").openvino_precision == "f32"
    assert plan(AMX, backend="openvino", dtype="fp32").openvino_precision == "f32"


def test_auto_takes_openvino_on_a_cpu_where_it_is_installed() -> None:
    p = plan(AVX2_OV, cache_dir="/c")
    assert (p.backend, p.device, p.dtype, p.openvino_precision) == ("openvino", "cpu",
                                                                    "float32", "f32")
    assert (p.prepack, p.fuse, p.warmup) == (False, False, True)
    assert "backend openvino (auto: installed, and the fastest on a CPU)" in p.reasons
    bf16 = plan(AMX_OV)
    assert (bf16.backend, bf16.openvino_precision, bf16.channels_last) == ("openvino", "bf16",
                                                                           False)
    assert plan(AMX_OV, dtype="bf16").openvino_precision == "bf16"
    assert plan(AVX2).backend == "torch" and plan(AVX2).prepack  # not installed
    assert "backend torch (auto: OpenVINO is not installed)" in plan(AVX2).reasons
    assert plan(GPU_OV).backend == "torch" and plan(GPU_OV).device == "cuda"
    for torch_only in ({"compile": True}, {"prepack": True}, {"channels_last": True},
                       {"dtype": "fp16"}, {"device": "cuda"}):
        p = plan(AVX2_OV, **torch_only)
        assert p.backend == "torch", torch_only
        assert "backend torch (auto: an option asked for is torch's)" in p.reasons
    assert plan(AMX_OV, backend="torch").backend == "torch"
    assert "backend torch (asked)" in plan(AMX_OV, backend="torch").reasons


def test_int8_asks_for_openvino_and_auto_finds_it_where_it_is_installed() -> None:
    p = plan(AMX_OV, quantize="int8")
    assert (p.backend, p.quantize, p.openvino_precision) == ("openvino", "int8", "bf16")
    with pytest.raises(ValueError, match="it needs backend = 'openvino', and OpenVINO "
                                         "installed"):
        plan(AMX, quantize="int8")


def test_int8_is_opt_in_and_calibrated_on_a_few_draws() -> None:
    assert (plan(backend="openvino").quantize, plan(backend="openvino").quantize_samples) == (
        "none", 0)
    p = plan(AVX2, backend="openvino", quantize="int8")
    assert (p.quantize, p.quantize_samples, p.openvino_precision) == ("int8", 8, "f32")
    assert "int8 (NNCF), calibrated on 8 draws" in p.reasons
    assert plan(AMX, backend="openvino", quantize="int8", quantize_samples=3).quantize_samples \
        == 3
    assert plan(backend="openvino", quantize="none").quantize == "none"


def test_what_was_asked_wins_and_says_so() -> None:
    p = plan(prepack=False, max_batch_images=3, steps={"low": 2})
    assert (p.prepack, p.fuse, p.warmup, p.max_batch_images) == (False, False, False, 3)
    assert p.steps == {"low": 2, "medium": 2, "high": 4, "xhigh": 6, "max": 8}
    sdxs = plan(steps={"low": 1, "medium": 1, "high": 1})
    assert (sdxs.steps["xhigh"], sdxs.steps["max"]) == (2, 2)
    assert "prepack off (asked)" in p.reasons
    assert "fuse off (not with prepack)" in p.reasons
    assert plan(dtype="bf16").dtype == "bfloat16"
    assert plan(AMX, fuse=False).fuse is False and plan(AMX, fuse=False).prepack


@pytest.mark.parametrize(("options", "match"), [
    ({"bogus": 1, "speed": 2}, "unknown diffusers engine option.s. bogus, speed"),
    ({"prepack": "yes"}, "prepack must be true or false, not 'yes'"),
    ({"threads": "2"}, "threads must be an integer"),
    ({"threads": True}, "threads must be an integer"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"guidance": True}, "guidance must be an integer or a number"),
    ({"steps": {"low": 0}}, "steps must map low, medium, high, xhigh and max"),
    ({"steps": {"fast": 1}}, "steps must map low, medium, high, xhigh and max"),
    ({"steps": 4}, "steps must be a table"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"decoder": "small"}, "decoder must be 'full' or 'tiny'"),
    ({"compile": 1}, "true, false or a torch.compile mode"),
    ({"quantize": "int4"}, "quantize must be one of 'none', 'int8', not 'int4'"),
    ({"backend": "onnx"}, "backend must be one of 'auto', 'torch', 'openvino', not 'onnx'"),
    ({"quantize": True}, "quantize must be a string"),
    ({"quantize_samples": 0}, "quantize_samples must be a positive integer"),
    ({"quantize_samples": "8"}, "quantize_samples must be an integer"),
])
def test_ill_typed_or_unknown_options_name_the_key(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiffusersOptions.parse(options)


@pytest.mark.parametrize(("platform", "options", "match"), [
    (AVX2, {"backend": "openvino", "compile": True}, "choose one"),
    (AVX2, {"backend": "openvino", "device": "cuda"}, "runs on the CPU"),
    (AVX2, {"backend": "openvino", "dtype": "float16"}, "f32 or bf16"),
    (AVX2, {"channels_last": True, "backend": "openvino"}, "needs backend = 'torch'"),
    (GPU, {"prepack": True}, "needs backend = 'torch' on a CPU without compile"),
    (AVX2, {"prepack": True, "compile": True}, "without compile"),
    (AVX2, {"prepack": True, "dtype": "float16"}, "in float32"),
    (AVX2, {"fuse": True, "prepack": False}, "it needs prepack"),
    (AVX2, {"quantize": "int8"}, "it needs backend = 'openvino'"),
    (AVX2_OV, {"quantize": "int8", "compile": True}, "it needs backend = 'openvino'"),
    (GPU, {"quantize": "int8", "backend": "torch"}, "it needs backend = 'openvino'"),
    (AVX2, {"quantize_samples": 4, "backend": "openvino"}, "it needs quantize = 'int8'"),
])
def test_options_that_exclude_each_other_are_refused(platform: Platform,
                                                     options: dict[str, Any],
                                                     match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(platform, **options)


def test_offload_is_for_a_gpu_and_says_so() -> None:
    plan = resolve(DiffusersOptions.parse({"offload": "model"}), GPU)
    assert plan.offload == "model" and "offload model" in plan.describe()
    with pytest.raises(ValueError, match="offload = 'model' moves weights between the CPU "
                                         "and a GPU: it needs device = 'cuda'"):
        resolve(DiffusersOptions.parse({"offload": "model"}), AMX)
    with pytest.raises(ValueError, match="offload must be one of 'none', 'model', "
                                         "'sequential', not 'layer'"):
        DiffusersOptions.parse({"offload": "layer"})
