"""`GET /v1/models` and `GET /v1/models/{model}`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from limner.protocol.models import Model, ModelList
from limner.server.state import app_state

router = APIRouter()


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    state = app_state(request.app)
    return ModelList(data=[Model(id=e.name, created=state.started_at, owned_by=e.owned_by)
                           for e in state.catalogue.entries()])


@router.get("/v1/models/{model:path}")
@router.get("/models/{model:path}", include_in_schema=False)
async def get_model(request: Request, model: str) -> Model:
    state = app_state(request.app)
    entry = state.catalogue.resolve(model)
    return Model(id=entry.name, created=state.started_at, owned_by=entry.owned_by)
