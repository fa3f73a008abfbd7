"""Request + model rules -> a resolved `GenerationPlan`.

Every validation error is raised here, before any work starts or any stream opens, as an
OpenAI-shaped 400 that names the `param`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from limner.catalogue import Catalogue, ModelEntry
from limner.errors import InvalidRequest, invalid_value, unsupported_parameter
from limner.jobs import QUALITY_LEVELS, SAMPLERS, GenerationParams, Quality
from limner.protocol.images import CreateImageRequest
from limner.rules import GPT_ONLY_FIELDS, check_size, default_model_name, parse_size
from limner.usage import text_tokens

USER_MAX = 512
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SEED_MAX = 2**63 - 1
FORMATS = ("png", "jpeg", "webp", "gif", "svg")
COMPLEXITIES = ("low", "medium", "high")
STEPS_MAX = 200
"""`steps` above this is refused before any engine is asked (each engine has its own most)."""
LORA_SCALE_MAX = 4.0
"""Past it a LoRA only wrecks the picture; 0 leaves it as drawn without one."""
LORA_NAME_MAX = 128
GUIDANCE_MAX = 30.0
FRAME_COUNT = (2, 16, 9)
"""A GIF's frames: at least, at most, and when omitted."""
FRAME_DURATION_MAX_MS = 655_350
"""What a GIF's 16-bit delay in hundredths of a second can hold."""


Endpoint = Literal["generations", "edits", "variations"]


@dataclass(frozen=True)
class GenerationPlan:
    entry: ModelEntry
    params: GenerationParams
    size: str
    quality: str
    """Resolved, never `auto`: low/medium/high for GPT models, standard/hd for dall-e."""
    background: Literal["transparent", "opaque"]
    output_format: str
    output_compression: int
    response_format: Literal["b64_json", "url"]
    stream: bool
    partial_images: int
    moderation: Literal["auto", "low"]
    user: str | None
    safety_identifier: str | None
    """A non-empty `safety_identifier`, else `user`: echoed, and written to the audit log."""
    prompt_tokens: int
    """The usage estimate's input tokens, counted here: with the other per-prompt work, off
    the event loop for a long prompt."""
    lora: tuple[tuple[str, float], ...] = ()
    """The adapters (name, scale) asked for, the model name's own first; the service finds
    them (`limner.loras`), since which exist and fit is the server's to say."""
    frame_count: int = 0
    """For `gif`: the animation's frames (the denoising as it goes, ending on the picture)."""
    frame_duration_ms: int = 0
    svg_model: str | None = None
    endpoint: Endpoint = "generations"
    """Which route asked: it names the stream's events (`image_edit.*` for edits)."""
    input_image_tokens: int = 0
    """The usage estimate's tokens for an edit's input pictures (`usage.input_image_tokens`)."""
    inputs: tuple[tuple[bytes, str], ...] = field(default=(), compare=False, repr=False)
    owner: str | None = None
    """Who asked: a digest of the request's key (never the key), written in the picture's
    content credentials; None without keys."""
    """An edit's pictures as uploaded (bytes, MIME type): those with content credentials
    become the ingredients of the answer's."""

    @property
    def model(self) -> str:
        return self.entry.name

    @property
    def is_gpt(self) -> bool:
        return self.entry.rules.is_gpt


