"""The Batch API over HTTP (`/v1/batches`, also without `/v1`): create, retrieve, list and
cancel. The work itself is `limner.batches.runner`'s; another key's batch is a 404 exactly
like an unknown id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from limner.batches.lines import ENDPOINTS
from limner.batches.store import TERMINAL, BatchRecord
from limner.errors import Conflict, InvalidRequest, NotFound, expect_type, invalid_value
from limner.metadata import check_metadata
from limner.server.parsing import parse_json, read_body
from limner.server.state import app_state, request_owner

router = APIRouter()
FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata",
          "output_expires_after")
"""What the SDK sends; `output_expires_after` is accepted and ignored, since files never
expire."""
REQUIRED = ("input_file_id", "endpoint", "completion_window")
MAX_LIST = 100
_LIMIT = re.compile(r"[0-9]{1,12}")


@router.post("/v1/batches")
@router.post("/batches", include_in_schema=False)
async def create_batch(request: Request) -> JSONResponse:
    state = app_state(request.app)
    owner = request_owner(request)
    document = parse_json(await read_body(request, state.settings.max_body_bytes))
    input_file_id, endpoint, window, metadata = _create_fields(document)
    try:
        upload = await asyncio.to_thread(state.files.get, input_file_id, owner)
    except NotFound as exc:
        raise InvalidRequest(f"Invalid 'input_file_id': no file '{input_file_id}' exists.",
                             param="input_file_id", code="invalid_value") from exc
    if upload.purpose != "batch":
        raise InvalidRequest(
            f"Invalid 'input_file_id': the file '{input_file_id}' has purpose "
            f"'{upload.purpose}', but a batch's input file must have purpose 'batch'.",
            param="input_file_id", code="invalid_value")
    record = await asyncio.to_thread(state.batches.create, owner, input_file_id, endpoint,
                                     window, metadata)
    if state.batch_runner is not None:
        state.batch_runner.submitted(record.id)
    return JSONResponse(record.to_openai())


@router.get("/v1/batches")
@router.get("/batches", include_in_schema=False)
async def list_batches(request: Request) -> JSONResponse:
    query = request.query_params
    limit = _limit(query.get("limit"))
    records, has_more = await asyncio.to_thread(
        app_state(request.app).batches.list_batches, request_owner(request),
        after=query.get("after"), limit=limit)
    return JSONResponse({"object": "list", "data": [r.to_openai() for r in records],
                         "first_id": records[0].id if records else None,
                         "last_id": records[-1].id if records else None,
                         "has_more": has_more})


@router.get("/v1/batches/{batch_id}")
@router.get("/batches/{batch_id}", include_in_schema=False)
async def retrieve_batch(request: Request, batch_id: str) -> JSONResponse:
    record = await asyncio.to_thread(app_state(request.app).batches.get, batch_id,
                                     request_owner(request))
    return JSONResponse(record.to_openai())


@router.post("/v1/batches/{batch_id}/cancel")
@router.post("/batches/{batch_id}/cancel", include_in_schema=False)
async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
    state = app_state(request.app)
    store = state.batches
    record = await asyncio.to_thread(store.get, batch_id, request_owner(request))
    now = int(state.service.clock())

    def cancelling(current: BatchRecord) -> BatchRecord:
        if current.status not in ("validating", "in_progress"):
            return current
        return dataclasses.replace(current, status="cancelling", cancelling_at=now)

    record = await asyncio.to_thread(store.update, record.id, cancelling)
    if record.status in TERMINAL and record.status != "cancelled":
        raise Conflict(f"Cannot cancel the batch '{batch_id}': it is already "
                       f"{record.status}.", param="batch_id", code="batch_not_cancellable")
    if state.batch_runner is not None:
        state.batch_runner.cancel(record.id)
    return JSONResponse(record.to_openai())


def _create_fields(document: dict[str, Any]) -> tuple[str, str, str, dict[str, str] | None]:
    for key in document:
        if key not in FIELDS:
            raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key,
                                 code="unknown_parameter")
    for key in REQUIRED:
        if document.get(key) is None:
            raise InvalidRequest(f"Missing required parameter: '{key}'.", param=key,
                                 code="missing_required_parameter")
        expect_type(key, document[key], str)
    if document.get("output_expires_after") is not None:
        expect_type("output_expires_after", document["output_expires_after"], dict)
    endpoint, window = document["endpoint"], document["completion_window"]
    if endpoint not in ENDPOINTS:
        raise invalid_value("endpoint", endpoint, list(ENDPOINTS))
    if window != "24h":
        raise invalid_value("completion_window", window, ["24h"])
    return document["input_file_id"], endpoint, window, check_metadata(document.get("metadata"))


def _limit(text: str | None) -> int:
    if text is None:
        return 20
    if not _LIMIT.fullmatch(text):
        raise InvalidRequest("Invalid type for 'limit': expected an integer, but got a string "
                             "instead.", param="limit", code="invalid_type")
    limit = int(text)
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"Invalid 'limit': expected a value from 1 to {MAX_LIST}, but "
                             f"got {limit} instead.", param="limit", code="invalid_value")
    return limit
