"""`POST /v1/content_provenance_checks`: what a picture's content credentials say. A file
without any, or one that is not a picture, is an answer (`not_present`), never an error."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from limner.errors import InvalidRequest
from limner.protocol.provenance import ContentProvenanceCheck, ResultC2PA, ResultWatermark
from limner.server.forms import read_form
from limner.server.state import app_state

router = APIRouter(prefix="/v1")


@router.post("/content_provenance_checks", include_in_schema=False)
async def check(request: Request) -> JSONResponse:
    state = app_state(request.app)
    limit = state.settings.max_upload_bytes
    form = await read_form(request, limit, file_fields=("file",), max_files=1, max_fields=4)
    files = form.files.get("file", [])
    if not files:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file",
                             code="missing_required_parameter")
    found = await asyncio.to_thread(state.provenance.checker.results, files[0].data)
    answer = ContentProvenanceCheck(created_at=int(time.time()), results=[
        ResultWatermark.model_validate(r) if r["type"] == "limner_watermark"
        else ResultC2PA.model_validate(r) for r in found])
    return JSONResponse(answer.model_dump(exclude_none=False))
