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
    status: Literal["loading", "ready", "failed"] | None = None
    """limner's own: whether the engine behind this name can draw now."""
    status_reason: str | None = None
    """Why its load failed, when `status` is `failed`."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
