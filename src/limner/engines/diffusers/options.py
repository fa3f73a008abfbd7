"""A diffusers engine's options, parsed once, and every default settled in one place.

`DiffusersOptions.parse` turns a config table into a frozen, typed object; an unknown key or
an ill-typed value is a `ValueError` naming it. `resolve` then decides what the load will do
(device, dtype, layout, packing, fusion, warm-up, int8, weight cache, batch size, per-request
LoRAs) from the options
and a description of the machine, refuses combinations that cannot work, and says why each
choice came out as it did. Both are torch-free, so every combination is tested without a
model. What the load then really runs can differ (a kernel check may turn packing off); the
engine reports that separately.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from limner.jobs import Adapter

QUALITY_LEVELS = ("low", "medium", "high", "xhigh", "max")
BACKENDS = ("auto", "torch", "openvino")
"""`auto`: OpenVINO on a CPU when it is installed, torch everywhere else (why: the default
backend in docs/performance.md)."""
QUANTIZE = ("none", "int8")
"""`quantize = "int8"`: OpenVINO's models quantized once with NNCF from calibration draws."""
DEFAULT_QUANTIZE_SAMPLES = 8
"""Calibration draws for `quantize = "int8"`: each a fixed prompt and seed, at the native
size; enough for the activation ranges of a one-to-four-step model, small enough that
quantizing SD-Turbo's UNet takes minutes once, not tens of them."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile` modes: "reduce-overhead" also replays CUDA graphs, which pays on a GPU
where a one-step model's time goes to launching a thousand small kernels."""
OFFLOAD = ("none", "model", "sequential")
DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
          "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}
DEFAULT_STEPS = {"low": 1, "medium": 2, "high": 4}
"""`xhigh` and `max` follow from `high` unless given: 1.5 and 2 times its steps."""
Dtype = Literal["float32", "bfloat16", "float16"]
LORA_BLOCKERS = ("openvino", "int8", "compile", "prepack", "fuse")
"""Speed-ups under which a LoRA cannot be switched per request: PEFT wraps torch's own
`nn.Linear` layers, which packing and fusion replace with packed copies and which OpenVINO
and torch.compile bake into a graph (static `loras` are fused before any of them)."""


