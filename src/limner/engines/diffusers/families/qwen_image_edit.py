"""Qwen-Image-Edit and -Edit-Plus: Qwen-Image that edits by instruction, Qwen2.5-VL reading
the picture(s); Edit takes one picture, Edit-Plus (2509 and later) up to three."""

from __future__ import annotations

from typing import ClassVar

from limner.engines.diffusers.families.qwen_image import QwenImage


class QwenImageEdit(QwenImage):
    name = "qwen-image-edit"
    pipelines = ("QwenImageEditPipeline",)
    steps: ClassVar = {"low": 20, "medium": 30, "high": 50}
    edit_way = "reference"
    references = 1
    blank_reference = True


class QwenImageEditPlus(QwenImageEdit):
    name = "qwen-image-edit-plus"
    pipelines = ("QwenImageEditPlusPipeline",)
    references = 3