def plan_request(request: CreateImageRequest, catalogue: Catalogue,
                 auto_size: str = "1024x1024") -> GenerationPlan:
    given = request.given()
    # 1. The model: explicit, or the spec's default rule. Only `null` or an absent field means
    # "omitted" here and below: an empty string is a value, and refused like any invalid one.
    if request.model == "":
        raise InvalidRequest(
            "Invalid 'model': string too short. Expected a model name, such as 'gpt-image-1'.",
            param="model", code="string_below_min_length",
        )
    name = request.model if request.model is not None else default_model_name(
        given, request.quality, request.stream, catalogue.gpt_default
    )
    entry = catalogue.resolve(name)
    rules = entry.rules
    gpt = rules.is_gpt

    # 2. Prompt and n.
    if not request.prompt.strip():
        raise InvalidRequest(
            "Invalid 'prompt': string too short. Expected a non-empty prompt.",
            param="prompt", code="string_below_min_length",
        )
    if _CONTROL.search(request.prompt):
        raise InvalidRequest(
            "Invalid 'prompt': it contains control characters (such as NUL); only printable "
            "text, tabs and newlines are accepted.", param="prompt", code="invalid_value",
        )
    if len(request.prompt) > rules.prompt_max:
        raise InvalidRequest(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{rules.prompt_max}, but got a string with length {len(request.prompt)} instead.",
            param="prompt", code="string_above_max_length",
        )
    n = 1 if request.n is None else request.n
    if n < 1:
        raise InvalidRequest(
            f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} "
            "instead.", param="n", code="integer_below_min_value",
        )
    if n > rules.n_max:
        raise InvalidRequest(
            f"Invalid 'n': integer above maximum value. Expected a value <= {rules.n_max}, "
            f"but got {n} instead.", param="n", code="integer_above_max_value",
        )

    # 3. Parameters this family does not take.
    if not gpt:
        for field in GPT_ONLY_FIELDS:
            if field in given:
                raise unsupported_parameter(field, name)
        if request.stream:
            raise unsupported_parameter("stream", name)
    if request.style is not None and not rules.styles:
        raise unsupported_parameter("style", name)

    # 4. Size and quality.
    size = rules.default_size if request.size is None else request.size
    check_size(rules, size)
    if size == "auto":
        size = auto_size
    parsed = parse_size(size)
    assert parsed is not None
    width, height = parsed

    quality = "auto" if request.quality is None else request.quality
    if quality not in rules.qualities:
        raise invalid_value("quality", quality, list(rules.qualities))
    if quality == "auto":
        quality = rules.auto_quality
    complexity = request.complexity
    if complexity is not None and complexity not in COMPLEXITIES:
        raise invalid_value("complexity", complexity, list(COMPLEXITIES))
    engine_quality = _engine_quality(quality, complexity)

    style = request.style
    if style is not None and style not in rules.styles:
        raise invalid_value("style", style, list(rules.styles))
    if rules.styles and style is None:
        style = rules.styles[0]

    # 5. Output format, compression, background.
    output_format = "png" if request.output_format is None else request.output_format
    if output_format not in FORMATS:
        raise invalid_value("output_format", output_format, list(FORMATS))
    compression = 100 if request.output_compression is None else request.output_compression
    if compression < 0:
        raise InvalidRequest(
            "Invalid 'output_compression': integer below minimum value. Expected a value "
            f">= 0, but got {compression} instead.",
            param="output_compression", code="integer_below_min_value",
        )
    if compression > 100:
        raise InvalidRequest(
            "Invalid 'output_compression': integer above maximum value. Expected a value "
            f"<= 100, but got {compression} instead.",
            param="output_compression", code="integer_above_max_value",
        )
    background = "auto" if request.background is None else request.background
    if background not in ("transparent", "opaque", "auto"):
        raise invalid_value("background", background, ["transparent", "opaque", "auto"])
    if background == "transparent":
        if not rules.transparent:
            raise InvalidRequest(
                "Transparent background is not supported for this model.",
                param="background", code="invalid_value",
            )
        if output_format not in ("png", "webp"):
            raise InvalidRequest(
                f"Transparent background requires output_format 'png' or 'webp'; "
                f"'{output_format}' has no alpha channel.", param="background",
                code="invalid_value",
            )
    resolved_background: Literal["transparent", "opaque"] = (
        "transparent" if background == "transparent" else "opaque"
    )

    # 6. Delivery, streaming, moderation, user, seed.
    response_format = (rules.default_response_format if request.response_format is None
                       else request.response_format)
    if response_format not in ("url", "b64_json"):
        raise invalid_value("response_format", response_format, ["url", "b64_json"])
    partial_images = 0 if request.partial_images is None else request.partial_images
    if not 0 <= partial_images <= 3:
        raise InvalidRequest(
            f"Invalid 'partial_images': expected an integer between 0 and 3, but got "
            f"{partial_images} instead.", param="partial_images", code="invalid_value",
        )
    stream = bool(request.stream)
    if stream and response_format == "url":
        raise InvalidRequest(
            "Streaming returns images as base64; 'response_format' must be 'b64_json' "
            "when 'stream' is true.", param="response_format", code="invalid_value",
        )
    frames = _frames(request, output_format, n, stream, partial_images)
    moderation = "auto" if request.moderation is None else request.moderation
    if moderation not in ("auto", "low"):
        raise invalid_value("moderation", moderation, ["low", "auto"])
    for field, value in (("user", request.user),
                         ("safety_identifier", request.safety_identifier)):
        if value is not None and len(value) > USER_MAX:
            raise InvalidRequest(
                f"Invalid '{field}': string too long. Expected a string with maximum length "
                f"{USER_MAX}, but got a string with length {len(value)} instead.",
                param=field, code="string_above_max_length",
            )
    seed = request.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
    elif not 0 <= seed <= SEED_MAX - 10:
        raise InvalidRequest(
            f"Invalid 'seed': expected an integer between 0 and {SEED_MAX - 10}.",
            param="seed", code="invalid_value",
        )

    _check_controls(request, rules.prompt_max)
    params = GenerationParams(
        prompt=request.prompt,
        width=width,
        height=height,
        seeds=tuple(seed + i for i in range(n)),
        quality=engine_quality,
        transparent=resolved_background == "transparent",
        style=style,
        steps=request.steps,
        negative_prompt=request.negative_prompt,
        guidance=None if request.guidance_scale is None else float(request.guidance_scale),
        scheduler=request.scheduler,
    )
    return GenerationPlan(
        entry=entry,
        params=params,
        size=f"{width}x{height}",
        quality=quality,
        background=resolved_background,
        output_format=output_format,
        output_compression=compression,
        response_format=response_format,  # type: ignore[arg-type]
        stream=stream,
        partial_images=partial_images,
        moderation=moderation,  # type: ignore[arg-type]
        user=request.user,
        safety_identifier=request.safety_identifier or request.user,
        prompt_tokens=text_tokens(request.prompt),
        frame_count=frames[0],
        frame_duration_ms=frames[1],
        svg_model=request.svg.model if request.svg is not None else None,
        lora=_lora(request, entry.adapters),
    )


