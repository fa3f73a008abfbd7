"""The server-sent events of `stream=true`, two per endpoint (generations, edits). None ever
carries an `error` key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from limner.protocol.images import ImagesUsage


class _ImageEvent(BaseModel):
    b64_json: str
    created_at: int
    size: str
    quality: str
    background: str
    output_format: str


class _PartialImageEvent(_ImageEvent):
    partial_image_index: int


class _CompletedEvent(_ImageEvent):
    """Serialised without null fields: `safety_identifier` only when the request had one."""

    usage: ImagesUsage
    safety_identifier: str | None = None


class ImageGenPartialImageEvent(_PartialImageEvent):
    type: Literal["image_generation.partial_image"] = "image_generation.partial_image"


class ImageGenCompletedEvent(_CompletedEvent):
    type: Literal["image_generation.completed"] = "image_generation.completed"


class ImageEditPartialImageEvent(_PartialImageEvent):
    type: Literal["image_edit.partial_image"] = "image_edit.partial_image"


class ImageEditCompletedEvent(_CompletedEvent):
    type: Literal["image_edit.completed"] = "image_edit.completed"


ImageGenStreamEvent = ImageGenPartialImageEvent | ImageGenCompletedEvent
ImageEditStreamEvent = ImageEditPartialImageEvent | ImageEditCompletedEvent
