"""What the routes reach through `app.state`, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limner.batches.store import BatchStore
from limner.catalogue import Catalogue
from limner.config import Settings
from limner.engines.base import Engine
from limner.loras import LoraLibrary
from limner.provenance.policy import Provenance
from limner.residency import Residency
from limner.responses.service import ResponsesService
from limner.scheduler import EngineQueue
from limner.service import Delivery, ImageService
from limner.store.files import FileStore

if TYPE_CHECKING:
    from limner.batches.runner import BatchRunner


@dataclass
class AppState:
    settings: Settings
    catalogue: Catalogue
    engines: dict[str, Engine]
    schedulers: dict[str, EngineQueue]
    service: ImageService
    delivery: Delivery
    started_at: int
    files: FileStore
    responses: ResponsesService
    batches: BatchStore
    residency: Residency
    loras: LoraLibrary
    provenance: Provenance
    tasks: list[Any] = field(default_factory=list)
    batch_runner: BatchRunner | None = None
    """Set by the lifespan; None before it starts."""


def app_state(app: Any) -> AppState:
    state: AppState = app.state.limner
    return state


def request_owner(request: Any) -> str:
    """The owner of what `request` stores or reads (`middleware.owner_of`); "" with no keys."""
    owner: str = request.scope.get("state", {}).get("owner", "")
    return owner
