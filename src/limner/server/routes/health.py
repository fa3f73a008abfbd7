"""`GET /healthz`: 200 once the default model has loaded (and while it may load again on
demand), 503 before and after its load failed; each model's state and memory."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from limner.server.state import app_state

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    state = app_state(request.app)
    residency = state.residency
    default = state.catalogue.default_engine
    first = residency.state(default)
    healthy = first.status != "failed" and first.load_s is not None
    models: dict[str, Any] = {}
    for name in residency.names:
        model = residency.state(name)
        entry: dict[str, Any] = {"status": model.status, "memory": dict(model.memory)}
        if model.reason is not None:
            entry["reason"] = model.reason
        if model.keep_alive_s is not None:
            entry["keep_alive_s"] = model.keep_alive_s
        if model.idle_s is not None:
            entry["idle_s"] = round(model.idle_s, 1)
        models[name] = entry
    body: dict[str, Any] = {
        "status": "ok" if healthy else "loading",
        "default_model": default,
        "loaded": sorted(n for n in residency.names if residency.ready(n)),
        "queue_depth": {name: s.queue_depth for name, s in state.schedulers.items()},
        "models": models,
    }
    replicas = {name: up for name, s in state.schedulers.items()
                if (up := s.replicas_up()) is not None}
    if replicas:  # served through Ray: how many replicas each model has up
        body["replicas"] = replicas
    errors = {name: m["reason"] for name, m in models.items() if m["status"] == "failed"}
    if errors:
        body["status"] = "error" if first.status == "failed" else body["status"]
        body["errors"] = errors
    return JSONResponse(body, status_code=200 if healthy else 503)
