"""The embedded engine: limner's own small model, shipped in `assets/`, drawing on a CPU."""

from limner.engines.embedded.engine import EmbeddedEngine

__all__ = ["EmbeddedEngine"]