@dataclass(frozen=True)
class DiffusersOptions:
    """What a config may say about a diffusers engine; `None` leaves it to `resolve`."""

    name: str | None = None
    threads: int | None = None
    device: str | None = None
    dtype: str = "auto"
    steps: Mapping[str, int] = field(default_factory=dict)
    guidance: float | None = None
    native_size: int | None = None
    max_batch_images: int | None = None
    tiny_decoder: str | None = None
    decoder: Literal["full", "tiny"] = "full"
    scheduler: Mapping[str, Any] = field(default_factory=dict)
    backend: Literal["auto", "torch", "openvino"] = "auto"
    cache_dir: str | None = None
    compile: bool | str = False
    channels_last: bool | None = None
    cache_weights: bool = True
    warmup: bool | None = None
    prepack: bool | None = None
    fuse: bool | None = None
    quantize: str = "none"
    quantize_samples: int | None = None
    offload: str = "none"
    """On CUDA, `model` keeps each component on the CPU until it runs, `sequential` each
    layer: for a model larger than the card (slower; `model` by far the less so)."""
    loras: tuple[Adapter, ...] = ()
    """LoRAs fused into the weights at load, for every request (`{name, path, scale}` tables;
    the server resolves names to paths)."""
    request_loras: bool | Literal["auto"] = "auto"
    """Whether requests may bring LoRAs of their own: `auto` where no speed-up of
    `LORA_BLOCKERS` runs, `true` turning those off, `false` never."""

    @classmethod
    def parse(cls, table: Mapping[str, Any]) -> DiffusersOptions:
        """From a config table (or keyword arguments), checking every key and type."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown diffusers engine option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        values = dict(table)
        for key, kind in _TYPES.items():
            if key in values and values[key] is not None:
                _check_type(key, values[key], kind)
        if values.get("steps") is None:
            values.pop("steps", None)
        if values.get("scheduler") is None:
            values.pop("scheduler", None)
        values["loras"] = _loras(values.get("loras") or ())
        options = cls(**values)
        options._check_values()
        return options

    def _check_values(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                             f"not {self.backend!r}")
        if self.quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(map(repr, QUANTIZE))}, "
                             f"not {self.quantize!r}")
        if self.decoder not in ("full", "tiny"):
            raise ValueError(f"decoder must be 'full' or 'tiny', not {self.decoder!r}")
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            raise ValueError("compile must be true, false or a torch.compile mode ("
                             f"{', '.join(map(repr, COMPILE_MODES))}), not {self.compile!r}")
        for quality, steps in self.steps.items():
            if quality not in QUALITY_LEVELS or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must map low, medium, high, xhigh and max to positive "
                                 f"integers, not {dict(self.steps)!r}")
        if self.request_loras not in (True, False, "auto"):
            raise ValueError("request_loras must be true, false or 'auto', not "
                             f"{self.request_loras!r}")
        if self.offload not in OFFLOAD:
            raise ValueError(f"offload must be one of {', '.join(map(repr, OFFLOAD))}, not "
                             f"{self.offload!r}")
        for key in ("threads", "native_size", "max_batch_images", "quantize_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be a positive integer, not {value!r}")


_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "threads": int, "device": str, "dtype": str, "steps": Mapping,
    "guidance": (int, float), "native_size": int, "max_batch_images": int,
    "tiny_decoder": str, "decoder": str, "scheduler": Mapping, "backend": str,
    "cache_dir": str, "compile": (bool, str), "channels_last": bool, "cache_weights": bool,
    "warmup": bool, "prepack": bool, "fuse": bool, "quantize": str, "quantize_samples": int,
    "offload": str, "loras": (list, tuple), "request_loras": (bool, str),
}


def _check_type(key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML's true is an int to Python: only a bool field takes it.
    wrong = (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds)
    if wrong:
        expected = _EXPECTED.get(key) or " or ".join(_TYPE_NAMES.get(k, k.__name__)
                                                      for k in kinds)
        raise ValueError(f"{key} must be {expected}, not {value!r}")


_EXPECTED = {"compile": "true, false or a torch.compile mode "
                        f"({', '.join(map(repr, COMPILE_MODES))})",
             "loras": "a list of tables with name, path and scale",
             "request_loras": "true, false or 'auto'"}


def _loras(given: Any) -> tuple[Adapter, ...]:
    """`loras` as `Adapter`s: each a table (or an `Adapter`) with a name and a path, and a
    scale (1 unless given); names are unique, as the pipeline keys its adapters by them."""
    out: list[Adapter] = []
    for index, entry in enumerate(given):
        if isinstance(entry, Adapter):
            entry = {"name": entry.name, "path": entry.path, "scale": entry.scale}
        where = f"loras[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a table with name, path and scale, not "
                             f"{entry!r}")
        unknown = sorted(set(entry) - {"name", "path", "scale"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: name, "
                             "path, scale")
        name, path, scale = entry.get("name"), entry.get("path"), entry.get("scale", 1.0)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name must be a non-empty string, not {name!r}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"{where}.path must be a non-empty string, not {path!r}")
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ValueError(f"{where}.scale must be a number, not {scale!r}")
        if any(lora.name == name for lora in out):
            raise ValueError(f"{where}.name {name!r} is given twice")
        out.append(Adapter(name=name, path=path, scale=float(scale)))
    return tuple(out)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               Mapping: "a table"}


@dataclass(frozen=True)
class Platform:
    """What `resolve` needs to know of the machine; `platform.detect` fills it in."""

    cuda: bool
    """A CUDA device is available."""
    cpu_bf16: bool
    """The CPU has a bf16 fast path (AMX or AVX512-BF16); elsewhere bf16 is emulated, slowly."""
    onednn: bool
    """torch has oneDNN, which packed layers call."""
    onednn_bf16: bool
    """oneDNN runs bf16 here."""
    openvino: bool = False
    """OpenVINO is installed (`limner[openvino]`)."""


@dataclass(frozen=True)
class LoadPlan:
    """Every choice a load makes before it starts, each with its reason in `reasons`."""

    backend: Literal["torch", "openvino"]
    device: str
    dtype: Dtype
    """torch's dtype; with OpenVINO the parts left in torch, kept in float32."""
    openvino_precision: Literal["f32", "bf16"] | None
    channels_last: bool
    prepack: bool
    fuse: bool
    warmup: bool
    cache_weights: bool
    """Whether a folder model's large components are kept in `dtype` under the cache."""
    quantize: Literal["none", "int8"]
    quantize_samples: int
    """Calibration draws for int8 (0 without it)."""
    max_batch_images: int
    steps: Mapping[str, int]
    reasons: tuple[str, ...]
    offload: str = "none"
    request_loras: bool = False
    """Whether requests may bring their own LoRAs (none of `LORA_BLOCKERS` planned)."""

    def describe(self) -> str:
        return "; ".join(self.reasons)


