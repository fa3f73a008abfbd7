"""The Images API's request bodies (generations, edits, variations) and their one response.

Fields are typed loosely on purpose (`str`, not `Literal`): enum and range checks belong to
`limner.planning` (with the per-model records of `limner.rules`), which knows the model and
can name the offending `param` the way OpenAI does.
Types are strict, so `"n": "2"` is an `invalid_type` error rather than a silent coercion.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

EXTENSION_FIELDS = frozenset({"seed", "negative_prompt", "steps", "guidance_scale",
                              "scheduler", "lora"})
"""Documented limner extensions that the OpenAI spec does not have."""


class SvgReasoning(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effort: StrictStr | None = None


class SvgOptions(BaseModel):
    """`svg`: the SVG author model (and its reasoning effort), with `output_format: svg`."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    reasoning: SvgReasoning | None = None


class LoraRef(BaseModel):
    """One adapter of `lora`: a name the server offers (`GET /v1/models`) and its scale."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    scale: StrictInt | StrictFloat | None = None


class ImageOptions(BaseModel):
    """The fields generations and edits share. `null` for any optional field means
    "omitted"."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr
    model: StrictStr | None = None
    n: StrictInt | None = None
    quality: StrictStr | None = None
    response_format: StrictStr | None = None
    output_format: StrictStr | None = None
    output_compression: StrictInt | None = None
    stream: StrictBool | None = None
    partial_images: StrictInt | None = None
    size: StrictStr | None = None
    moderation: StrictStr | None = None
    background: StrictStr | None = None
    user: StrictStr | None = None
    seed: StrictInt | None = None
    """limner extension: the seed of the first image; image `i` uses `seed + i`."""
    negative_prompt: StrictStr | None = None
    """limner extension: what the picture should not show (engines with guidance)."""
    steps: StrictInt | None = None
    """limner extension: denoising steps, overriding `quality`'s (1 to the engine's most)."""
    guidance_scale: StrictInt | StrictFloat | None = None
    """limner extension: the classifier-free guidance scale (0-30)."""
    scheduler: StrictStr | None = None
    """limner extension: the sampler, where the engine offers a choice (`jobs.SAMPLERS`)."""
    lora: list[LoraRef] | None = None
    """limner extension: LoRA adapters to draw with, `[{"name": ..., "scale": 0.8}]` (one
    object alone is taken as a list of one)."""
    safety_identifier: StrictStr | None = None
    complexity: StrictStr | None = None
    frame_count: StrictInt | None = None
    frame_duration_ms: StrictInt | None = None
    svg: SvgOptions | None = None

    @field_validator("lora", mode="before")
    @classmethod
    def _one_lora(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    def given(self) -> set[str]:
        """Fields the client set to a non-null value."""
        return {name for name in self.model_fields_set if getattr(self, name) is not None}


class CreateImageRequest(ImageOptions):
    """`POST /v1/images/generations`."""

    style: StrictStr | None = None


class ImageRef(BaseModel):
    """An input picture of a JSON edit: a URL (a data URL, or http(s) where the operator
    allows it) or the id of an uploaded file, exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    image_url: StrictStr | None = None
    file_id: StrictStr | None = None


class CreateImageEditRequest(ImageOptions):
    """`POST /v1/images/edits`. From multipart, `images` and `mask` stay empty here: their
    files travel beside it (`limner.input_images.Upload`)."""

    images: list[ImageRef] | None = None
    mask: ImageRef | None = None
    input_fidelity: StrictStr | None = None


class CreateImageVariationRequest(BaseModel):
    """`POST /v1/images/variations` (multipart; the image travels beside it)."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    n: StrictInt | None = None
    response_format: StrictStr | None = None
    size: StrictStr | None = None
    user: StrictStr | None = None


class InputTokensDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class OutputTokensDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class ImagesUsage(BaseModel):
    """The usage object of the stream's completed event (no output details)."""

    input_tokens: int
    total_tokens: int
    output_tokens: int
    input_tokens_details: InputTokensDetails


class ImageGenUsage(ImagesUsage):
    """The usage object of a non-streaming response."""

    output_tokens_details: OutputTokensDetails | None = None


class Image(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class SvgUsage(BaseModel):
    """Token usage of SVG authoring, apart from the picture's own `usage`."""

    input_tokens: int
    model: str
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int


class ImagesResponse(BaseModel):
    """Serialise with `exclude_none=True`: dall-e answers carry no `usage` or echo fields."""

    created: int
    data: list[Image]
    background: str | None = None
    output_format: str | None = None
    size: str | None = None
    quality: str | None = None
    usage: ImageGenUsage | None = None
    safety_identifier: str | None = None
    svg_usage: SvgUsage | None = None
