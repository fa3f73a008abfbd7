"""`GET /v1/models` and `GET /v1/models/{id}`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    shutdown_date: str | None = None
    """For OpenAI's retired names (still served here), the date the newest SDK gives."""
    status: Literal["unloaded", "loading", "ready", "failed"] | None = None
    """limner's own: whether the engine behind this name is in memory and can draw now
    (`unloaded` loads when asked for)."""
    status_reason: str | None = None
    """Why its load failed, when `status` is `failed`."""
    engine: str | None = None
    """limner's own: the engine (configured model) that draws under this name."""
    memory: dict[str, int] | None = None
    """limner's own: bytes the engine holds per device (`cpu`, `cuda:0`) while loaded."""
    adapters: list[str] | None = None
    """limner's own: the LoRA names a request's `lora` may give for this model."""
    lora: list[dict[str, str | float]] | None = None
    """limner's own: the adapters this name always draws with (`[models]` table)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
