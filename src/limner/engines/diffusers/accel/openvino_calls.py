"""Denoisers and text encoders converted to OpenVINO at their first call, from the call's
own arguments (`OVDenoiser`, `OVEncoder`): a call is flattened into named tensors and a
layout that puts them back (`flatten_call`), traced through a module taking exactly those
tensors (`call_forward`), and later calls laid out the same way run the converted model."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import openvino as ov
import torch

from limner.engines.diffusers.accel.openvino_runner import Output, Runner, Stand, to_torch
from limner.engines.diffusers.accel.traceable import REWRITES_VERSION, rewrite_for

if TYPE_CHECKING:
    from limner.engines.diffusers.accel.openvino import OpenVINORuntime

log = logging.getLogger("limner.engines.openvino")


Layout = tuple[tuple[str, str, Any], ...]
"""How a call's arguments map to a converted model's inputs: per argument, its name, its kind
(`tensor`, `list` or `dict` of tensors, or `constant`) and the input names it fills (or, for a
constant, its value)."""


def flatten_call(arguments: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], Layout]:
    """A call's tensors by input name (a list's items as `name.0`, a dict's as `name.key`),
    and the layout that puts them back; whatever else the call passes is a constant of the
    converted model."""
    tensors: dict[str, torch.Tensor] = {}
    layout: list[tuple[str, str, Any]] = []
    for name, value in arguments.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value
            layout.append((name, "tensor", name))
        elif isinstance(value, (list, tuple)) and value \
                and all(isinstance(item, torch.Tensor) for item in value):
            keys = tuple(f"{name}.{i}" for i in range(len(value)))
            tensors.update(zip(keys, value, strict=True))
            layout.append((name, "list", keys))
        elif isinstance(value, dict) and value \
                and all(isinstance(item, torch.Tensor) for item in value.values()):
            pairs = tuple((key, f"{name}.{key}") for key in value)
            tensors.update({input_name: value[key] for key, input_name in pairs})
            layout.append((name, "dict", pairs))
        else:
            layout.append((name, "constant", value))
    return tensors, tuple(layout)


def describe_layout(layout: Layout, tensors: Mapping[str, torch.Tensor]) -> str:
    """The layout with each input's dtype and rank: what a converted model was made for (a
    cache key part, and what a later call is compared with)."""
    kinds = {name: (str(tensor.dtype), tensor.ndim) for name, tensor in tensors.items()}
    return json.dumps([(name, kind, value) for name, kind, value in layout] + [kinds],
                      default=repr, sort_keys=True)


def _as_input(tensor: torch.Tensor) -> torch.Tensor:
    """Floating-point inputs go in as float32 (the precision hint decides the compute), and
    a 0-d one (SDXL's timestep) as a 1-d one, which UNets broadcast over the batch: the
    converter bakes a 0-d input's expansion into shapes that fit one batch size only."""
    tensor = tensor.float() if tensor.is_floating_point() else tensor
    return tensor.reshape(1) if tensor.ndim == 0 else tensor


class CallForward(torch.nn.Module):
    """A module called with the flattened tensors of one call layout: `forward` takes them as
    positional arguments `x0, x1, ...` (made per layout by `call_forward`, since the
    converter names a model's inputs after its forward's parameters), rebuilds the call's
    arguments and returns its first output."""

    def __init__(self, module: torch.nn.Module, names: Sequence[str], layout: Layout) -> None:
        super().__init__()
        self.module = module
        self.names = list(names)
        self.layout = layout

    def call(self, flat: tuple[torch.Tensor, ...]) -> torch.Tensor:
        tensors = dict(zip(self.names, flat, strict=True))
        arguments: dict[str, Any] = {}
        for name, kind, value in self.layout:
            if kind == "tensor":
                arguments[name] = tensors[value]
            elif kind == "list":
                arguments[name] = [tensors[key] for key in value]
            elif kind == "dict":
                arguments[name] = {key: tensors[input_name] for key, input_name in value}
            else:
                arguments[name] = value
        out: torch.Tensor = self.module(**arguments, return_dict=False)[0]
        return out


def call_forward(module: torch.nn.Module, names: Sequence[str],
                  layout: Layout) -> CallForward:
    """A `CallForward` whose `forward` has one named parameter per input."""
    parameters = ", ".join(f"x{i}" for i in range(len(names)))
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {parameters}):\n    return self.call(({parameters},))",
         namespace)
    kind = type("CallForward", (CallForward,), {"forward": namespace["forward"]})
    wrapper: CallForward = kind(module, names, layout)
    return wrapper


def name_inputs(model: ov.Model, names: Sequence[str]) -> None:
    """Give each input of a model converted from `call_forward` its input name alone."""
    for port in model.inputs:
        given = [name for name in port.get_names() if re.fullmatch(r"x\d+", name)]
        if given:
            port.get_tensor().set_names({names[int(given[0][1:])]})


def conversion_error(exc: BaseException) -> str:
    """What went wrong in a conversion, in a line: the tracer's own exception where
    OpenVINO's message wraps it ("Couldn't get TorchScript module by tracing. Exception:
    ..."), else the exception's first 300 characters."""
    text = str(exc)
    if "\nException:\n" in text:
        text = text.split("\nException:\n", 1)[1].split("\nPlease check", 1)[0]
    return f"{type(exc).__name__}: {text.strip()[:300]}"


