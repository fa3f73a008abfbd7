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


class ImageGenPartialImageEvent(_ImageEvent):
    type: Literal["image_generation.partial_image"] = "image_generation.partial_image"
    partial_image_index: int


class ImageGenCompletedEvent(_ImageEvent):
    """Serialised without null fields: `safety_identifier` only when the request had one."""

    type: Literal["image_generation.completed"] = "image_generation.completed"
    usage: ImagesUsage
    safety_identifier: str | None = None


class ImageEditPartialImageEvent(_ImageEvent):
    type: Literal["image_edit.partial_image"] = "image_edit.partial_image"
    partial_image_index: int


class ImageEditCompletedEvent(_ImageEvent):
    type: Literal["image_edit.completed"] = "image_edit.completed"
    usage: ImagesUsage
    safety_identifier: str | None = None


ImageGenStreamEvent = ImageGenPartialImageEvent | ImageGenCompletedEvent
ImageEditStreamEvent = ImageEditPartialImageEvent | ImageEditCompletedEvent
