"""OpenVINO for the diffusers engine: the UNet, the tiny decoder and the CLIP text encoder
of Stable Diffusion, and the denoiser and VAE decoder of the other families that convert
(`OVDenoiser` in `openvino_calls`, `OVDecoder` here), run as compiled OpenVINO models behind
objects the diffusers pipeline calls like the torch modules they replace. `OpenVINORuntime`
converts, caches and quantizes them all.

This module and its two siblings (`openvino_calls`, `openvino_runner`) are the only ones
that import openvino (an optional extra). Converting a UNet takes about a minute and ~10 GB
of RAM, so each converted model is saved as IR under the cache folder, keyed by everything
that changes it, and read back on later loads (its speed against torch is in
`docs/performance.md`). Static shapes are much faster than dynamic ones, so each component
compiles one model per input shape (`Runner`: a few shapes at most, batch size and draw
size).

With `quantize = "int8"` the converted models are then quantized once with NNCF's
post-training quantization, from inputs recorded while the engine draws a few fixed prompts
and seeds (`calibration_requests`), and the int8 IR is cached beside the converted ones,
keyed by the converted model's key and by everything that decides the calibration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from limner.engines.base import EngineError
from limner.engines.diffusers.accel.openvino_calls import (
    OVDenoiser,
    OVEncoder,
    name_inputs,
)
from limner.engines.diffusers.accel.openvino_runner import Output, Runner, Stand, to_torch
from limner.engines.diffusers.accel.weight_cache import component_folder, save_folder, weight_files
from limner.jobs import GenerationParams

log = logging.getLogger("limner.engines.openvino")

LAYOUT = "limner-ov-1"
"""Version of the wrappers' input/output layout below: part of the cache key, so changing
what a wrapper feeds the converted model never reuses an old IR."""
INT8_RECIPE = "limner-int8-4"
"""Version of how `quantize_model` quantizes: part of the int8 cache key, so changing the
recipe never reuses an int8 IR made by the old one."""
INT8_PARTS = ("unet", "transformer", "tiny_decoder")
"""The components `quantize = "int8"` quantizes, where int8 pays: the UNet (most of an
image's time) and the tiny decoder (much faster, little error). Not the CLIP text encoder: a
small share of an image, cached per prompt, while its int8 error reaches every UNet input
(measurements in `docs/performance.md`). A family's transformer is quantized as a UNet is."""
KEPT_IN_FLOAT = {
    "f32": re.compile(r"conv_shortcut|\.to_out\.|\.proj_(in|out)/|samplers\.|\.ff\.net\.2/"
                      r"|up_blocks\.\d+\.resnets\.\d+\.conv2/"),
    "bf16": re.compile(r"conv_shortcut"),
}
"""Per precision, the UNet layers `quantize_model` leaves in floating point besides the first
and last convolution (by name). In f32: those whose int8 error was largest for the time int8
saved on them, found by a sweep kept in `benchmarks/results/2026-12-01-int8-recipe/`. In
bf16, whose own rounding already costs these UNets more than int8 does, keeping them buys
little accuracy for much of int8's gain, so only the skip convolutions stay (the figures of
both are in that folder and in `.../2026-11-30-int8/`)."""
CALIBRATION_PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "portrait of an old fisherman, detailed photograph",
    "a bowl of ramen, studio lighting",
    "a red fox in fresh snow",
    "isometric city block, pixel art",
    "a watercolour map of an island",
    "a robot reading in a library, cinematic",
    "macro photograph of a dew-covered leaf",
)
"""Calibration prompts, drawn in turn with seeds 0, 1, 2, ...: fixed, so that a calibration
is the same on every machine and its description can key the cache."""


def convert_model(module: torch.nn.Module, example_input: tuple[torch.Tensor, ...]) -> ov.Model:
    """`ov.convert_model` with dynamic shapes (a module-level function so tests can forbid
    it, to prove a cached IR was used). The trace is not run a second time to compare
    graphs: that is another pass of a multi-GB transformer at load, it fails modules that
    cache their position tables at the first call, and the tests compare the converted
    model's pixels with torch's instead."""
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent branches
        decoder = TorchScriptPythonDecoder(module, example_input=example_input,
                                           trace_kwargs={"check_trace": False})
        return ov.convert_model(decoder, example_input=example_input)


