"""`GET /v1/models`, `GET /v1/models/{model}`, and the operators' `POST .../load|unload`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from limner.catalogue import ModelEntry
from limner.errors import Forbidden
from limner.protocol.models import Model, ModelList
from limner.rules import SHUTDOWN_DATES
from limner.server.state import AppState, app_state

router = APIRouter()


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    state = app_state(request.app)
    offered = {name: state.loras.for_engine(name, queue.info)
               for name, queue in state.schedulers.items()}
    return ModelList(data=[_model(e, state, offered.get(e.engine, []))
                           for e in state.catalogue.entries()])


@router.post("/v1/models/{model:path}/load")
@router.post("/models/{model:path}/load", include_in_schema=False)
async def load_model(request: Request, model: str) -> Model:
    """Loads the engine behind `model` now (unloading idle ones if the budget needs room),
    answering once it is ready; a failed model is tried again."""
    state = _as_admin(request)
    entry = state.catalogue.resolve(model)
    await state.residency.load(entry.engine)
    return _described(entry, state)


@router.post("/v1/models/{model:path}/unload")
@router.post("/models/{model:path}/unload", include_in_schema=False)
async def unload_model(request: Request, model: str) -> Model:
    """Frees the engine's memory; the next request for it loads it again. 409 while it
    draws."""
    state = _as_admin(request)
    entry = state.catalogue.resolve(model)
    await state.residency.unload(entry.engine)
    return _described(entry, state)


@router.get("/v1/models/{model:path}")
@router.get("/models/{model:path}", include_in_schema=False)
async def get_model(request: Request, model: str) -> Model:
    state = app_state(request.app)
    return _described(state.catalogue.resolve(model), state)


def _described(entry: ModelEntry, state: AppState) -> Model:
    queue = state.schedulers.get(entry.engine)
    offered = state.loras.for_engine(entry.engine, queue.info) if queue is not None else []
    return _model(entry, state, offered)


def _model(entry: ModelEntry, state: AppState, adapters: list[str]) -> Model:
    now = state.residency.state(entry.engine)
    return Model(id=entry.name, created=state.started_at, owned_by=entry.owned_by,
                 shutdown_date=SHUTDOWN_DATES.get(entry.name), status=now.status,
                 status_reason=now.reason, engine=entry.engine,
                 memory=dict(now.memory) if now.memory else None, adapters=adapters,
                 lora=[{"name": n, "scale": s} for n, s in entry.adapters] or None)


def _as_admin(request: Request) -> AppState:
    """Loading and unloading change what everyone gets: admin keys only (any key where
    the server has no keys at all)."""
    if not request.scope.get("state", {}).get("admin", False):
        raise Forbidden("Loading and unloading models needs an admin key (admin_keys in the "
                        "server's configuration).", code="admin_key_required")
    return app_state(request.app)
