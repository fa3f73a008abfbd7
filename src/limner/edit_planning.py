"""Edit and variation requests -> a `GenerationPlan` that starts from the given pictures.

The fields an edit shares with a generation meet the very same checks (`plan_request`):
the edit's own rules come first (model, image count, formats, mask), then its pictures are
decoded (`limner.input_images`) and laid out as the starting picture, at the size the
plan settled. Runs in a worker thread: decoding grows with the upload.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from PIL import Image

from limner import input_images
from limner.catalogue import Catalogue, ModelEntry
from limner.errors import InvalidRequest, invalid_value, unsupported_parameter
from limner.input_images import InputImage, Upload
from limner.planning import GenerationPlan, plan_request
from limner.protocol.images import (
    CreateImageEditRequest,
    CreateImageRequest,
    CreateImageVariationRequest,
)
from limner.rules import parse_size
from limner.usage import input_image_tokens

EDIT_DEFAULT_MODEL = "gpt-image-1.5"
"""The spec's default for `/images/edits` (CONTRACT §10)."""
MAX_IMAGES = 16
GPT_FORMATS = ("png", "webp", "jpeg")
GPT_MAX_BYTES = 50 * 1024 * 1024
DALL_E_MAX_BYTES = 4 * 1024 * 1024
STRENGTH = {"low": 0.75, "high": 0.5}
"""How far an unmasked edit's start is noised, by `input_fidelity`: high keeps more of it."""
VARIATION_STRENGTH = 0.6
"""A variation keeps the layout and colours of the picture and redraws its detail."""
_EDIT_ONLY = ("images", "mask", "input_fidelity")
_FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536")


def plan_edit(request: CreateImageEditRequest, images: list[Upload], mask: Upload | None,
              catalogue: Catalogue, *, json_body: bool,
              markup: Upload | None = None) -> GenerationPlan:
    """`markup` (multipart only): a transparent PNG drawn over the first picture before the
    edit, to guide it; the 2.5 models take it, never with a mask (CONTRACT §11)."""
    entry = edit_model(request, catalogue, json_body)
    dall_e = entry.rules.family == "dall-e-2"
    field = "images" if json_body else "image"
    if not images:
        raise InvalidRequest(f"Missing required parameter: '{field}'.", param=field,
                             code="missing_required_parameter")
    most = 1 if dall_e else MAX_IMAGES
    if len(images) > most:
        raise InvalidRequest(
            f"Invalid '{field}': expected at most {most} image{'s' if most > 1 else ''}, but "
            f"got {len(images)}.", param=field, code="invalid_value")
    fidelity = _fidelity(request.input_fidelity, entry)
    if markup is not None:
        if entry.rules.family != "gpt-image-2.5":
            raise unsupported_parameter("markup", entry.name)
        if mask is not None:
            raise InvalidRequest("Invalid 'markup': it cannot be combined with 'mask'.",
                                 param="markup", code="invalid_value")
    if request.output_format == "gif" and mask is not None:
        raise InvalidRequest("Invalid 'mask': output_format 'gif' does not support masks.",
                             param="mask", code="invalid_value")

    # Everything it shares with a generation, checked the same way before any decoding.
    fields = request.model_dump(exclude=set(_EDIT_ONLY), exclude_unset=True)
    fields["model"] = entry.name
    auto = request.size is None or request.size == "auto"
    if auto:
        fields["size"] = "1024x1024"  # a stand-in until the first picture's shape is known
    plan = plan_request(CreateImageRequest.model_validate(fields), catalogue)

    # The pictures: dall-e-2 takes one square PNG under 4 MB, GPT models PNG, WebP or JPEG.
    formats, max_bytes = (("png",), DALL_E_MAX_BYTES) if dall_e else (GPT_FORMATS, GPT_MAX_BYTES)
    decoded = [input_images.decode(upload, formats, max_bytes) for upload in images]
    mask_image = None
    if mask is not None:
        given = input_images.decode(mask, ("png",), DALL_E_MAX_BYTES)
        first = decoded[0].image
        if given.image.size != first.size:
            raise InvalidRequest(
                f"Invalid 'mask': the mask must have the same dimensions as the image "
                f"({first.width}x{first.height}), but it is "
                f"{given.image.width}x{given.image.height}.", param="mask",
                code="invalid_mask_size")
        mask_image = input_images.mask_from(given)
    if markup is not None:
        decoded[0] = _marked_up(decoded[0], input_images.decode(markup, ("png",),
                                                                GPT_MAX_BYTES))
    if dall_e:
        _check_dall_e_image(decoded[0], has_mask=mask is not None)
        if mask is None:  # the picture's own transparency says where to draw, if it has any
            mask_image = input_images.mask_from(decoded[0])
            if mask_image.getbbox() is None:
                mask_image = None

    if auto:
        fields["size"] = _auto_size(decoded[0], entry)
        plan = plan_request(CreateImageRequest.model_validate(fields), catalogue)
    params = plan.params
    start, where = input_images.starting_picture([d.image for d in decoded], mask_image,
                                                 params.width, params.height)
    strength = 1.0 if where is not None else STRENGTH[fidelity]
    params = dataclasses.replace(params, init_image=start, mask=where, strength=strength,
                                 references=tuple(d.image for d in decoded))
    tokens = sum(input_image_tokens(d.image.width, d.image.height, fidelity) for d in decoded)
    return dataclasses.replace(plan, params=params, endpoint="edits",
                               input_image_tokens=tokens if plan.is_gpt else 0,
                               inputs=tuple((u.data, f"image/{d.format}")
                                            for u, d in zip(images, decoded, strict=True)))


