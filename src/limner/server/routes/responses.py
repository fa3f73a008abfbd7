"""The Responses API (`/v1/responses`, also without `/v1`): create, retrieve (or follow a
background stream), cancel, delete, and list a response's input items.

HTTP only: `ResponsesService` does the work. Whatever is refused is refused before a
stream opens or anything is stored; once a stream has begun, a failed drawing is its
`response.failed` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from limner.errors import InvalidRequest, LimnerError, invalid_value
from limner.paging import page_after
from limner.server.parsing import parse_json, read_body
from limner.server.routes.images import (
    INLINE_BODY_BYTES,
    ClientGone,
    check_available,
    counted,
    until_disconnect,
)
from limner.server.sse import HEARTBEAT, frame
from limner.server.state import app_state, request_owner

router = APIRouter()
log = logging.getLogger("limner.server")
MAX_ITEMS_PAGE = 100
_INTEGER = re.compile(r"-?[0-9]{1,12}")
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@router.post("/v1/responses")
@router.post("/responses", include_in_schema=False)
async def create_response(request: Request) -> Response:
    return await counted(request, _create(request))


async def _create(request: Request) -> Response:
    state = app_state(request.app)
    service = state.responses
    # A request may carry its pictures as data URLs, so it may be as large as an upload.
    body = await read_body(request, state.settings.max_upload_bytes)
    document = parse_json(body) if len(body) <= INLINE_BODY_BYTES \
        else await asyncio.to_thread(parse_json, body)
    _check_encodable(document)
    run = await service.prepare(document, request_owner(request), request.state.request_id)
    if run.call is not None:
        check_available(state, run.call.plan)
    if run.response.background:
        created = await service.start_background(run)
        if run.stream:
            events = await service.follow(created.id, run.owner, None)
            return StreamingResponse(_sse(events), media_type="text/event-stream",
                                     headers=STREAM_HEADERS)
        return JSONResponse(created.dump())
    generation = await service.admit(run)  # its 400 or 429 comes as plain JSON, streams too
    if run.stream:
        return StreamingResponse(_sse(service.stream(run, generation)),
                                 media_type="text/event-stream", headers=STREAM_HEADERS)
    try:
        answer = await until_disconnect(request, service.answer(run, generation))
    except ClientGone:
        log.info("%s client disconnected; response cancelled", run.request_id)
        return Response(status_code=499)
    return JSONResponse(answer.dump())


@router.get("/v1/responses/{response_id}")
@router.get("/responses/{response_id}", include_in_schema=False)
async def retrieve_response(request: Request, response_id: str) -> Response:
    service = app_state(request.app).responses
    owner = request_owner(request)
    query = request.query_params
    stream = query.get("stream", "false").lower()
    if stream not in ("true", "false"):
        raise invalid_value("stream", stream, ["true", "false"])
    if stream == "true":
        after = _integer(query.get("starting_after"), "starting_after")
        events = await service.follow(response_id, owner, after)
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers=STREAM_HEADERS)
    return JSONResponse(await service.get(response_id, owner))


@router.post("/v1/responses/{response_id}/cancel")
@router.post("/responses/{response_id}/cancel", include_in_schema=False)
async def cancel_response(request: Request, response_id: str) -> JSONResponse:
    service = app_state(request.app).responses
    return JSONResponse(await service.cancel(response_id, request_owner(request)))


@router.delete("/v1/responses/{response_id}")
@router.delete("/responses/{response_id}", include_in_schema=False)
async def delete_response(request: Request, response_id: str) -> JSONResponse:
    await app_state(request.app).responses.delete(response_id, request_owner(request))
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items")
@router.get("/responses/{response_id}/input_items", include_in_schema=False)
async def list_input_items(request: Request, response_id: str) -> JSONResponse:
    service = app_state(request.app).responses
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", order, ["asc", "desc"])
    limit = _integer(query.get("limit"), "limit")
    limit = 20 if limit is None else limit
    if not 1 <= limit <= MAX_ITEMS_PAGE:
        raise InvalidRequest(f"Invalid 'limit': expected a value from 1 to {MAX_ITEMS_PAGE}, "
                             f"but got {limit} instead.", param="limit", code="invalid_value")
    items = await service.input_items(response_id, request_owner(request))
    if order == "desc":
        items = items[::-1]
    page, has_more = page_after(items, query.get("after"), limit, "item",
                                lambda item: str(item.get("id")))
    return JSONResponse({"object": "list", "data": page,
                         "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None,
                         "has_more": has_more})


async def _sse(events: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[bytes]:
    """Each event as the SDK reads it; a failure past the 200 is the Responses API's own
    `error` event, not the Images API's."""
    sequence = -1
    try:
        async for event in events:
            if event is None:
                yield HEARTBEAT
                continue
            sequence = event["sequence_number"]
            yield frame(event["type"], json.dumps(event, separators=(",", ":")).encode())
    except Exception as exc:
        if not isinstance(exc, LimnerError):
            log.exception("a response stream failed after it had started")
        message = exc.message if isinstance(exc, LimnerError) else \
            "The server had an error while processing your request."
        code = exc.code if isinstance(exc, LimnerError) else "server_error"
        param = exc.param if isinstance(exc, LimnerError) else None
        yield frame("error", json.dumps({"type": "error", "code": code, "message": message,
                                         "param": param, "sequence_number": sequence + 1},
                                        separators=(",", ":")).encode())


def _integer(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    if not _INTEGER.fullmatch(text):
        raise InvalidRequest(f"Invalid type for '{name}': expected an integer, but got a "
                             "string instead.", param=name, code="invalid_type")
    return int(text)


def _check_encodable(document: dict[str, Any]) -> None:
    """Lone surrogates (`"\\ud800"` escapes) anywhere in it could never be written out
    again, to the store or to an answer."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest("The JSON body contains an unpaired surrogate escape.",
                             code="invalid_json") from exc
