"""The per-model rules of the OpenAI Images API, one record per model family.

Every served model name (an OpenAI name such as `dall-e-3`, or a local name) resolves to a
`ModelRules` record; `limner.planning` checks a request against it. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from limner.errors import InvalidRequest, invalid_value

Family = Literal["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-2", "gpt-image-2.5",
                 "gpt-image-2.6"]

GPT_ONLY_FIELDS = ("background", "moderation", "output_format", "output_compression",
                   "partial_images", "complexity", "frame_count", "frame_duration_ms", "svg")
"""Fields that only GPT image models accept (with `stream: true` and GPT qualities)."""

GPT_QUALITIES = ("low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class ModelRules:
    family: Family
    prompt_max: int
    n_max: int
    sizes: tuple[str, ...]
    """The fixed size set; gpt-image-2 accepts any valid `WxH` as well."""
    default_size: str
    qualities: tuple[str, ...]
    auto_quality: str
    styles: tuple[str, ...] = ()
    free_size: bool = False
    transparent: bool = True
    default_response_format: str = "b64_json"

    @property
    def is_gpt(self) -> bool:
        return self.family.startswith("gpt-image")


DALL_E_2 = ModelRules(
    family="dall-e-2",
    prompt_max=1000,
    n_max=10,
    sizes=("256x256", "512x512", "1024x1024"),
    default_size="1024x1024",
    qualities=("standard", "auto"),
    auto_quality="standard",
    default_response_format="url",
)
DALL_E_3 = ModelRules(
    family="dall-e-3",
    prompt_max=4000,
    n_max=1,
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    default_size="1024x1024",
    qualities=("standard", "hd", "auto"),
    auto_quality="standard",
    styles=("vivid", "natural"),
    default_response_format="url",
)
GPT_IMAGE_1 = ModelRules(
    family="gpt-image-1",
    prompt_max=32000,
    n_max=10,
    sizes=("1024x1024", "1024x1536", "1536x1024", "auto"),
    default_size="auto",
    qualities=("low", "medium", "high", "auto"),
    auto_quality="medium",
)
GPT_IMAGE_2 = replace(GPT_IMAGE_1, family="gpt-image-2", free_size=True, transparent=False)
GPT_IMAGE_25 = replace(GPT_IMAGE_2, family="gpt-image-2.5", transparent=True,
                       qualities=("low", "medium", "high", "xhigh", "max", "auto"))
"""The later revision (CONTRACT §11): free sizes, `xhigh` and `max`, transparency."""
GPT_IMAGE_26 = replace(GPT_IMAGE_1, family="gpt-image-2.6")
"""Named by the newest SDK with no size or quality rules of its own: gpt-image-1's."""
LOCAL = replace(
    GPT_IMAGE_25,
    sizes=("256x256", "512x512", "1024x1024", "1024x1536", "1536x1024", "auto"),
)
"""Rules for a model served under its own local name: gpt-image-2's free sizes, plus
transparency and the small square sizes."""

OPENAI_MODELS: dict[str, ModelRules] = {
    "dall-e-2": DALL_E_2,
    "dall-e-3": DALL_E_3,
    "gpt-image-1": GPT_IMAGE_1,
    "gpt-image-1-mini": GPT_IMAGE_1,
    "gpt-image-1.5": GPT_IMAGE_1,
    "chatgpt-image-latest": GPT_IMAGE_1,
    "gpt-image-2": GPT_IMAGE_2,
    "gpt-image-2-2026-04-21": GPT_IMAGE_2,
    "gpt-image-2.5-sunburst": GPT_IMAGE_25,
    "gpt-image-2.5-sunburst-2026-09-08": GPT_IMAGE_25,
    "gpt-image-2.5-flare": GPT_IMAGE_25,
    "gpt-image-2.5-flare-2026-09-08": GPT_IMAGE_25,
    "gpt-image-2.6-sunburst": GPT_IMAGE_26,
    "gpt-image-2.6-flare": GPT_IMAGE_26,
}
SHUTDOWN_DATES = {"gpt-image-1": "2026-10-23", "dall-e-2": "2026-05-12",
                  "dall-e-3": "2026-05-12"}
"""The dates the newest SDK gives for OpenAI's retired models; limner still serves them."""

_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
MAX_EDGE = 3840


def default_model_name(given: set[str], quality: str | None, stream: bool | None,
                       gpt_default: str) -> str:
    """The spec's rule: `dall-e-2`, unless a parameter only GPT image models take is present."""
    gpt_signal = (
        any(name in given for name in GPT_ONLY_FIELDS)
        or stream is True
        or quality in GPT_QUALITIES
    )
    return gpt_default if gpt_signal else "dall-e-2"


def parse_size(size: str) -> tuple[int, int] | None:
    match = _SIZE.fullmatch(size)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def check_size(rules: ModelRules, size: str) -> None:
    """Raises the OpenAI-worded 400 for a size this model does not take."""
    if size in rules.sizes:
        return
    if not rules.free_size:
        if rules.family.startswith("dall-e"):
            raise InvalidRequest(
                f"Invalid value: '{size}'. Supported values are: "
                + ", ".join(f"'{s}'" for s in rules.sizes[:-1])
                + f", and '{rules.sizes[-1]}'.",
                param="size",
                code="invalid_size",
            )
        raise invalid_value("size", size, list(rules.sizes))
    parsed = parse_size(size)
    if parsed is None:
        raise InvalidRequest(
            f"Invalid size '{size}'. Expected 'auto' or a 'WIDTHxHEIGHT' string such as "
            "'1536x864'.",
            param="size",
            code="invalid_size",
        )
    width, height = parsed
    if width == 0 or height == 0 or width % 16 or height % 16:
        raise InvalidRequest(
            f"Invalid size '{size}'. Width and height must both be divisible by 16.",
            param="size",
            code="invalid_size",
        )
    if max(width, height) > 3 * min(width, height):
        raise InvalidRequest(
            f"Invalid size '{size}'. The aspect ratio must be between 1:3 and 3:1.",
            param="size",
            code="invalid_size",
        )
    if max(width, height) > MAX_EDGE:
        raise InvalidRequest(
            f"Invalid size '{size}'. The longest edge must be at most {MAX_EDGE} pixels.",
            param="size",
            code="invalid_size",
        )
    pixels = width * height
    if not MIN_PIXELS <= pixels <= MAX_PIXELS:
        raise InvalidRequest(
            f"Invalid size '{size}'. The total number of pixels must be between "
            f"{MIN_PIXELS:,} and {MAX_PIXELS:,}; got {pixels:,}.",
            param="size",
            code="invalid_size",
        )
