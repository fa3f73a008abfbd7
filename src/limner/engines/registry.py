"""Engine name -> instance, importing torch-heavy modules only when asked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from limner.config import EngineConfig
from limner.engines.base import Engine


def build_engine(config: EngineConfig, threads: int | None = None,
                 data_dir: Path | None = None) -> Engine:
    """`data_dir` gives engines that cache derived files (a diffusers engine's OpenVINO IR) a
    default `cache_dir` of `DATA_DIR/cache`."""
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
        if data_dir is not None:
            options.setdefault("cache_dir", str(data_dir / "cache"))
        return DiffusersEngine(config.path, name=config.name, threads=threads, **options)
    raise ValueError(f"engine {config.name!r}: unknown kind {config.kind!r}")