def quality_steps(given: Mapping[str, int]) -> dict[str, int]:
    """Steps for every quality level: `xhigh` and `max` follow from `high` unless given."""
    steps = dict(given)
    steps.setdefault("xhigh", max(steps["high"], round(steps["high"] * 1.5)))
    steps.setdefault("max", max(steps["xhigh"], steps["high"] * 2))
    return steps


def resolve(options: DiffusersOptions, platform: Platform, *,
            model_is_folder: bool = True) -> LoadPlan:
    """The load's choices. Raises `ValueError` for options that exclude each other."""
    reasons: list[str] = []
    backend = _backend(options, platform, reasons)
    openvino = backend == "openvino"
    if options.compile and openvino:
        raise ValueError("compile = true and backend = 'openvino' both compile the UNet: "
                         "choose one")
    _check_request_loras(options)
    # 1. Device and dtype.
    if openvino:
        if options.device not in (None, "cpu"):
            raise ValueError(f"backend = 'openvino' runs on the CPU; device {options.device!r} "
                             "needs backend = 'torch'")
        device = "cpu"
        precision = _openvino_precision(options.dtype, platform)
        dtype: Dtype = "float32"
        reasons.append(f"OpenVINO in {precision}; the parts left in torch in float32")
    else:
        device = options.device or ("cuda" if platform.cuda else "cpu")
        precision = None
        dtype = _torch_dtype(options.dtype, device, platform)
        reasons.append(f"{device} in {dtype}" + (" (auto)" if options.dtype == "auto" else ""))
    cpu, torch_backend = device == "cpu", not openvino
    if options.offload != "none":
        if not device.startswith("cuda"):
            raise ValueError(f"offload = {options.offload!r} moves weights between the CPU and "
                             "a GPU: it needs device = 'cuda'")
        reasons.append(f"offload {options.offload}")
    # 2. Layout: oneDNN's bf16 convolutions and group norms are fastest on NHWC tensors.
    if options.channels_last and not torch_backend:
        raise ValueError("channels_last = true lays out torch's tensors: it needs "
                         "backend = 'torch'")
    channels_last = _default(options.channels_last,
                             torch_backend and cpu and dtype == "bfloat16",
                             "channels_last", "torch in bfloat16 on a CPU", reasons)
    # 3. Packing and fusion: eager torch on a CPU, where oneDNN runs this dtype.
    eager_cpu = torch_backend and cpu and not options.compile
    packable = platform.onednn and (dtype == "float32"
                                    or (dtype == "bfloat16" and platform.onednn_bf16))
    if options.prepack and not (eager_cpu and packable):
        raise ValueError("prepack = true packs layer weights for oneDNN: it needs "
                         "backend = 'torch' on a CPU without compile, in float32 (or "
                         "bfloat16 where the CPU has it)")
    if options.request_loras is True and options.prepack is None:
        reasons.append("prepack off (request_loras: PEFT wraps torch's own layers)")
        prepack = False
    else:
        prepack = _default(options.prepack, eager_cpu and packable, "prepack",
                           "eager torch on a CPU in a dtype oneDNN packs", reasons)
    if options.fuse and not prepack:
        raise ValueError("fuse = true runs elementwise work inside the packed layers' "
                         "oneDNN calls: it needs prepack")
    fuse = _default(options.fuse, prepack, "fuse", "with prepack", reasons)
    # 4. Warm-up: where a shape's first call compiles or packs, that cost falls on the load.
    warmup = _default(options.warmup, openvino or bool(options.compile) or prepack, "warmup",
                      "OpenVINO, compile or prepack pay on a shape's first call", reasons)
    # 5. int8: NNCF quantizes OpenVINO models; torch's own int8 kernels are not used.
    quantize: Literal["none", "int8"] = "int8" if options.quantize == "int8" else "none"
    if quantize == "int8" and not openvino:
        raise ValueError("quantize = 'int8' quantizes OpenVINO's models: it needs "
                         "backend = 'openvino'" + ("" if options.backend != "auto" else
                                                   ", and OpenVINO installed"))
    if options.quantize_samples is not None and quantize == "none":
        raise ValueError("quantize_samples sets the int8 calibration: it needs "
                         "quantize = 'int8'")
    samples = (options.quantize_samples or DEFAULT_QUANTIZE_SAMPLES) if quantize == "int8" \
        else 0
    if quantize == "int8":
        reasons.append(f"int8 (NNCF), calibrated on {samples} draws")
    # 6. Weight cache: on a CPU below float32, a folder's components kept in that dtype.
    cache_weights = (options.cache_weights and options.cache_dir is not None and torch_backend
                     and cpu and dtype != "float32" and model_is_folder)
    if cache_weights:
        reasons.append(f"weights kept in {dtype} under {options.cache_dir}/weights")
    # 7. Batch size: on a CPU a batch costs as much per image as one at a time, and every
    # request of it waits for the last image; a GPU draws a batch nearly for the price of one.
    max_batch = options.max_batch_images or (1 if cpu else 4)
    steps = quality_steps({**DEFAULT_STEPS, **dict(options.steps)})
    # 8. Per-request LoRAs: switched on torch's own layers, so only where nothing bakes them.
    blockers = [name for name, on in (("openvino", openvino), ("int8", quantize == "int8"),
                                      ("compile", bool(options.compile)),
                                      ("prepack", prepack), ("fuse", fuse)) if on]
    request_loras = options.request_loras is not False and not blockers
    if options.request_loras is False:
        reasons.append("per-request LoRAs off (asked)")
    else:
        asked = "asked" if options.request_loras is True else "auto"
        reasons.append(f"per-request LoRAs {'on' if request_loras else 'off'} ({asked}: "
                       + (f"{', '.join(blockers)} on)" if blockers else "torch's own layers)"))
    return LoadPlan(backend=backend, device=device, dtype=dtype, openvino_precision=precision,
                    channels_last=channels_last, prepack=prepack, fuse=fuse, warmup=warmup,
                    cache_weights=cache_weights, quantize=quantize,
                    quantize_samples=samples, max_batch_images=max_batch,
                    steps=steps, reasons=tuple(reasons), offload=options.offload,
                    request_loras=request_loras)