def quantize_model(model: ov.Model, samples: Sequence[Mapping[str, np.ndarray]],
                   component: str, precision: str = "f32") -> ov.Model:
    """NNCF's post-training int8 quantization of `model` from recorded inputs (a
    module-level function so tests can forbid it, to prove a cached int8 IR was used).

    The transformer model type keeps NNCF from quantizing what int8 breaks in attention
    (softmax and the products of two activations stay in floating point); SmoothQuant is left
    off (it gained nothing). Three kinds of convolution stay in floating point, where one int8
    scale cannot hold what they read: the first (latents whose range moves with the
    timestep), the last, and the 1x1 skip convolutions (`conv_shortcut`: a skip connection
    concatenated with the upsampled path, two ranges). In f32 so do the transformer blocks'
    input and output projections, their feed-forward outputs, the down and up samplers and
    the up blocks' second ResNet convolutions (`KEPT_IN_FLOAT`). What each choice cost and
    gained is in `benchmarks/results/2026-11-30-int8/` and `.../2026-12-01-int8-recipe/`."""
    import nncf

    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() == "Convolution"]
    layers = [op.get_friendly_name() for op in model.get_ordered_ops()
              if op.get_type_name() in ("Convolution", "MatMul")]
    names = [name for name in layers if name in (convolutions[0], convolutions[-1])
             or KEPT_IN_FLOAT[precision].search(name)] if convolutions else []
    kept = nncf.IgnoredScope(names=names) if names else None
    advanced = nncf.AdvancedQuantizationParameters(smooth_quant_alpha=-1)
    log.debug("%s: keeping %s in floating point", component, kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nncf.quantize(model, nncf.Dataset(list(samples)), subset_size=len(samples),
                             model_type=nncf.ModelType.TRANSFORMER,
                             preset=nncf.QuantizationPreset.MIXED, ignored_scope=kept,
                             advanced_parameters=advanced)


def calibration_requests(samples: int, step_counts: Sequence[int],
                         size: int) -> list[GenerationParams]:
    """The calibration draws: one image each, at the native size, a fixed prompt and seed
    each, the step counts of the quality levels in turn, so that the UNet meets the
    timesteps a served image meets."""
    return [GenerationParams(prompt=CALIBRATION_PROMPTS[i % len(CALIBRATION_PROMPTS)],
                             width=size, height=size, seeds=(i,),
                             steps=step_counts[i % len(step_counts)])
            for i in range(samples)]


def nncf_version() -> str:
    """NNCF's version without importing it (the import takes seconds): a cache key part."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:
        return "not installed"


class OVUNet(Stand):
    """Called by StableDiffusionPipeline exactly as it calls a `UNet2DConditionModel`; as
    with a torch module, a call goes through `forward`, so that whatever wraps a part's
    `forward` (the benchmarks' timers and recorders) wraps this one too."""

    def __init__(self, runner: Runner, config: Any) -> None:
        self.runner = runner
        self.config = config

    def __call__(self, *args: Any, **kwargs: Any) -> Output | tuple[torch.Tensor]:
        out: Output | tuple[torch.Tensor] = self.forward(*args, **kwargs)
        return out

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                 encoder_hidden_states: torch.Tensor, timestep_cond: torch.Tensor | None = None,
                 cross_attention_kwargs: Mapping[str, Any] | None = None,
                 added_cond_kwargs: Mapping[str, Any] | None = None, return_dict: bool = True,
                 **unsupported: Any) -> Output | tuple[torch.Tensor]:
        if added_cond_kwargs or cross_attention_kwargs or any(
                v is not None for v in unsupported.values()):
            raise EngineError("the openvino backend runs the plain UNet only (no IP-Adapter, "
                              "LoRA scale or ControlNet inputs)")
        batch = sample.shape[0]
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(batch)
        inputs = {"sample": sample.float().cpu().numpy(),
                  "timestep": steps.contiguous().numpy(),
                  "encoder_hidden_states": encoder_hidden_states.float().cpu().numpy()}
        if timestep_cond is not None:
            inputs["timestep_cond"] = timestep_cond.float().cpu().numpy()
        out = to_torch(self.runner(inputs), sample)
        return (out,) if not return_dict else Output(out)


class OVTinyAutoencoder(Stand):
    """An `AutoencoderTiny` whose `decode` runs in OpenVINO; `encode`, which only edits call
    (once a picture, against a decode every step for previews), stays torch's."""

    def __init__(self, runner: Runner, config: Any, encode: Any) -> None:
        self.runner = runner
        self.config = config
        self._encode = encode

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        return self._encode(x.float(), return_dict=return_dict)

    def decode(self, latents: torch.Tensor, generator: torch.Generator | None = None,
               return_dict: bool = True) -> Output | tuple[torch.Tensor]:
        out = to_torch(self.runner({"latents": latents.float().cpu().numpy()}), latents)
        return (out,) if not return_dict else Output(out)


class OVTextEncoder(Stand):
    """A `CLIPTextModel` as `encode_prompt` calls it: `text_encoder(ids, attention_mask=None)[0]`
    is the last hidden state (through `forward`, as `OVUNet`)."""

    def __init__(self, runner: Runner, config: Any) -> None:
        self.runner = runner
        self.config = config

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor]:
        out: tuple[torch.Tensor] = self.forward(*args, **kwargs)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 output_hidden_states: bool | None = None, **_: Any) -> tuple[torch.Tensor]:
        if attention_mask is not None or output_hidden_states:
            raise EngineError("the openvino text encoder has no attention mask or clip skip")
        ids = input_ids.to(torch.int64).cpu().numpy()
        return (to_torch(self.runner({"input_ids": ids}), input_ids),)