def _check_controls(request: CreateImageRequest, prompt_max: int) -> None:
    """The sampling extensions' own ranges; whether the engine honours them is the
    service's check, which knows the engine."""
    if request.steps is not None and not 1 <= request.steps <= STEPS_MAX:
        raise InvalidRequest(
            f"Invalid 'steps': expected an integer between 1 and {STEPS_MAX}, but got "
            f"{request.steps} instead.", param="steps", code="invalid_value")
    scale = request.guidance_scale
    if scale is not None and not 0 <= scale <= GUIDANCE_MAX:
        raise InvalidRequest(
            f"Invalid 'guidance_scale': expected a number between 0 and {GUIDANCE_MAX}, but "
            f"got {scale} instead.", param="guidance_scale", code="invalid_value")
    if request.scheduler is not None and request.scheduler not in SAMPLERS:
        raise invalid_value("scheduler", request.scheduler, list(SAMPLERS))
    negative = request.negative_prompt
    if negative is not None and (len(negative) > prompt_max or _CONTROL.search(negative)):
        raise InvalidRequest(
            f"Invalid 'negative_prompt': expected printable text of at most {prompt_max} "
            "characters.", param="negative_prompt", code="invalid_value")


def _lora(request: CreateImageRequest, own: tuple[tuple[str, float], ...]
          ) -> tuple[tuple[str, float], ...]:
    """The model name's adapters, then the request's: one the request names again takes the
    request's scale."""
    refs = request.lora or []
    asked: dict[str, float] = dict(own)
    for index, ref in enumerate(refs):
        where = f"lora[{index}]"
        if not ref.name.strip() or len(ref.name) > LORA_NAME_MAX or _CONTROL.search(ref.name):
            raise InvalidRequest(f"Invalid '{where}.name': expected the name of an adapter "
                                 "the server offers (GET /v1/models).", param="lora",
                                 code="invalid_value")
        scale = 1.0 if ref.scale is None else float(ref.scale)
        if not -LORA_SCALE_MAX <= scale <= LORA_SCALE_MAX:
            raise InvalidRequest(f"Invalid '{where}.scale': expected a number between "
                                 f"-{LORA_SCALE_MAX:g} and {LORA_SCALE_MAX:g}, but got "
                                 f"{scale:g} instead.", param="lora", code="invalid_value")
        if any(other.name == ref.name for other in refs[:index]):
            raise InvalidRequest(f"Invalid 'lora': the adapter '{ref.name}' is named twice.",
                                 param="lora", code="invalid_value")
        asked.pop(ref.name, None)
        asked[ref.name] = scale
    return tuple(asked.items())


