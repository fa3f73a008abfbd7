"""Copies of a pipeline's large components in the engine's dtype, saved once and read back.

Loading fp32 weight files into a bf16 model maps and reads the whole fp32 file while the bf16
copy is built, and both count in the process's memory until the load ends: about twice what
serving needs. Files already in the engine's dtype are mapped and used as they are, so later
loads peak near what the model needs (figures in `docs/performance.md`).

With `channels_last`, a diffusers model's 4-D (convolution) weights are saved in NHWC order
and read back as channels_last views of the mapped file: laying them out again after loading
would copy them and leave the mapped NCHW pages resident too.

The first load writes the copies straight from the weight files, one tensor at a time
(`convert`), before the pipeline loads them from the cache: converting through a full load
would peak as high as the load it saves later ones from. Components whose files do not map
one to one onto their model's state dict fall back to that full load (`save`).

Also home to the cache helpers the OpenVINO backend shares: a component's weight folder, its
files' fingerprint, and saving a folder atomically.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch

from limner.allocator import return_freed_memory

log = logging.getLogger("limner.engines.diffusers.accel.weight_cache")

CACHED_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
"""The large parts of a pipeline; the VAE and the tokenizers are small enough to convert."""
LAYOUT = "limner-weights-2"
NHWC_FILE = "limner-nhwc.safetensors"
"""A diffusers model's weights with 4-D tensors in NHWC order (beside its config.json)."""


