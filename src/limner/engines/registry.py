"""Engine name -> instance, importing torch-heavy modules only when asked."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limner.config import EngineConfig
from limner.engines.base import Engine


def build_engine(config: EngineConfig, threads: int | None = None,
                 data_dir: Path | None = None, loras: Mapping[str, str] | None = None
                 ) -> Engine:
    """`data_dir` gives engines that cache derived files (a diffusers engine's OpenVINO IR) a
    default `cache_dir` of `DATA_DIR/cache`; `loras` (the LoRA library's name -> path) gives
    a static adapter named without a `path` its file."""
    if config.kind == "fake":
        from limner.engines.fake import FakeEngine

        return FakeEngine(name=config.name, **dict(config.options))
    if config.kind == "embedded":
        from limner.engines.embedded import EmbeddedEngine

        kwargs = dict(config.options)
        kwargs.setdefault("name", config.name)
        if config.path:
            kwargs["weights"] = config.path
        if threads:
            kwargs.setdefault("threads", threads)
        return EmbeddedEngine(**kwargs)
    if config.kind == "diffusers":
        if importlib.util.find_spec("diffusers") is None:
            raise ValueError(f"engine {config.name!r}: a diffusers model needs diffusers, "
                             "which is not installed: pip install 'limner[diffusers]'")
        from limner.engines.diffusers.engine import DiffusersEngine

        if not config.path:
            raise ValueError(f"engine {config.name!r}: a diffusers engine needs a `path`")
        options = dict(config.options)
        if options.get("loras"):
            options["loras"] = _with_paths(config.name, options["loras"], loras or {})
        if data_dir is not None:
            options.setdefault("cache_dir", str(data_dir / "cache"))
        threads = options.pop("threads", threads)  # a table's own wins over the server's
        return DiffusersEngine(config.path, name=config.name, threads=threads, **options)
    raise ValueError(f"engine {config.name!r}: unknown kind {config.kind!r}")


def _with_paths(engine: str, given: Any, library: Mapping[str, str]) -> Any:
    """An engine's `loras` entries, those named without a `path` taking the library's."""
    if not isinstance(given, list | tuple):
        return given  # the engine's options refuse it, saying what it must be
    out: list[Any] = []
    for index, entry in enumerate(given):
        if isinstance(entry, str):
            entry = {"name": entry}
        if isinstance(entry, Mapping) and "path" not in entry and \
                isinstance(entry.get("name"), str):
            path = library.get(entry["name"])
            if path is None:
                raise ValueError(
                    f"engine {engine!r}: loras[{index}] names {entry['name']!r}, which is "
                    "neither in DATA_DIR/loras nor in [loras]; give it a `path`")
            entry = {**entry, "path": path}
        out.append(entry)
    return out
