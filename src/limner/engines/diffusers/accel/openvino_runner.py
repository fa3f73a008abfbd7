"""How limner runs a converted OpenVINO model: `Runner` compiles one per static input shape
(static shapes are much faster than dynamic ones) and keeps the last few, and `Stand` and
`Output` are what the wrappers that stand in for torch modules share."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov
import torch

log = logging.getLogger("limner.engines.openvino")

MAX_SHAPES = 4
"""Compiled models kept per component; each shape is (batch, latent height, width)."""


@dataclass
class Output:
    """Stands in for diffusers' `UNet2DConditionOutput`/`DecoderOutput` (`.sample`)."""

    sample: torch.Tensor

    def __getitem__(self, index: int) -> torch.Tensor:
        """diffusers' outputs also index as tuples (Z-Image's inpainting reads `[0]`)."""
        return (self.sample,)[index]


class Runner:
    """One converted model, compiled lazily per static input shape."""

    def __init__(self, core: ov.Core, model: ov.Model, compile_config: Mapping[str, Any],
                 name: str) -> None:
        self.core = core
        self.model = model
        self.compile_config = dict(compile_config)
        self.name = name
        self.input_names = input_names(model)
        self._compiled: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()
        self.recorded: list[dict[str, np.ndarray]] | None = None
        """While a list, every call's inputs are appended to it (int8 calibration)."""

    def replace(self, model: ov.Model) -> None:
        """Run `model` from now on (the int8 one), compiling it anew per shape."""
        self.model = model
        self.input_names = input_names(model)
        self._compiled.clear()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        arrays = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        if self.recorded is not None:
            self.recorded.append({name: array.copy() for name, array in arrays.items()})
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


def input_names(model: ov.Model) -> list[str]:
    """Each input's name: the one `name_inputs` gave it where it did (a port can carry the
    tracer's numbered names beside it), else any."""
    names = []
    for port in model.inputs:
        given = sorted(name for name in port.get_names() if not name.isdigit())
        names.append(given[0] if given else port.get_any_name())
    return names


def to_torch(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A compiled model's output as a tensor on the device of the call's input."""
    return torch.from_numpy(array).to(device=like.device)


class Stand:
    """What pipelines read off the torch module a wrapper stands in for, beyond its call:
    its dtype and device, `modules()` (which diffusers walks for offloading hooks: none
    here), and `to()` (SDXL's edit pipelines upcast their VAE: a compiled model stays as it
    is)."""

    dtype = torch.float32
    device = torch.device("cpu")

    def modules(self) -> Iterator[torch.nn.Module]:
        return iter(())

    def to(self, *args: Any, **kwargs: Any) -> Stand:
        return self
