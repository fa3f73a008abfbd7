"""Token usage for GPT image models. An estimate, documented as such.

Output image tokens follow the formula that fits OpenAI's published gpt-image-1 table:
`(H / p) * (W / p + 1)` with `p` = 64 (low), 32 (medium), 16 (high); each partial image adds
100. Input text tokens approximate the `o200k_base` tokenizer (not available offline) by
counting its pre-tokenizer pieces: words, numbers in runs of up to three digits, and
punctuation runs. An edit's input pictures are counted by `input_image_tokens`.
"""

from __future__ import annotations

import math
import re

from limner.protocol.images import (
    ImageGenUsage,
    ImagesUsage,
    InputTokensDetails,
    OutputTokensDetails,
)

_PATCH = {"low": 64, "medium": 32, "high": 16}
_PIECES = re.compile(r"[^\W\d_]+|\d{1,3}|[^\s\w]+|_+", re.UNICODE)
PARTIAL_IMAGE_TOKENS = 100


def text_tokens(prompt: str) -> int:
    return len(_PIECES.findall(prompt))


def image_tokens(width: int, height: int, quality: str) -> int:
    patch = _PATCH.get(quality, 32)
    return math.ceil(height / patch) * (math.ceil(width / patch) + 1)


def input_image_tokens(width: int, height: int, fidelity: str) -> int:
    """An edit's input picture, fitted within 1024 x 1024 and counted like an output picture
    of quality low (`input_fidelity: low`) or medium (`high`): 272 or 1056 tokens for a
    square."""
    scale = min(1.0, 1024 / max(width, height))
    return image_tokens(max(1, round(width * scale)), max(1, round(height * scale)),
                        "medium" if fidelity == "high" else "low")


def generation_usage(text: int, width: int, height: int, quality: str, n: int,
                     partial_images: int = 0, input_images: int = 0) -> ImageGenUsage:
    """`text` is the prompt's `text_tokens`, counted once when the request is planned;
    `input_images` an edit's `input_image_tokens`."""
    output = n * (image_tokens(width, height, quality) + partial_images * PARTIAL_IMAGE_TOKENS)
    return ImageGenUsage(
        input_tokens=text + input_images,
        output_tokens=output,
        total_tokens=text + input_images + output,
        input_tokens_details=InputTokensDetails(text_tokens=text, image_tokens=input_images),
        output_tokens_details=OutputTokensDetails(image_tokens=output, text_tokens=0),
    )


def stream_usage(usage: ImageGenUsage) -> ImagesUsage:
    """The smaller usage object of the stream's completed event."""
    return ImagesUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_tokens_details=usage.input_tokens_details,
    )
