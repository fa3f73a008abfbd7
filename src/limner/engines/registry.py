"""Engine name -> instance, importing torch-heavy modules only when asked."""

from __future__ import annotations

from limner.config import EngineConfig
from limner.engines.base import Engine


def build_engine(config: EngineConfig, threads: int | None = None) -> Engine:
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
        from limner.engines.diffusers import DiffusersEngine

        if not config.path:
            raise ValueError(f"engine {config.name!r}: a diffusers engine needs a `path`")
        return DiffusersEngine(config.path, name=config.name, threads=threads,
                               **dict(config.options))
    raise ValueError(f"engine {config.name!r}: unknown kind {config.kind!r}")
