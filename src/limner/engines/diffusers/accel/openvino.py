"""OpenVINO for the diffusers engine: the UNet, the tiny decoder and the CLIP text encoder
run as compiled OpenVINO models behind objects the diffusers pipeline calls like the torch
modules they replace.

The only module that imports openvino (an optional extra). Converting a UNet takes about a
minute and ~10 GB of RAM, so each converted model is saved as IR under the cache folder,
keyed by everything that changes it, and read back on later loads (its speed against torch
is in `docs/performance.md`). Static shapes are much faster than dynamic ones, so each
component compiles one model per input shape (a few shapes at most: batch size and draw
size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from limner.engines.base import EngineError
from limner.engines.diffusers.accel.weight_cache import component_folder, save_folder, weight_files

log = logging.getLogger("limner.engines.openvino")

LAYOUT = "limner-ov-1"
"""Version of the wrappers' input/output layout below: part of the cache key, so changing
what a wrapper feeds the converted model never reuses an old IR."""
MAX_SHAPES = 4
"""Compiled models kept per component; each shape is (batch, latent height, width)."""


def convert_model(module: torch.nn.Module, example_input: tuple[torch.Tensor, ...]) -> ov.Model:
    """`ov.convert_model` with dynamic shapes (a module-level function so tests can forbid
    it, to prove a cached IR was used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent branches
        return ov.convert_model(module, example_input=example_input)


@dataclass
class Output:
    """Stands in for diffusers' `UNet2DConditionOutput`/`DecoderOutput` (`.sample`)."""

    sample: torch.Tensor


class Runner:
    """One converted model, compiled lazily per static input shape."""

    def __init__(self, core: ov.Core, model: ov.Model, compile_config: Mapping[str, Any],
                 name: str) -> None:
        self.core = core
        self.model = model
        self.compile_config = dict(compile_config)
        self.name = name
        self.input_names = [port.get_any_name() for port in model.inputs]
        self._compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        arrays = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        key = tuple(arrays[name].shape for name in self.input_names)
        compiled = self._compiled.get(key)
        if compiled is None:
            model = self.model.clone()
            model.reshape({name: ov.PartialShape(list(shape))
                           for name, shape in zip(self.input_names, key, strict=True)})
            compiled = self.core.compile_model(model, "CPU", self.compile_config)
            log.info("compiled %s for shapes %s", self.name, key)
            self._compiled[key] = compiled
            while len(self._compiled) > MAX_SHAPES:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return np.asarray(compiled(arrays)[0])


def _tensor(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(device=like.device)


class OVUNet:
    """Called by StableDiffusionPipeline exactly as it calls a `UNet2DConditionModel`."""

    def __init__(self, runner: Runner, config: Any) -> None:
        self.runner = runner
        self.config = config
        self.dtype = torch.float32
        self.device = torch.device("cpu")

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
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
        out = _tensor(self.runner(inputs), sample)
        return (out,) if not return_dict else Output(out)


class OVTinyAutoencoder:
    """An `AutoencoderTiny` whose `decode` runs in OpenVINO (text-to-image needs no encoder)."""

    def __init__(self, runner: Runner, config: Any) -> None:
        self.runner = runner
        self.config = config
        self.dtype = torch.float32
        self.device = torch.device("cpu")

    def decode(self, latents: torch.Tensor, generator: torch.Generator | None = None,
               return_dict: bool = True) -> Output | tuple[torch.Tensor]:
        out = _tensor(self.runner({"latents": latents.float().cpu().numpy()}), latents)
        return (out,) if not return_dict else Output(out)


class OVTextEncoder:
    """A `CLIPTextModel` as `encode_prompt` calls it: `text_encoder(ids, attention_mask=None)[0]`
    is the last hidden state."""

    def __init__(self, runner: Runner, config: Any) -> None:
        self.runner = runner
        self.config = config
        self.dtype = torch.float32
        self.device = torch.device("cpu")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 output_hidden_states: bool | None = None, **_: Any) -> tuple[torch.Tensor]:
        if attention_mask is not None or output_hidden_states:
            raise EngineError("the openvino text encoder has no attention mask or clip skip")
        ids = input_ids.to(torch.int64).cpu().numpy()
        return (_tensor(self.runner({"input_ids": ids}), input_ids),)


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
              files: list[tuple[str, int, int]]) -> str:
    """Hash of what decides the converted model: the weights (by size and mtime), the
    component's config, the OpenVINO version and this module's wrapper layout."""
    doc = {"source": source, "component": component, "config": dict(config), "files": files,
           "openvino": ov.get_version(), "layout": LAYOUT}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class OpenVINORuntime:
    """Converts (or reads cached IR of) pipeline components and wraps them for the pipeline."""

    def __init__(self, cache_dir: Path | None, threads: int | None, precision: str) -> None:
        self.cache_dir = cache_dir
        self.core = ov.Core()
        self.compile_config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_PRECISION_HINT": precision}
        if threads:
            self.compile_config["INFERENCE_NUM_THREADS"] = threads
        self.converted: list[str] = []
        """Components converted in this load (the rest came from the IR cache)."""

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
        model = self._model("unet", source, component_folder(source, "unet", unet),
                            _config_dict(config), wrapper, example)
        return OVUNet(Runner(self.core, model, self.compile_config, "unet"), config)

    def tiny_decoder(self, tiny: Any, source: str) -> OVTinyAutoencoder:
        config = tiny.config
        example = (torch.randn(1, int(config.latent_channels), 8, 8),)
        model = self._model("tiny_decoder", source, component_folder(source, None, tiny),
                            _config_dict(config), _TinyDecode(tiny.decoder), example)
        return OVTinyAutoencoder(Runner(self.core, model, self.compile_config, "tiny_decoder"),
                                 config)

    def text_encoder(self, encoder: Any, source: str,
                     max_length: int) -> OVTextEncoder:
        config = encoder.config
        example = (torch.ones(1, max_length, dtype=torch.int64),)
        model = self._model("text_encoder", source,
                            component_folder(source, "text_encoder", encoder),
                            _config_dict(config), _TextForward(encoder), example)
        return OVTextEncoder(Runner(self.core, model, self.compile_config, "text_encoder"),
                             config)

    def _model(self, component: str, source: str, folder: Path | None,
               config: Mapping[str, Any], wrapper: torch.nn.Module,
               example: tuple[torch.Tensor, ...]) -> ov.Model:
        """The cached IR when there is one; else convert, save (atomically) and read back,
        so a first load runs the very same model as later ones."""
        if self.cache_dir is None:
            log.info("converting %s to OpenVINO (no cache folder: not saved)", component)
            self.converted.append(component)
            return self._convert(wrapper, example)
        key = cache_key(source, component, config, weight_files(folder))
        target = self.cache_dir / f"{component}-{key}"
        xml = target / "model.xml"
        if xml.is_file():
            log.info("%s: using the cached OpenVINO IR in %s", component, target)
            return self.core.read_model(xml)
        log.info("%s: converting to OpenVINO (about a minute for a full-size UNet); "
                 "the IR goes to %s", component, target)
        model = self._convert(wrapper, example)
        # fp16 weights on disk (half the size); they are widened again at compile time
        save_folder(target, lambda staging: ov.save_model(model, staging / "model.xml",
                                                          compress_to_fp16=True))
        self.converted.append(component)
        return self.core.read_model(xml)

    @staticmethod
    def _convert(wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> ov.Model:
        with torch.no_grad():
            return convert_model(wrapper.eval(), example)
