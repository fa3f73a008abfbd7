"""The Files API subset (`/v1/files`): upload, list, retrieve, download and delete files.

Registered after `routes.files`, so `/v1/files/images/...` stays the signed image downloads.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from limner.errors import InvalidRequest, invalid_value
from limner.server.forms import parse_limited
from limner.server.state import app_state, request_owner
from limner.store.files import CHUNK, PURPOSES, too_large

router = APIRouter()

FORM_OVERHEAD = 64 * 1024
"""Body bytes allowed beyond the file for the multipart framing and the small fields."""
MAX_FIELD_BYTES = 4096
MAX_FILENAME = 1024
MAX_LIST = 10_000
FIELDS = ("file", "purpose", "expires_after[anchor]", "expires_after[seconds]")
"""What the SDK sends; `expires_after` is accepted and ignored, since files never expire."""
_LIMIT = re.compile(r"[0-9]{1,12}")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


@router.post("/v1/files")
@router.post("/files", include_in_schema=False)
async def create_file(request: Request) -> JSONResponse:
    store = app_state(request.app).files
    form = await _read_form(request, store.max_bytes + FORM_OVERHEAD, store.max_bytes)
    try:
        upload, filename, purpose = _fields(form)
        record = await asyncio.to_thread(store.create, upload.file, filename, purpose,
                                         request_owner(request))
    finally:
        await form.close()
    return JSONResponse(record.to_openai())


@router.get("/v1/files")
@router.get("/files", include_in_schema=False)
async def list_files(request: Request) -> JSONResponse:
    store = app_state(request.app).files
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ["asc", "desc"])
    records, has_more = await asyncio.to_thread(
        store.list_files, query.get("purpose"), owner=request_owner(request), order=order,
        after=query.get("after"), limit=limit)
    return JSONResponse({"object": "list", "data": [r.to_openai() for r in records],
                         "has_more": has_more,
                         "first_id": records[0].id if records else None,
                         "last_id": records[-1].id if records else None})


@router.get("/v1/files/{file_id}")
@router.get("/files/{file_id}", include_in_schema=False)
async def retrieve_file(request: Request, file_id: str) -> JSONResponse:
    record = await asyncio.to_thread(app_state(request.app).files.get, file_id,
                                   request_owner(request))
    return JSONResponse(record.to_openai())


@router.get("/v1/files/{file_id}/content")
@router.get("/files/{file_id}/content", include_in_schema=False)
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    _, handle = await asyncio.to_thread(app_state(request.app).files.open, file_id,
                                         request_owner(request))
    try:
        head = await asyncio.to_thread(handle.read, 16)
        size = os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise
    media_type = next((kind for magic, kind in _MAGIC if head.startswith(magic)),
                      "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP"
                      else "application/octet-stream")
    # An uploaded file is someone else's content: the browser must not guess a type that
    # runs (HTML, SVG) or let anything in it run.
    headers = {"content-length": str(size), "x-content-type-options": "nosniff",
               "content-security-policy": "default-src 'none'; sandbox"}
    return StreamingResponse(_chunks(handle, head), media_type=media_type, headers=headers)


@router.delete("/v1/files/{file_id}")
@router.delete("/files/{file_id}", include_in_schema=False)
async def delete_file(request: Request, file_id: str) -> JSONResponse:
    await asyncio.to_thread(app_state(request.app).files.delete, file_id,
                            request_owner(request))
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _chunks(handle: BinaryIO, head: bytes) -> Iterator[bytes]:
    """The file from the open handle, so a delete during the download does not cut it."""
    with handle:
        if head:
            yield head
        while chunk := handle.read(CHUNK):
            yield chunk


async def _read_form(request: Request, body_limit: int, file_limit: int) -> FormData:
    """The multipart form, its body counted as it arrives: past `body_limit` the parse stops
    with 413, and the parser closes (so deletes) what it had spooled."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise InvalidRequest(
            f"Invalid content type: '{content_type or 'none'}'. This endpoint takes "
            "'multipart/form-data' with a 'file' and a 'purpose'.",
            code="invalid_content_type")
    return await parse_limited(request, body_limit, max_files=1, max_fields=16,
                               max_part_size=MAX_FIELD_BYTES,
                               too_large=lambda: too_large(file_limit))


def _fields(form: FormData) -> tuple[UploadFile, str, str]:
    for key in form:
        if key not in FIELDS:
            raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key,
                                 code="unknown_parameter")
    upload = form.get("file")
    purpose = form.get("purpose")
    if purpose is None:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                             code="missing_required_parameter")
    if not isinstance(purpose, str):
        raise InvalidRequest("Invalid type for 'purpose': expected a string, but got a file "
                             "instead.", param="purpose", code="invalid_type")
    if purpose not in PURPOSES:
        raise invalid_value("purpose", purpose, list(PURPOSES))
    if upload is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file",
                             code="missing_required_parameter")
    if isinstance(upload, str):
        raise InvalidRequest("Invalid type for 'file': expected a file, but got a string "
                             "instead.", param="file", code="invalid_type")
    # Lone surrogates from a malformed name could not be written out as UTF-8 JSON later.
    filename = (upload.filename or "").encode("utf-8", "replace").decode("utf-8")
    if len(filename) > MAX_FILENAME:
        raise InvalidRequest(f"Invalid 'file': the file name is longer than {MAX_FILENAME} "
                             "characters.", param="file", code="invalid_value")
    return upload, filename, purpose


def _limit(text: str | None) -> int:
    if text is None:
        return MAX_LIST
    if not _LIMIT.fullmatch(text):
        raise InvalidRequest("Invalid type for 'limit': expected an integer, but got a string "
                             "instead.", param="limit", code="invalid_type")
    limit = int(text)
    if limit < 1:
        raise InvalidRequest(f"Invalid 'limit': integer below minimum value. Expected a value "
                             f">= 1, but got {limit} instead.", param="limit",
                             code="integer_below_min_value")
    if limit > MAX_LIST:
        raise InvalidRequest(f"Invalid 'limit': integer above maximum value. Expected a value "
                             f"<= {MAX_LIST}, but got {limit} instead.", param="limit",
                             code="integer_above_max_value")
    return limit

