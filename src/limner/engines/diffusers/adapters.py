"""LoRAs in a loaded diffusers pipeline: fused into its weights at load, or switched per batch.

Static LoRAs (the engine's `loras` option) are loaded through PEFT, combined at their scales,
fused into the weights and unloaded again (`fuse_static`), right after the pipeline loads:
every speed-up that follows (packing, fusion, OpenVINO, compile, the weight cache) sees plain
weights, so they all work with them.

Per-request LoRAs (`Loras`) stay loaded in PEFT's wrappers of torch's layers, one set of
weights per name, and a batch makes its own set active before the pipeline runs
(`set_adapters`, or `disable_lora` for a batch with none): switching sets a few scales and
flags, and never reads a file again. A LoRA that does not fit (another family's, shapes that
differ, a file that is none) is refused as the request's error (`lora_mismatch`), its
half-loaded layers are deleted, and the verdict is kept so the next request fails fast.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from limner import adapter_shapes
from limner.engines.base import EngineError
from limner.engines.diffusers.options import LORA_BLOCKERS
from limner.errors import InvalidRequest
from limner.jobs import Adapter

log = logging.getLogger("limner.engines.diffusers.adapters")

MAX_LOADED = 16
"""Per-request LoRAs kept loaded at once; past this the least recently used is deleted (it
costs its weights in memory, and every wrapped layer a loop over the loaded names)."""
_PEFT_CONFIG_SKIPPED = {"peft_type", "task_type", "base_model_name_or_path", "revision",
                        "inference_mode", "auto_mapping"}
"""adapter_config.json keys that describe where a PEFT adapter came from, not its shape."""

Stamp = tuple[str, int, int]


@functools.cache
def _peft_installed() -> bool:
    return importlib.util.find_spec("peft") is not None


def unsupported(pipe: Any) -> str | None:
    """Why the pipeline cannot take LoRAs, or None where it can."""
    if not _peft_installed():
        return "PEFT is not installed (pip install 'limner[diffusers]')"
    if not callable(getattr(pipe, "load_lora_weights", None)):
        return f"diffusers loads no LoRAs into {type(pipe).__name__}"
    return None


def refusal(pipe: Any, request_loras: bool | str, running: Sequence[str]) -> str | None:
    """Why a loaded pipeline takes no LoRAs per request, as it runs now (a kernel check may
    have turned packing off since the plan); None where it takes them."""
    if request_loras is False:
        return "request_loras is off for it"
    why = unsupported(pipe)
    if why is not None:
        return why
    blocking = [name for name in LORA_BLOCKERS if name in running]
    if blocking:
        return (f"it runs with {', '.join(blocking)}, which replace torch's layers "
                "(request_loras = true turns them off)")
    return None


def pipeline_shape(pipe: Any) -> adapter_shapes.AdapterShape:
    """What the loaded pipeline offers a LoRA, as `adapter_shapes.model_shape` reads it from
    a folder."""
    denoisers = {name: dict(getattr(getattr(pipe, name), "config", None) or {})
                 for name in ("unet", "transformer") if getattr(pipe, name, None) is not None}
    encoders = [name for name in ("text_encoder", "text_encoder_2", "text_encoder_3")
                if getattr(pipe, name, None) is not None]
    return adapter_shapes.shape_of_model(type(pipe).__name__, denoisers, encoders)


def static_key(adapters: Sequence[Adapter]) -> list[Any] | None:
    """What the static LoRAs add to a cache key of converted weights (OpenVINO's IR): their
    names, scales and files by size and mtime; None without any, so the keys of a model
    without LoRAs stay what they were."""
    if not adapters:
        return None
    key: list[Any] = []
    for adapter in adapters:
        try:
            stamp: Any = adapter_shapes.fingerprint(adapter.path)
        except (OSError, ValueError):  # the load that follows refuses it
            stamp = adapter.path
        key.append([adapter.name, adapter.scale, stamp])
    return key


def fuse_static(pipe: Any, adapters: Sequence[Adapter], model: str) -> str | None:
    """Load `adapters`, fuse them at their scales into the weights and unload PEFT's layers,
    so the pipeline carries plain weights; says what it did. A LoRA that cannot load fails
    the load (`EngineError`): the config names it."""
    if not adapters:
        return None
    why = unsupported(pipe)
    if why is not None:
        raise EngineError(f"{model} cannot take the LoRAs of its loras option: {why}")
    loading = Loras(model)
    try:
        for adapter in adapters:
            loading.load(pipe, adapter)
    except InvalidRequest as exc:
        raise EngineError(exc.message) from exc
    names = [adapter.name for adapter in adapters]
    pipe.set_adapters(names, adapter_weights=[adapter.scale for adapter in adapters])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()
    return "fused " + ", ".join(f"{adapter.name} at {adapter.scale:g}" for adapter in adapters)


@dataclass(frozen=True)
class _Loaded:
    path: str
    stamp: Stamp
    parts: tuple[str, ...]
    """The pipeline's components that hold its layers (`unet`, `text_encoder`, ...)."""


class Loras:
    """The per-request LoRAs of one loaded pipeline: which are loaded, which is active, and
    which were refused. `reset` forgets them with the pipeline (`DiffusersEngine.close`)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._active: tuple[tuple[str, float], ...] | None = ()
        """The names and scales drawing now; `()`: none (LoRA layers off, or none loaded);
        None: unknown (loading one may activate it), so the next batch sets them."""
        self._refused: dict[tuple[str, str], tuple[Stamp, str]] = {}

    def reset(self) -> None:
        self._loaded.clear()
        self._active = ()
        self._refused.clear()

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def activate(self, pipe: Any, adapters: Sequence[Adapter]) -> bool:
        """Make `adapters` (a batch's, at their scales) what the pipeline draws with, loading
        those not loaded yet; True where a text encoder's LoRA went on or off, so prompt
        embeddings computed before are stale."""
        if not adapters and not self._loaded:
            return False  # the common case: nothing ever loaded, nothing to switch
        for adapter in adapters:
            self.load(pipe, adapter)
        live = tuple((adapter.name, float(adapter.scale)) for adapter in adapters
                     if adapter.scale != 0)  # scale 0 changes nothing: drawn without it
        if live == self._active:
            return False
        before = self._encoders(self._active)
        if live:
            pipe.enable_lora()
            pipe.set_adapters([name for name, _ in live],
                              adapter_weights=[scale for _, scale in live])
        else:
            pipe.disable_lora()
        self._active = live
        self._evict(pipe, {adapter.name for adapter in adapters})
        return before or self._encoders(live)

    def _encoders(self, active: tuple[tuple[str, float], ...] | None) -> bool:
        names = list(self._loaded) if active is None else [name for name, _ in active]
        return any(part.startswith("text_encoder") for name in names
                   if name in self._loaded for part in self._loaded[name].parts)

    def load(self, pipe: Any, adapter: Adapter) -> None:
        """Load `adapter` once under its name (again only where its file changed);
        `InvalidRequest` where it is missing (`lora_not_found`) or does not fit
        (`lora_mismatch`), the pipeline left as it was."""
        try:
            stamp = adapter_shapes.fingerprint(adapter.path)
            file, config = adapter_shapes.lora_file(adapter.path)
        except FileNotFoundError as exc:
            log.warning("%s: LoRA %r: %s", self.model, adapter.name, exc)
            raise InvalidRequest(f"The LoRA '{adapter.name}' was not found: its file is "
                                 "gone", param="lora", code="lora_not_found") from exc
        except ValueError as exc:
            raise self._mismatch(pipe, adapter, str(exc)) from exc
        key = (adapter.name, adapter.path)
        refused = self._refused.get(key)
        if refused is not None and refused[0] == stamp:
            raise self._mismatch(pipe, adapter, refused[1])
        loaded = self._loaded.get(adapter.name)
        if loaded is not None:
            if (loaded.path, loaded.stamp) == (adapter.path, stamp):
                self._loaded.move_to_end(adapter.name)
                return
            self._delete(pipe, adapter.name)  # another file under the same name
        why = self._load_new(pipe, adapter, file, config, stamp)
        if why is not None:
            self._refused[key] = (stamp, why)
            raise self._mismatch(pipe, adapter, why)

    def _load_new(self, pipe: Any, adapter: Adapter, file: Path, config: Path | None,
                  stamp: Stamp) -> str | None:
        """Load a LoRA not loaded yet; why it does not fit, or None once it is in."""
        why = unsupported(pipe)
        if why is not None:
            return why
        try:  # the header check first: it names the kinds where the load lists shapes
            shape = adapter_shapes.describe(file.parent if config else file)
        except ValueError as exc:
            return str(exc)
        why = adapter_shapes.fits(shape, pipeline_shape(pipe))
        if why is not None:
            return why
        self._active = None
        try:
            if config is not None:
                _load_peft(pipe, adapter.name, file, config, shape.target)
            else:
                pipe.load_lora_weights(str(file), adapter_name=adapter.name)
        except torch.OutOfMemoryError as exc:
            self._undo(pipe, adapter.name)
            raise EngineError(f"no memory left to load the LoRA {adapter.name!r}") from exc
        except Exception as exc:  # any failure to load a LoRA is the LoRA's: refused
            self._undo(pipe, adapter.name)
            return _why(exc)
        parts = tuple(part for part, names in pipe.get_list_adapters().items()
                      if adapter.name in names)
        if not parts:  # diffusers only warns where none of its keys matched
            self._undo(pipe, adapter.name)
            return "none of its weights match the model's layers"
        self._loaded[adapter.name] = _Loaded(adapter.path, stamp, parts)
        log.info("%s: loaded the LoRA %r into %s", self.model, adapter.name, ", ".join(parts))
        return None

    def _mismatch(self, pipe: Any, adapter: Adapter, why: str) -> InvalidRequest:
        return InvalidRequest(f"The LoRA '{adapter.name}' does not fit the model "
                              f"'{self.model}' ({type(pipe).__name__}): {why}",
                              param="lora", code="lora_mismatch")

    def _undo(self, pipe: Any, name: str) -> None:
        """Take a half-loaded LoRA out again: with no other loaded, every PEFT wrapper goes
        (the pipeline's own modules are back); else its layers only."""
        try:
            if self._loaded:
                pipe.delete_adapters(name)
            else:
                pipe.unload_lora_weights()
        except Exception as exc:  # what is left is an empty wrapper: it adds nothing
            log.warning("%s: could not remove what the LoRA %r left: %s", self.model, name,
                        exc)

    def _delete(self, pipe: Any, name: str) -> None:
        self._loaded.pop(name, None)
        self._active = None
        self._undo(pipe, name)

    def _evict(self, pipe: Any, keep: set[str]) -> None:
        """Delete the least recently used LoRAs past `MAX_LOADED`, none of `keep` (the
        batch's): what is active stays so."""
        active = self._active
        for name in list(self._loaded):
            if len(self._loaded) <= MAX_LOADED:
                break
            if name not in keep:
                log.info("%s: unloading the LoRA %r (least recently used)", self.model, name)
                self._delete(pipe, name)
        self._active = active


def _load_peft(pipe: Any, name: str, file: Path, config: Path, target: str | None) -> None:
    """A PEFT folder's adapter into the component it was made for, shaped by its own
    adapter_config.json (its rank and alpha), since diffusers reads only its own layout."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    if target is None:
        raise ValueError("a PEFT folder for a text encoder is not read; save it with "
                         "save_lora_weights")
    fields = {field.name for field in dataclasses.fields(LoraConfig)}
    metadata = {key: value for key, value in json.loads(config.read_text()).items()
                if key in fields and key not in _PEFT_CONFIG_SKIPPED}
    state = {key.removeprefix("base_model.model."): value
             for key, value in load_file(str(file)).items()}
    getattr(pipe, target).load_lora_adapter(state, prefix=None, adapter_name=name,
                                            metadata=metadata, _pipeline=pipe)


def _why(exc: Exception) -> str:
    """An exception as a short reason: its first line or two (a size mismatch lists every
    layer)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines[:2]) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
