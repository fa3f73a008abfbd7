"""`GET /metrics`: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from limner.server.state import app_state

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    rendered = app_state(request.app).service.metrics.render()
    return PlainTextResponse(rendered, media_type="text/plain; version=0.0.4")