def _check_request_loras(options: DiffusersOptions) -> None:
    """`request_loras = true` turns off what it cannot run beside, except what was asked."""
    if options.request_loras is not True:
        return
    asked = [name for name, on in (("backend = 'openvino'", options.backend == "openvino"),
                                   ("quantize = 'int8'", options.quantize == "int8"),
                                   ("compile", bool(options.compile)),
                                   ("prepack = true", options.prepack is True),
                                   ("fuse = true", options.fuse is True)) if on]
    if asked:
        raise ValueError(f"request_loras = true switches LoRAs on torch's own layers, which "
                         f"{', '.join(asked)} replace or bake in: choose one")


def _default(asked: bool | None, default: bool, name: str, why: str,
             reasons: list[str]) -> bool:
    if asked is not None:
        reasons.append(f"{name} {'on' if asked else 'off'} (asked)")
        return asked
    reasons.append(f"{name} {'on' if default else 'off'} ({'' if default else 'not '}{why})")
    return default


def _backend(options: DiffusersOptions, platform: Platform,
             reasons: list[str]) -> Literal["torch", "openvino"]:
    """`auto` takes OpenVINO where it is installed and nothing asked for is torch's, since it
    is limner's faster CPU path (docs/performance.md)."""
    if options.backend != "auto":
        reasons.append(f"backend {options.backend} (asked)")
        return options.backend
    torch_only = (options.device not in (None, "cpu") or (options.device is None
                                                         and platform.cuda)
                  or bool(options.compile) or bool(options.channels_last)
                  or bool(options.prepack) or bool(options.fuse)
                  or DTYPES[options.dtype] == "float16" or options.request_loras is True)
    if not platform.openvino or torch_only:
        why = "OpenVINO is not installed" if not platform.openvino else \
            "an option asked for is torch's"
        reasons.append(f"backend torch (auto: {why})")
        return "torch"
    reasons.append("backend openvino (auto: installed, and the fastest on a CPU)")
    return "openvino"


def _torch_dtype(requested: str, device: str, platform: Platform) -> Dtype:
    name = DTYPES[requested]
    if name != "auto":
        return name  # type: ignore[return-value]
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if platform.cpu_bf16 else "float32"


def _openvino_precision(requested: str, platform: Platform) -> Literal["f32", "bf16"]:
    name = DTYPES[requested]
    if name == "auto":
        return "bf16" if platform.cpu_bf16 else "f32"
    if name == "float32":
        return "f32"
    if name == "bfloat16":
        return "bf16"
    raise ValueError(f"backend = 'openvino' runs in f32 or bf16; dtype {requested!r} is not "
                     "one of auto, float32, bfloat16")
