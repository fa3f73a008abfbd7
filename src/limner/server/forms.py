"""multipart/form-data bodies (edits, variations) -> the same document a JSON body gives.

python-multipart (through Starlette) does the parsing; this module adds a byte limit that
holds while the body arrives, and OpenAI's rules: scalars come as strings and are coerced
to their JSON type (`parsing.coerce_form_value`), `image[]` is the list form of `image`,
`svg[model]` is `svg.model`, and a string where a file belongs (or the reverse) is the
`invalid_type` error the live API gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from limner.errors import InvalidRequest, LimnerError, PayloadTooLarge
from limner.input_images import Upload
from limner.server.parsing import coerce_form_value

_BRACKETS = re.compile(r"([A-Za-z_]+)((?:\[[A-Za-z_]+\])*)")
FILE_FIELDS = {"image": "one of an array of files or file", "mask": "a file",
               "markup": "a file"}
"""The parts that carry files, and how the type error describes what was expected."""


@dataclass
class FormBody:
    document: dict[str, Any] = field(default_factory=dict)
    """The scalar fields, typed as in JSON (`svg[model]` nested as `svg.model`)."""
    files: dict[str, list[Upload]] = field(default_factory=dict)
    """The file parts by field (`image[]` under `image`), in the order sent."""


async def read_form(request: Request, limit: int, *, file_fields: tuple[str, ...],
                    max_files: int = 17, max_fields: int = 64) -> FormBody:
    """Parses the body, refusing it (413) once more than `limit` bytes have arrived."""
    form = await parse_limited(request, limit, max_files=max_files, max_fields=max_fields)
    body = FormBody()
    try:
        for key, value in form.multi_items():
            await _add(body, key, value, file_fields)
    finally:
        await form.close()  # spooled parts on disk go now, whatever happened
    return body


async def parse_limited(request: Request, limit: int, *, max_files: int, max_fields: int,
                        max_part_size: int = 1024 * 1024,
                        too_large: Callable[[], LimnerError] | None = None) -> FormData:
    """Starlette's form parse, its body counted as it arrives: past `limit` the parse stops
    with `too_large()` (413 by default), and the parser closes (so deletes) what it had
    spooled. A malformed body is a 400."""
    def refuse() -> LimnerError:
        if too_large is not None:
            return too_large()
        return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.",
                               code="request_too_large")

    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 15
                                                      or int(declared) > limit):
        raise refuse()
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise refuse()
        return message

    try:
        return await Request(request.scope, receive).form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
    except (MultiPartException, HTTPException) as exc:
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise InvalidRequest(f"The multipart body could not be parsed: {detail}",
                             code="invalid_multipart") from exc
    except ClientDisconnect as exc:
        raise InvalidRequest("The client disconnected while sending the body.") from exc


async def _add(body: FormBody, key: str, value: UploadFile | str,
               file_fields: tuple[str, ...]) -> None:
    name = key[:-2] if key.endswith("[]") else key
    if name in file_fields:
        if not isinstance(value, UploadFile):
            expected = FILE_FIELDS.get(name, "a file")
            raise InvalidRequest(
                f"Invalid type for '{name}': expected {expected}, but got a string instead.",
                param=name, code="invalid_type")
        if name != "image" and name in body.files:
            raise InvalidRequest(f"Invalid '{name}': only one file may be sent.", param=name,
                                 code="invalid_value")
        data = await value.read()
        content_type = value.content_type or "application/octet-stream"
        body.files.setdefault(name, []).append(Upload(name, data, content_type))
        return
    match = _BRACKETS.fullmatch(key)
    if match is None or isinstance(value, UploadFile):
        if match is not None and isinstance(value, UploadFile):
            raise InvalidRequest(
                f"Invalid type for '{key}': expected a string, but got a file instead.",
                param=key, code="invalid_type")
        raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key,
                             code="unknown_parameter")
    path = [match.group(1), *re.findall(r"\[([A-Za-z_]+)\]", match.group(2))]
    dotted = ".".join(path)
    target = body.document
    for part in path[:-1]:
        inner = target.setdefault(part, {})
        if not isinstance(inner, dict):
            raise InvalidRequest(f"Invalid type for '{part}': expected an object.",
                                 param=part, code="invalid_type")
        target = inner
    if path[-1] in target:
        raise InvalidRequest(f"Duplicate parameter: '{dotted}'.", param=dotted,
                             code="invalid_value")
    target[path[-1]] = coerce_form_value(dotted, value)