class OVDecoder(Stand):
    """A VAE (AutoencoderKL, AutoencoderDC, ...) whose `decode` runs in OpenVINO; `encode`
    stays torch's (an edit calls it once a picture), as `OVTinyAutoencoder`'s does."""

    def __init__(self, runner: Runner, vae: Any) -> None:
        self.runner = runner
        self.config = vae.config
        self._vae = vae

    def __getattr__(self, name: str) -> Any:
        """Whatever else a pipeline reads off its VAE (FLUX.2's latent statistics `bn`, a
        VAE's scale factors) is the torch VAE's."""
        vae = self.__dict__.get("_vae")
        if vae is None:
            raise AttributeError(name)
        return getattr(vae, name)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        return self._vae.encode(x.to(self._vae.dtype), return_dict=return_dict)

    def decode(self, latents: torch.Tensor, return_dict: bool = True,
               **_: Any) -> Output | tuple[torch.Tensor]:
        # The one input, under whatever name the converter gave it (Qwen-Image's: input.1).
        name = self.runner.input_names[0]
        out = to_torch(self.runner({name: latents.float().cpu().numpy()}), latents)
        return (out,) if not return_dict else Output(out)


class _Decode(torch.nn.Module):
    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.vae.decode(latents, return_dict=False)[0]
        return out


@contextlib.contextmanager
def _nearest_upsampling(vae: torch.nn.Module) -> Iterator[None]:
    """OpenVINO has no "nearest-exact" upsampling (Qwen-Image's VAE asks for it); at the
    integer factor of 2 these decoders upsample by, "nearest" picks the same pixels."""
    exact: list[Any] = [module for module in vae.modules()
                        if getattr(module, "mode", None) == "nearest-exact"]
    for module in exact:
        module.mode = "nearest"
    try:
        yield
    finally:
        for module in exact:
            module.mode = "nearest-exact"


class _UNetForward(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                      return_dict=False)[0]
        return out