def plan_variation(request: CreateImageVariationRequest, images: list[Upload],
                   catalogue: Catalogue) -> GenerationPlan:
    """dall-e-2's variations: new pictures of the same subject, each from its own seed."""
    name = request.model if request.model is not None else "dall-e-2"
    if name == "":
        raise InvalidRequest("Invalid 'model': string too short. Expected 'dall-e-2'.",
                             param="model", code="string_below_min_length")
    entry = catalogue.resolve(name)
    if entry.rules.family != "dall-e-2":
        raise InvalidRequest(
            f"Invalid value: '{name}'. Image variations are only supported with 'dall-e-2'.",
            param="model", code="invalid_value")
    if not images:
        raise InvalidRequest("Missing required parameter: 'image'.", param="image",
                             code="missing_required_parameter")
    if len(images) > 1:
        raise InvalidRequest(
            f"Invalid 'image': expected one image, but got {len(images)}.",
            param="image", code="invalid_value")
    decoded = input_images.decode(images[0], ("png",), DALL_E_MAX_BYTES)
    _check_square(decoded)
    fields = request.model_dump(exclude_unset=True)
    fields.update(model=entry.name, prompt="a variation")  # checked as a prompt, then dropped
    plan = plan_request(CreateImageRequest.model_validate(fields), catalogue)
    params = plan.params
    start, _ = input_images.starting_picture([decoded.image], None, params.width,
                                             params.height)
    params = dataclasses.replace(params, prompt="", init_image=start,
                                 strength=VARIATION_STRENGTH)
    return dataclasses.replace(plan, params=params, endpoint="variations", prompt_tokens=0)


def edit_model(request: CreateImageEditRequest, catalogue: Catalogue,
                json_body: bool) -> ModelEntry:
    if request.model == "":
        raise InvalidRequest(
            "Invalid 'model': string too short. Expected a model name, such as "
            f"'{EDIT_DEFAULT_MODEL}'.", param="model", code="string_below_min_length")
    name = EDIT_DEFAULT_MODEL if request.model is None else request.model
    entry = catalogue.resolve(name)
    family = entry.rules.family
    if family == "dall-e-3":
        raise InvalidRequest(
            f"Invalid value: '{name}'. Image edits are supported with 'dall-e-2' and the GPT "
            "image models; 'dall-e-3' has none.", param="model", code="invalid_value")
    if json_body and not entry.rules.is_gpt:
        raise InvalidRequest(
            "JSON edits support GPT image models only; DALL-E edits require multipart.",
            param="model", code="invalid_value")
    return entry


def _fidelity(asked: str | None, entry: ModelEntry) -> Literal["low", "high"]:
    """`input_fidelity`: high or low on most GPT models, only low on gpt-image-1-mini, and
    not at all on gpt-image-2 (the SDK says to omit it there) or dall-e-2."""
    if asked is None:
        return "low"
    family = entry.rules.family
    if not entry.rules.is_gpt or family == "gpt-image-2":
        raise unsupported_parameter("input_fidelity", entry.name)
    allowed = ["low"] if entry.name == "gpt-image-1-mini" else ["high", "low"]
    if asked not in allowed:
        raise invalid_value("input_fidelity", asked, allowed)
    return "high" if asked == "high" else "low"


def _marked_up(image: InputImage, markup: InputImage) -> InputImage:
    """The first picture with the markup drawn over it: the edit starts from both."""
    if markup.image.size != image.image.size:
        raise InvalidRequest(
            f"Invalid 'markup': it must have the first image's dimensions "
            f"({image.image.width}x{image.image.height}), but it is "
            f"{markup.image.width}x{markup.image.height}.", param="markup",
            code="invalid_value")
    if markup.image.getchannel("A").getextrema()[0] == 255:
        raise InvalidRequest("Invalid 'markup': it must contain transparent pixels.",
                             param="markup", code="invalid_value")
    return dataclasses.replace(image, image=Image.alpha_composite(image.image, markup.image))


def _check_square(image: InputImage) -> None:
    width, height = image.image.size
    if width != height:
        raise InvalidRequest(
            f"Invalid input image - image must be square, got {width}x{height}.",
            param="image", code="invalid_image")


def _check_dall_e_image(image: InputImage, *, has_mask: bool) -> None:
    _check_square(image)
    if not has_mask and image.original_mode not in ("RGBA", "LA", "L"):
        raise InvalidRequest(
            f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got "
            f"{image.original_mode}.", param="image", code="invalid_image")


def _auto_size(image: InputImage, entry: ModelEntry) -> str:
    """`auto` for an edit: the fixed size nearest the input's shape (dall-e-2: square)."""
    rules = entry.rules
    if rules.family == "dall-e-2":
        return rules.default_size
    ratio = math.log(image.image.width / image.image.height)
    candidates = [size for size in _FIXED_SIZES if size in rules.sizes or rules.free_size]
    if not candidates:
        return rules.default_size
    best = min(candidates, key=lambda size: abs(math.log(_ratio(size)) - ratio))
    return best


def _ratio(size: str) -> float:
    parsed = parse_size(size)
    assert parsed is not None
    return parsed[0] / parsed[1]