def weight_files(folder: Path | None) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file under `folder`, sorted."""
    if folder is None or not folder.is_dir():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


def component_folder(source: str, component: str | None, module: Any) -> Path | None:
    """Where a component's weights are: `SOURCE/COMPONENT` for a local pipeline folder, else
    the folder diffusers/transformers loaded it from (a hub snapshot in the HF cache)."""
    local = Path(source) / component if component else Path(source)
    if local.is_dir():
        return local
    loaded = getattr(getattr(module, "config", None), "_name_or_path", None)
    return Path(loaded) if isinstance(loaded, str) and Path(loaded).is_dir() else None


def save_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Write a folder through `write(staging)` and rename it into place, so no reader ever
    sees half of one; if another process saved the same target first, theirs stays."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _classes(source: str) -> dict[str, tuple[str, str]]:
    """Large component -> (library, class name), from a local pipeline's model_index.json."""
    try:
        index = json.loads((Path(source) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: (value[0], value[1]) for name, value in index.items()
            if name in CACHED_COMPONENTS and isinstance(value, list) and len(value) == 2
            and value[0] in ("diffusers", "transformers") and isinstance(value[1], str)}


def _target(cache_dir: Path, source: str, component: str, dtype: torch.dtype,
            nhwc: bool) -> Path:
    import diffusers
    import transformers

    doc = {"source": str(Path(source).resolve()), "component": component,
           "files": weight_files(Path(source) / component), "dtype": str(dtype),
           "diffusers": diffusers.__version__, "transformers": transformers.__version__,
           "layout": LAYOUT, "nhwc": nhwc}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir / f"{component}-{key}"


def load_cached(source: str, cache_dir: Path, dtype: torch.dtype, channels_last: bool = False,
                only: Collection[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """(the large components found in the cache, loaded; the names of those not there).
    `only` limits the look to those components."""
    found: dict[str, Any] = {}
    missing: list[str] = []
    for name, (library, class_name) in _classes(source).items():
        if only is not None and name not in only:
            continue
        target = _target(cache_dir, source, name, dtype, _nhwc(library, channels_last))
        if not (target / "config.json").is_file():
            missing.append(name)
            continue
        try:
            cls = getattr(importlib.import_module(library), class_name)
            model = _load_nhwc(cls, target) if (target / NHWC_FILE).is_file() \
                else cls.from_pretrained(target, dtype=dtype).to(dtype)
            if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                # a copy missing some of the model's tensors (a converter that did not know
                # its layout): the model is loaded from its own files, then saved whole
                raise ValueError("the cached weights leave part of the model empty")
            found[name] = model
        except Exception as exc:  # a damaged copy: convert again from the source
            log.warning("%s: the cached copy in %s is unreadable (%s); converting again",
                        name, target, exc)
            shutil.rmtree(target, ignore_errors=True)
            missing.append(name)
    return found, missing


def _nhwc(library: str, channels_last: bool) -> bool:
    """Whether a component's copy keeps 4-D weights in NHWC order: diffusers models (the
    UNet) under channels_last; text encoders have no convolutions."""
    return channels_last and library == "diffusers"


def _load_nhwc(cls: Any, folder: Path) -> Any:
    """A diffusers model built empty and given the mapped tensors as they are, the 4-D ones
    as channels_last views of their NHWC data (no copy)."""
    from safetensors.torch import load_file

    config = cls.load_config(folder)
    with torch.device("meta"):
        model = cls.from_config(config)
    if _plain_tensors(model):
        # Tensors its constructor computes outside parameters and buffers (Qwen-Image's
        # rotary frequencies) would stay empty: such a model is built for real.
        model = cls.from_config(config)
    state = {key: value.permute(0, 3, 1, 2) if value.ndim == 4 else value
             for key, value in load_file(folder / NHWC_FILE).items()}
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise ValueError("the cached weights leave part of the model empty")
    return model.eval()


def _plain_tensors(model: torch.nn.Module) -> bool:
    return any(isinstance(value, torch.Tensor) for module in model.modules()
               for name, value in vars(module).items()
               if name not in ("_parameters", "_buffers"))


WEIGHT_FILES = {"diffusers": "diffusion_pytorch_model.safetensors",
                "transformers": "model.safetensors"}
"""The single weight file each library's `from_pretrained` reads from a component folder."""


def convert(source: str, cache_dir: Path, dtype: torch.dtype, names: list[str],
            channels_last: bool = False) -> list[str]:
    """Write the named components' copies from their weight files, a tensor at a time, without
    loading the models; returns those written. The rest (sharded or pickled weights, keys or
    shapes that differ from the model's state dict, weights a model keeps in fp32) are left
    for `save` after a full load."""
    written = []
    classes = _classes(source)
    for name in names:
        if name not in classes:
            continue
        library, class_name = classes[name]
        folder = Path(source) / name
        nhwc = _nhwc(library, channels_last)
        try:
            cls = getattr(importlib.import_module(library), class_name)
            state = _converted_state(cls, library, folder, dtype, nhwc)
            if state is None:
                log.info("%s: its weight files are not its state dict as they are; converting "
                         "to %s after loading", name, dtype)
                continue
            target = _target(cache_dir, source, name, dtype, nhwc)
            save_folder(target, partial(_write_state, folder, library, state, nhwc))
        except Exception as exc:  # an odd model or a full disk: the full load's turn
            log.warning("%s: could not convert %s to %s in %s (%s); converting after loading",
                        name, folder, dtype, cache_dir, exc)
            continue
        finally:
            state = None
            return_freed_memory()
        written.append(name)
    return written


def _converted_state(cls: Any, library: str, folder: Path, dtype: torch.dtype, nhwc: bool
                     ) -> dict[str, torch.Tensor] | None:
    """The weight file's tensors in `dtype` (4-D ones in NHWC order with `nhwc`) under the
    model's state-dict names, or None where the file is not that state dict."""
    from safetensors import safe_open

    file = folder / WEIGHT_FILES[library]
    if not file.is_file():
        return None
    model = _model_state(cls, library, folder)
    if model.keeps_fp32:
        return None
    try:  # safetensors >= 0.8 reads each tensor into memory of its own, not a mapping
        handle = safe_open(str(file), framework="pt", backend="pread")
    except TypeError:
        handle = safe_open(str(file), framework="pt")
    state: dict[str, torch.Tensor] = {}
    with handle as tensors:
        found = {key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()}  # noqa: SIM118
        names = _state_names(found, model)
        if names is None:
            return None
        for key, name in names.items():
            tensor = tensors.get_tensor(key)
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            state[name] = _in_file_order(tensor, nhwc)
    return state


class _ModelState(NamedTuple):
    shapes: dict[str, tuple[int, ...]]
    """The state dict's names and shapes."""
    own_buffers: frozenset[str]
    """Buffers the model makes itself (non-persistent), which older files may still hold."""
    keeps_fp32: bool
    """Whether the model keeps some weights in fp32 whatever the dtype."""


def _model_state(cls: Any, library: str, folder: Path) -> _ModelState:
    """What `cls`, built from `folder`'s config on the meta device, expects of a file."""
    with torch.device("meta"):
        if library == "diffusers":
            model = cls.from_config(cls.load_config(folder))
        else:
            model = cls(cls.config_class.from_pretrained(folder))
    state = model.state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    own = frozenset(name for name, _ in model.named_buffers() if name not in state)
    return _ModelState(shapes, own, bool(getattr(model, "_keep_in_fp32_modules", None)))


def _state_names(found: dict[str, tuple[int, ...]], model: _ModelState) -> dict[str, str] | None:
    """The file's key -> the state dict's name for every tensor to keep, or None where the
    file is not the state dict. Names match as they are, or under one leading prefix the
    model no longer has (transformers 4 saved CLIP's text encoder under `text_model.`), and
    a file's copies of buffers the model makes itself are left out."""
    firsts = {key.split(".", 1)[0] for key in found}
    prefixes = [""] + [f"{first}." for first in firsts if len(firsts) == 1]
    for prefix in prefixes:
        if not all(key.startswith(prefix) and len(key) > len(prefix) for key in found):
            continue
        names = {key: key[len(prefix):] for key in found
                 if key[len(prefix):] not in model.own_buffers}
        if {name: found[key] for key, name in names.items()} == model.shapes:
            return names
    return None


def _write_state(source: Path, library: str, state: dict[str, torch.Tensor], nhwc: bool,
                 folder: Path) -> None:
    """A cache folder as `load_cached` reads it: the source's config beside the tensors."""
    from safetensors.torch import save_file

    shutil.copy2(source / "config.json", folder / "config.json")
    save_file(state, folder / (NHWC_FILE if nhwc else WEIGHT_FILES[library]),
              metadata={"format": "pt"})


def save(pipe: Any, source: str, cache_dir: Path, dtype: torch.dtype,
         names: list[str], channels_last: bool = False) -> list[str]:
    """Save the named components of a loaded pipeline; returns those saved. A copy that
    cannot be written (a full or read-only disk, say) costs the next load its memory, no more.
    With `channels_last` the diffusers models (laid out so already: no copies) are saved
    with their 4-D weights in NHWC order."""
    saved = []
    classes = _classes(source)
    for name in names:
        module = getattr(pipe, name, None)
        if module is None or not hasattr(module, "save_pretrained") or name not in classes:
            continue
        nhwc = _nhwc(classes[name][0], channels_last)
        target = _target(cache_dir, source, name, dtype, nhwc)
        write: Callable[[Path], None] = partial(_save_nhwc, module) if nhwc \
            else module.save_pretrained
        try:
            save_folder(target, write)
        except Exception as exc:  # a full disk, or weights safetensors cannot hold
            log.warning("%s: could not save a %s copy in %s (%s); the next load converts "
                        "again", name, dtype, target, exc)
            continue
        saved.append(name)
    return saved


def _save_nhwc(module: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    module.save_config(folder)
    state = {key: _in_file_order(value, nhwc=True) for key, value in module.state_dict().items()}
    save_file(state, folder / NHWC_FILE, metadata={"format": "pt"})


def _in_file_order(tensor: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """A tensor as a copy's file holds it: contiguous, 4-D ones in NHWC order with `nhwc`
    (`_load_nhwc` permutes them back into channels_last views)."""
    if nhwc and tensor.ndim == 4:
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.contiguous()
