"""Raw request bytes -> `CreateImageRequest`, with OpenAI's wording for every failure.

The body is read with a size cap, decoded as strict UTF-8 JSON (duplicate keys and deep
nesting refused), and validated with strict types, so `"n": "2"` or `"n": 2.0` is an
`invalid_type` error naming `n`.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from limner.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from limner.protocol.images import CreateImageRequest

Body = TypeVar("Body", bound=BaseModel)

MAX_DEPTH = 32
_JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a decimal number",
               list: "an array", dict: "an object", type(None): "null"}
_EXPECTED = {"prompt": "a string", "model": "a string", "quality": "a string",
             "response_format": "a string", "output_format": "a string", "size": "a string",
             "moderation": "a string", "background": "a string", "style": "a string",
             "user": "a string", "n": "an integer", "output_compression": "an integer",
             "partial_images": "an integer", "seed": "an integer", "stream": "a boolean",
             "safety_identifier": "a string", "complexity": "a string",
             "negative_prompt": "a string", "steps": "an integer",
             "guidance_scale": "a number", "scheduler": "a string",
             "frame_count": "an integer", "frame_duration_ms": "an integer",
             "svg": "an object", "svg.model": "a string", "svg.reasoning": "an object",
             "svg.reasoning.effort": "a string", "images": "an array of image references",
             "mask": "an object", "input_fidelity": "a string",
             "images.image_url": "a string", "images.file_id": "a string",
             "mask.image_url": "a string", "mask.file_id": "a string",
             "lora": "an array of {name, scale} objects", "lora.name": "a string",
             "lora.scale": "a number"}


async def read_body(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():
        raise UnsupportedMediaType(
            f"Unsupported content type: '{content_type or 'none'}'. This endpoint takes "
            "'application/json'.", code="unsupported_content_type",
        )
    return await read_limited(request, limit)


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit`: never buffered beyond it."""
    declared = request.headers.get("content-length")
    if (declared is not None and declared.isascii() and declared.isdigit()
            and (len(declared) > 15 or int(declared) > limit)):
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise InvalidRequest("The client disconnected while sending the body.") from exc
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.",
                           code="request_too_large")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest(f"Duplicate key in the JSON body: '{key}'.", param=key,
                                 code="invalid_json")
        result[key] = value
    return result


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest(
            "We could not parse the JSON body of your request: the body is empty. "
            "(HINT: send a JSON object with at least a 'prompt'.)", code="invalid_json",
        )
    try:
        text = body.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request body is not valid UTF-8.",
                             code="invalid_json") from exc
    except (ValueError, RecursionError) as exc:  # ValueError: also over-long integers
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)", code="invalid_json",
        ) from exc
    if not isinstance(document, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if _depth(document) > MAX_DEPTH:
        raise InvalidRequest("The JSON body is nested too deeply.", code="invalid_json")
    for key, value in document.items():
        try:  # "\ud800" escapes decode to lone surrogates, which no encoder accepts later
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest("A key of the JSON body contains an unpaired surrogate escape.",
                                 code="invalid_json") from exc
        if isinstance(value, list):
            continue  # no field takes an array, so one is refused for its type anyway
        try:  # a string, or an object's strings (`svg`): the answer may echo them
            (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
             ).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"Invalid '{key}': it contains an unpaired surrogate escape.",
                                 param=key, code="invalid_value") from exc
    return document


def parse_request(document: dict[str, Any]) -> CreateImageRequest:
    return parse_as(CreateImageRequest, document)


def parse_as(body: type[Body], document: dict[str, Any], at: str | None = None) -> Body:
    """`document` as `body`; `at` is where it sits in a larger request (`tools[0]`), for
    the `param` of its errors."""
    # Unknown keys first, by hand: pydantic would build one error per key (for a body of
    # tens of thousands of keys, while holding the interpreter), where the answer names
    # only the first.
    for key in document:
        if key not in body.model_fields:
            name = f"{at}.{key}" if at else key
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name,
                                 code="unknown_parameter")
    try:
        return body.model_validate(document)
    except ValidationError as exc:
        error = _translate(exc, document)
        if at and error.param:
            error.message = error.message.replace(f"'{error.param}'", f"'{at}.{error.param}'")
            error.param = f"{at}.{error.param}"
        raise error from None


def coerce_form_value(name: str, value: str) -> Any:
    """A multipart field's string as the type its JSON twin has (`"2"` -> 2, `"false"` ->
    False), so both bodies meet the same checks; a string that is no such value is the
    JSON body's `invalid_type` error."""
    expected = _EXPECTED.get(name, "a string")
    if name == "lora":
        return _form_lora(value)
    try:
        if expected == "an integer":
            return int(value.strip())
        if expected == "a number":
            number = float(value.strip())
            return int(number) if number.is_integer() and "." not in value else number
        if expected == "a boolean":
            lowered = value.strip().lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {expected}, but got a string that is not "
            "one instead.", param=name, code="invalid_type") from None
    return value


def _form_lora(value: str) -> Any:
    """A form's `lora`: the JSON body's array (or object) as text, or the short form
    `name` / `name:scale`, comma-separated."""
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            raise InvalidRequest("Invalid 'lora': expected a JSON array of {name, scale} "
                                 "objects, or names with optional scales: 'ink:0.8,paper'.",
                                 param="lora", code="invalid_value") from None
    adapters: list[dict[str, Any]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, colon, scale = part.rpartition(":") if ":" in part else (part, "", "")
        item: dict[str, Any] = {"name": name.strip()}
        if colon:
            try:
                item["scale"] = float(scale)
            except ValueError:
                raise InvalidRequest(f"Invalid 'lora': {scale!r} is not a scale in "
                                     f"{part!r}.", param="lora", code="invalid_value") from None
        adapters.append(item)
    return adapters


def _translate(exc: ValidationError, document: dict[str, Any]) -> InvalidRequest:
    errors = exc.errors()
    order = {"extra_forbidden": 0, "missing": 1}
    first = sorted(errors, key=lambda e: order.get(e["type"], 2))[0]
    # The path into the body (`svg.model`), without pydantic's union tags (`int`, `float`).
    path: list[str] = []
    kinds: list[str] = []
    value: Any = document
    for part in first["loc"]:
        if isinstance(value, list) and isinstance(part, int) and part < len(value):
            path[-1] += f"[{part}]"
            value = value[part]
            continue
        if not isinstance(value, dict):
            break
        path.append(str(part))
        kinds.append(str(part))
        value = value.get(part)
    field = ".".join(path) or None
    if first["type"] == "extra_forbidden" and field is not None:
        return InvalidRequest(f"Unknown parameter: '{field}'.", param=field,
                              code="unknown_parameter")
    if first["type"] == "missing" and field is not None:
        return InvalidRequest(f"Missing required parameter: '{field}'.", param=field,
                              code="missing_required_parameter")
    if field is not None:
        got = _JSON_TYPES.get(type(value), "a value of another type")
        if field == "prompt" and value is None:
            return InvalidRequest("Missing required parameter: 'prompt'.", param="prompt",
                                  code="missing_required_parameter")
        expected = _EXPECTED.get(".".join(kinds), "another type")
        return InvalidRequest(
            f"Invalid type for '{field}': expected {expected}, but got {got} instead.",
            param=field, code="invalid_type",
        )
    return InvalidRequest(str(first["msg"]), code="invalid_value")