class _UNetCondForward(torch.nn.Module):
    """For LCM-style UNets that take a guidance embedding (`time_cond_proj_dim`)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, timestep_cond: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                      timestep_cond=timestep_cond, return_dict=False)[0]
        return out


class _TinyDecode(torch.nn.Module):
    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(latents)
        return out


class _TextForward(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(input_ids, return_dict=False)[0]
        return out


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):  # transformers' PretrainedConfig
        return dict(config.to_dict())
    return dict(config)


def cache_key(source: str, component: str, config: Mapping[str, Any],
              files: list[tuple[str, int, int]], stored: str = "f16",
              variant: Any = None) -> str:
    """Hash of what decides the converted model: the weights (by size and mtime), the
    component's config, the OpenVINO version, this module's wrapper layout, the type
    its weights are stored in, and what changed the weights after loading (`variant`: the
    static LoRAs fused in; left out of the hash when None, so older keys stay valid)."""
    doc = {"source": source, "component": component, "config": dict(config), "files": files,
           "openvino": ov.get_version(), "layout": LAYOUT, "stored": stored}
    if variant is not None:
        doc["variant"] = variant
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def int8_key(converted_key: str, calibration: Mapping[str, Any]) -> str:
    """Hash of what decides an int8 model: the converted model's key, the calibration (its
    draws and everything that shapes the recorded inputs: the pipeline's other files, the
    scheduler, the precision it ran in), NNCF's version and the recipe."""
    doc = {"converted": converted_key, "calibration": dict(calibration),
           "nncf": nncf_version(), "recipe": INT8_RECIPE}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class OpenVINORuntime:
    """Converts (or reads cached IR of) pipeline components and wraps them for the pipeline."""

    def __init__(self, cache_dir: Path | None, threads: int | None, precision: str,
                 calibration: Mapping[str, Any] | None = None, variant: Any = None) -> None:
        self.cache_dir = cache_dir
        self.variant = variant
        """Part of the UNet's and text encoder's keys: the static LoRAs fused into them."""
        self.calibration = dict(calibration) if calibration is not None else None
        """What decides the int8 calibration (see `int8_key`); None: no int8."""
        self.core = ov.Core()
        self.precision = "f32" if precision == "f32" else "bf16"
        self.stored = "f32" if self.precision == "f32" else "f16"
        """The IR's weight type on disk. In f32, weights stored as fp16 stay fp16 in the
        compiled matrix products and are widened on every call, which CPUs without AVX512
        pay for (docs/performance.md); in bf16 they are narrowed anyway, so fp16 files cost
        nothing there and take half the disk."""
        self.compile_config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_PRECISION_HINT": precision}
        if threads:
            self.compile_config["INFERENCE_NUM_THREADS"] = threads
        self.converted: list[str] = []
        """Components converted in this load (the rest came from the IR cache)."""
        self.int8_cached: list[str] = []
        """Components whose int8 IR came from the cache in this load."""
        self.quantized: list[str] = []
        """Components quantized in this load."""
        self.pending: list[tuple[str, Runner, Path | None]] = []
        """(component, its runner, where its int8 IR goes): still to quantize, once the
        engine has recorded their inputs (`quantize_pending`)."""
        self.denoisers: list[OVDenoiser] = []
        """The denoisers made (`denoiser`), each converted at its first call."""
        self.recording = False
        """True while the engine draws to calibrate: a runner made then (an `OVDenoiser`'s,
        converted at its first call) records from its first input on."""

    def unet(self, unet: Any, source: str) -> OVUNet:
        config = unet.config
        cross = int(config.cross_attention_dim if isinstance(config.cross_attention_dim, int)
                    else config.cross_attention_dim[0])
        size = 8
        example: tuple[torch.Tensor, ...] = (
            torch.randn(1, int(config.in_channels), size, size), torch.tensor([999.0]),
            torch.randn(1, 77, cross))
        wrapper: torch.nn.Module = _UNetForward(unet)
        if config.time_cond_proj_dim is not None:
            example = (*example, torch.randn(1, int(config.time_cond_proj_dim)))
            wrapper = _UNetCondForward(unet)
        runner = self._runner("unet", source, component_folder(source, "unet", unet),
                              _config_dict(config), wrapper, example)
        return OVUNet(runner, config)

    def tiny_decoder(self, tiny: Any, source: str) -> OVTinyAutoencoder:
        """The tiny decoder in OpenVINO, converted in float32 whatever dtype torch loaded it
        in (a bf16 plan loads it in bf16); its encoder stays in torch, fed float32."""
        config = tiny.config
        tiny = tiny.float()
        example = (torch.randn(1, int(config.latent_channels), 8, 8),)
        runner = self._runner("tiny_decoder", source, component_folder(source, None, tiny),
                              _config_dict(config), _TinyDecode(tiny.decoder), example)
        return OVTinyAutoencoder(runner, config, tiny.encode)

    def text_encoder(self, encoder: Any, source: str,
                     max_length: int) -> OVTextEncoder:
        config = encoder.config
        example = (torch.ones(1, max_length, dtype=torch.int64),)
        runner = self._runner("text_encoder", source,
                              component_folder(source, "text_encoder", encoder),
                              _config_dict(config), _TextForward(encoder), example)
        return OVTextEncoder(runner, config)

    def denoiser(self, module: torch.nn.Module, source: str, component: str) -> OVDenoiser:
        """A family's denoiser, converted at its first call (`OVDenoiser`)."""
        denoiser = OVDenoiser(self, module, source, component)
        self.denoisers.append(denoiser)
        return denoiser

    def encoder(self, module: torch.nn.Module, source: str, component: str) -> OVEncoder:
        """A family's text encoder, converted at its first call (`OVEncoder`)."""
        encoder = OVEncoder(self, module, source, component)
        self.denoisers.append(encoder)
        return encoder

    def waiting(self) -> bool:
        """True while a denoiser is still to be converted, at its first call."""
        return any(denoiser.module is not None for denoiser in self.denoisers
                   if not isinstance(denoiser, OVEncoder))

    def call_runner(self, component: str, source: str, module: torch.nn.Module,
                    wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...],
                    names: Sequence[str], layout: str) -> Runner:
        """The runner of a module converted from one call (`OVDenoiser`), keyed also by how
        that call was laid out; left to quantize where int8 is asked, recording from the
        call that made it on while the engine calibrates."""
        config = {**_config_dict(module.config), "call layout": layout}
        runner = self._runner(component, source, component_folder(source, component, module),
                              config, wrapper, example, names)
        if self.recording and runner.recorded is None \
                and any(part[1] is runner for part in self.pending):
            runner.recorded = []
        return runner

    def vae_decoder(self, vae: Any, source: str,
                    encode_dtype: torch.dtype = torch.float32) -> OVDecoder:
        """A VAE whose decoder runs in OpenVINO (converted in float32 from a small latent
        grid); its torch encoder is left in `encode_dtype`, the dtype of the latents the
        denoiser takes (float32 for a converted one)."""
        config = vae.config
        if getattr(config, "z_dim", None):  # a video VAE (Qwen-Image's): one frame
            example = (torch.randn(1, int(config.z_dim), 1, 8, 8),)
        else:
            channels = int(getattr(config, "latent_channels", 4) or 4)
            example = (torch.randn(1, channels, 8, 8),)
        with _nearest_upsampling(vae):
            try:
                runner = self._runner("vae_decoder", source,
                                      component_folder(source, "vae", vae),
                                      _config_dict(config), _Decode(vae.float()), example)
            finally:
                vae.to(encode_dtype)
        return OVDecoder(runner, vae)

    def _runner(self, component: str, source: str, folder: Path | None,
                config: Mapping[str, Any], wrapper: torch.nn.Module,
                example: tuple[torch.Tensor, ...],
                names: Sequence[str] | None = None) -> Runner:
        """The component's runner: on its cached int8 IR where int8 is asked and one is
        there (no conversion then), else on the converted model, which is then left to
        quantize (`pending`) where int8 is asked."""
        key = cache_key(source, component, config, weight_files(folder), self.stored,
                        None if component == "tiny_decoder" else self.variant)
        int8 = self.calibration is not None and component in INT8_PARTS
        target = None
        if int8 and self.cache_dir is not None and self.calibration is not None:
            target = self.cache_dir / f"{component}-int8-{int8_key(key, self.calibration)}"
            if (target / "model.xml").is_file():
                log.info("%s: using the cached int8 OpenVINO IR in %s", component, target)
                self.int8_cached.append(component)
                return Runner(self.core, self.core.read_model(target / "model.xml"),
                              self.compile_config, component)
        runner = Runner(self.core, self._model(component, key, wrapper, example, names),
                        self.compile_config, component)
        if int8:
            self.pending.append((component, runner, target))
        return runner

    def quantize_pending(self) -> None:
        """Quantize each pending component from the inputs its runner recorded, save the
        int8 IR (atomically) and run the saved one, as later loads will."""
        for component, runner, target in self.pending:
            samples = runner.recorded or []
            runner.recorded = None
            if not samples:  # a tiny decoder that only draws previews: not met
                log.info("%s: no calibration draw reached it; left in floating point",
                         component)
                continue
            log.info("%s: quantizing to int8 with NNCF from %d recorded inputs", component,
                     len(samples))
            model = quantize_model(runner.model, samples, component, self.precision)
            if target is not None:
                save_folder(target, partial(_save_ir, model, stored=self.stored))
                model = self.core.read_model(target / "model.xml")
            runner.replace(model)
            self.quantized.append(component)
        self.pending = []

    def _model(self, component: str, key: str, wrapper: torch.nn.Module,
               example: tuple[torch.Tensor, ...],
               names: Sequence[str] | None = None) -> ov.Model:
        """The cached IR when there is one; else convert, save (atomically) and read back,
        so a first load runs the very same model as later ones."""
        if self.cache_dir is None:
            log.info("converting %s to OpenVINO (no cache folder: not saved)", component)
            self.converted.append(component)
            return self._convert(wrapper, example, names)
        target = self.cache_dir / f"{component}-{key}"
        xml = target / "model.xml"
        if xml.is_file():
            log.info("%s: using the cached OpenVINO IR in %s", component, target)
            return self.core.read_model(xml)
        log.info("%s: converting to OpenVINO (about a minute for a full-size UNet); "
                 "the IR goes to %s", component, target)
        model = self._convert(wrapper, example, names)
        save_folder(target, partial(_save_ir, model, stored=self.stored))
        self.converted.append(component)
        return self.core.read_model(xml)

    @staticmethod
    def _convert(wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...],
                 names: Sequence[str] | None = None) -> ov.Model:
        with torch.no_grad():
            model = convert_model(wrapper.eval(), example)
        if names is not None:
            name_inputs(model, names)
        return model


def _save_ir(model: ov.Model, folder: Path, stored: str) -> None:
    """IR with its floating-point weights in `stored` ("f16": half the size); an int8
    model's int8 weights stay int8 either way."""
    ov.save_model(model, folder / "model.xml", compress_to_fp16=stored == "f16")