def _engine_quality(quality: str, complexity: str | None) -> Quality:
    """The engine's level of work: the asked quality (`hd` is `high`, dall-e's `standard` is
    `medium`), one level less for `complexity: low` and one more for `high`."""
    level = {"low": 0, "high": 2, "hd": 2, "xhigh": 3, "max": 4}.get(quality, 1)
    level += {"low": -1, "high": 1}.get(complexity or "medium", 0)
    return QUALITY_LEVELS[min(max(level, 0), len(QUALITY_LEVELS) - 1)]


def _frames(request: CreateImageRequest, output_format: str, n: int, stream: bool,
            partial_images: int) -> tuple[int, int]:
    """A GIF's frame count and per-frame duration (0, 0 for other formats), and the spec's
    exclusions for `gif` and `svg` (CONTRACT §11): no streaming, no partial images, no
    custom compression; `svg` also `n=1`, and each format's own fields only with it."""
    if output_format != "gif":
        for field in ("frame_count", "frame_duration_ms"):
            if getattr(request, field) is not None:
                raise InvalidRequest(
                    f"Invalid '{field}': it is only supported with output_format 'gif'.",
                    param=field, code="invalid_value")
    if output_format != "svg" and request.svg is not None:
        raise InvalidRequest("Invalid 'svg': it requires output_format 'svg'.", param="svg",
                             code="invalid_value")
    if output_format not in ("gif", "svg"):
        return 0, 0
    for field, present in (("stream", stream), ("partial_images", partial_images > 0),
                           ("output_compression", request.output_compression is not None)):
        if present:
            raise InvalidRequest(
                f"Invalid '{field}': output_format '{output_format}' does not support "
                f"{field.replace('_', ' ')}.", param=field, code="invalid_value")
    if output_format == "svg":
        if n != 1:
            raise InvalidRequest("Invalid 'n': SVG generation requires n=1.", param="n",
                                 code="invalid_value")
        return 0, 0
    low, high, default = FRAME_COUNT
    count = default if request.frame_count is None else request.frame_count
    if not low <= count <= high:
        raise InvalidRequest(
            f"Invalid 'frame_count': expected an integer between {low} and {high}, but got "
            f"{count} instead.", param="frame_count", code="invalid_value")
    duration = 200 if request.frame_duration_ms is None else request.frame_duration_ms
    if duration < 1:
        raise InvalidRequest(
            "Invalid 'frame_duration_ms': integer below minimum value. Expected a value >= 1, "
            f"but got {duration} instead.", param="frame_duration_ms",
            code="integer_below_min_value")
    return count, min(FRAME_DURATION_MAX_MS, max(10, round(duration / 10) * 10))
