"""`GET /healthz`: 200 once the default model is loaded, 503 before."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from limner.server.state import app_state

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    state = app_state(request.app)
    default = state.catalogue.default_engine
    body: dict[str, Any] = {
        "status": "ok" if default in state.loaded else "loading",
        "default_model": default,
        "loaded": sorted(state.loaded),
        "queue_depth": {name: s.queue_depth for name, s in state.schedulers.items()},
    }
    replicas = {name: up for name, s in state.schedulers.items()
                if (up := s.replicas_up()) is not None}
    if replicas:  # served through Ray: how many replicas each model has up
        body["replicas"] = replicas
    if state.load_errors:
        body["status"] = "error" if default in state.load_errors else body["status"]
        body["errors"] = state.load_errors
    return JSONResponse(body, status_code=200 if default in state.loaded else 503)