class ConversionFailed(RuntimeError):
    """A module could not be converted at its first call (a RuntimeError, as OpenVINO's
    own errors are, so the engine steps down from a denoiser that fails)."""


class OVDenoiser(Stand):
    """A family's denoiser (a diffusers transformer, or a UNet with added conditions such as
    SDXL's) as its pipeline calls it, converted at its first call from that call's own
    arguments: every family's transformer takes other inputs (packed sequences and position
    ids, attention masks, pooled projections, condition dicts, lists of tensors), and the
    call is the one description of them all that cannot go stale. The engine's warm-up makes
    that call at load. The torch module is let go once converted (the IR holds its weights);
    a later call laid out otherwise (another constant, a new input) raises, which the engine
    answers by stepping down to torch."""

    def __init__(self, runtime: OpenVINORuntime, module: torch.nn.Module, source: str,
                 component: str) -> None:
        self.runtime = runtime
        self.module: torch.nn.Module | None = module
        self.source = source
        self.component = component
        self.config = module.config
        if hasattr(module, "add_embedding"):  # SDXL's pipeline reads its input width
            self.add_embedding = module.add_embedding
        self._attributes = {name: value for name, value in vars(module).items()
                            if not name.startswith("_")
                            and isinstance(value, (bool, int, float, str, tuple, type(None)))}
        """The module's plain attributes, which pipelines read off it (Z-Image's
        `in_channels`) after the module itself is let go."""
        self._signature = inspect.signature(module.forward)
        self.rewrite = rewrite_for(module)
        """What the call becomes before it is flattened (`traceable`): itself for most."""
        self._runner: Runner | None = None
        self._layout = ""

    def __getattr__(self, name: str) -> Any:
        attributes = self.__dict__.get("_attributes", {})
        if name in attributes:
            return attributes[name]
        raise AttributeError(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Output | tuple[torch.Tensor]:
        out: Output | tuple[torch.Tensor] = self.forward(*args, **kwargs)
        return out

    @contextlib.contextmanager
    def cache_context(self, name: str) -> Iterator[None]:
        """diffusers' cache hooks (`transformer.cache_context`): none run here."""
        yield

    def forward(self, *args: Any, **kwargs: Any) -> Output | tuple[torch.Tensor]:
        arguments = dict(self._signature.bind(*args, **kwargs).arguments)
        for name, parameter in self._signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
                arguments.update(arguments.pop(name))  # forward(..., **kwargs)
        return_dict = arguments.pop("return_dict", True)
        arguments, finish = self.rewrite.rewrite(arguments)
        tensors, layout = flatten_call(arguments)
        inputs = {name: _as_input(tensor) for name, tensor in tensors.items()}
        described = describe_layout(layout, inputs)
        if self.rewrite.name != "as-called":  # the layout of a call no pipeline makes
            described = f"{REWRITES_VERSION} {self.rewrite.name} {described}"
        if self._runner is None:
            try:
                self._runner = self._convert(inputs, layout, described)
            except Exception as exc:
                raise ConversionFailed(f"OpenVINO cannot convert the {self.component}: "
                                       f"{conversion_error(exc)}") from exc
        elif described != self._layout:
            raise RuntimeError(f"the OpenVINO {self.component} was converted for a call laid "
                               f"out as {self._layout}, not {described}")
        like = next(iter(tensors.values()))
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
        out = finish(to_torch(self._runner(arrays), like))
        return (out,) if not return_dict else Output(out)

    def _convert(self, inputs: Mapping[str, torch.Tensor], layout: Layout,
                 described: str) -> Runner:
        if self.module is None:
            raise RuntimeError(f"the OpenVINO {self.component} has no torch module left")
        # Traced in float32 (the inputs' type); a module that fails goes back as it was.
        original: torch.dtype = getattr(self.module, "dtype", torch.float32)
        module = self.module.float()
        names = list(inputs)
        wrapper = call_forward(self.rewrite.traced(module), names, layout)
        try:
            runner = self.runtime.call_runner(self.component, self.source, module, wrapper,
                                              tuple(inputs.values()), names, described)
        except Exception:
            module.to(original)
            raise
        self.module = None
        self._layout = described
        return runner


class EncoderOutput(tuple[torch.Tensor]):
    """A text encoder's output as pipelines read it: `[0]` or `.last_hidden_state`."""

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self[0]


class OVEncoder(OVDenoiser):
    """A text encoder (T5, Gemma) whose last hidden state the pipeline takes, converted at
    its first call as `OVDenoiser` is; it answers as a transformers model does, with a
    tuple-like output, whatever `return_dict` says."""

    torch_module: torch.nn.Module | None = None
    """The torch encoder, kept where it could not be converted (it then runs as it is: a
    text encoder is worth converting, never worth failing a model for)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.torch_module is not None:
            return self.torch_module(*args, **kwargs)
        module = self.module
        try:
            out = super().forward(*args, **{**kwargs, "return_dict": False})
        except ConversionFailed as exc:
            if module is None:
                raise
            log.warning("%s stays in torch: %s", self.component, exc)
            self.torch_module = module
            return module(*args, **kwargs)
        first = out.sample if isinstance(out, Output) else out[0]
        return EncoderOutput((first,))
