"""`GET /v1/models` and `GET /v1/models/{model}`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from limner.protocol.models import Model, ModelList
from limner.rules import SHUTDOWN_DATES
from limner.server.state import app_state

router = APIRouter()


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    state = app_state(request.app)
    return ModelList(data=[_model(e.name, e.owned_by, state.started_at)
                           for e in state.catalogue.entries()])


@router.get("/v1/models/{model:path}")
@router.get("/models/{model:path}", include_in_schema=False)
async def get_model(request: Request, model: str) -> Model:
    state = app_state(request.app)
    entry = state.catalogue.resolve(model)
    found = _model(entry.name, entry.owned_by, state.started_at)
    failure = state.load_errors.get(entry.engine)
    if failure is not None:
        return found.model_copy(update={"status": "failed", "status_reason": failure})
    status = "ready" if entry.engine in state.loaded else "loading"
    return found.model_copy(update={"status": status})


def _model(name: str, owned_by: str, created: int) -> Model:
    return Model(id=name, created=created, owned_by=owned_by,
                 shutdown_date=SHUTDOWN_DATES.get(name))
