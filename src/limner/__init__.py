"""limner: a self-hosted, OpenAI-compatible image generation service."""

from __future__ import annotations

__version__ = "0.1.0"
