"""`create_app`: the composition root. Builds every part once and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from limner import __version__
from limner.batches.runner import BatchRunner
from limner.batches.store import BatchStore
from limner.budget import Budget
from limner.catalogue import Catalogue
from limner.config import Settings, keep_alive_seconds
from limner.engines.base import Engine
from limner.engines.registry import build_engine
from limner.errors import LimnerError
from limner.loras import LoraLibrary
from limner.metrics import Gauge, Metrics
from limner.moderation import PromptPolicy
from limner.provenance.policy import from_settings as provenance_from
from limner.residency import Residency
from limner.responses.service import ResponsesService
from limner.responses.store import ResponseStore
from limner.responses.upstream import TextModel, Upstream
from limner.scheduler import EngineQueue, Scheduler
from limner.server.errors import install_error_handlers
from limner.server.middleware import RequestContextMiddleware
from limner.server.paths import Targets
from limner.server.routes import (
    batches,
    edits,
    files,
    health,
    images,
    metrics_route,
    models,
    playground,
    provenance,
    responses,
    uploads,
)
from limner.server.state import AppState
from limner.service import Delivery, ImageService
from limner.store.files import FileStore
from limner.store.local import LocalImageStore
from limner.store.signing import Signer, load_or_create_secret

log = logging.getLogger("limner.server")
SWEEP_EVERY_S = 60.0


def create_app(settings: Settings, *, engines: Mapping[str, Engine] | None = None,
               queues: Mapping[str, EngineQueue] | None = None,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """The service. `engines` replaces the configured ones (tests pass fakes); `queues`
    serves models that are loaded elsewhere instead (a Ray Serve deployment's replicas, by
    `limner.ray`); `clock` is the wall clock of URL expiry, injectable so tests can jump an
    hour ahead."""
    loras = LoraLibrary(settings.data_dir / "loras", settings.loras, _model_folders(settings),
                        settings.max_request_loras)
    built: dict[str, Engine] = {}
    if queues is None:
        built = dict(engines) if engines is not None else {
            config.name: build_engine(config, settings.threads, settings.data_dir,
                                      loras.all())
            for config in settings.engines
        }
    names = list(queues) if queues is not None else list(built)
    default_engine = settings.default_engine if settings.default_engine in names \
        else names[0]
    catalogue = Catalogue(names, default_engine, settings.models, settings.gpt_default)
    residency = _residency(settings, names, default_engine, built, queues)
    store = LocalImageStore(settings.data_dir / "images", settings.url_ttl_s, clock)
    secret = settings.signing_secret.encode() if settings.signing_secret \
        else load_or_create_secret(settings.data_dir / "signing.key")
    delivery = Delivery(store, Signer(secret), settings.base_url)
    policy = PromptPolicy(enabled=settings.moderation)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: AppState = app.state.limner
        for name in names:
            queue: EngineQueue = queues[name] if queues is not None else Scheduler(
                built[name],
                max_queue=settings.max_queue,
                batch_wait_s=settings.batch_wait_ms / 1000,
                request_timeout_s=settings.request_timeout_s,
                metrics=metrics,
                lease=residency.lease(name),
            )
            queue.start()
            state.schedulers[name] = queue
        loading = asyncio.create_task(_load_engines(state))
        state.tasks.append(loading)
        if (every := residency.sweeps()) is not None:
            state.tasks.append(asyncio.create_task(_expire_idle(residency, every)))
        state.tasks.append(asyncio.create_task(_resume_responses(state, loading)))
        state.tasks.append(asyncio.create_task(_sweep(store, state.responses.store)))
        state.batch_runner = BatchRunner(state, state.batches, clock)
        state.tasks.append(asyncio.create_task(state.batch_runner.run()))
        try:
            yield
        finally:
            for task in state.tasks:
                task.cancel()
            await state.responses.close()
            await drain(app)
            for queue in state.schedulers.values():
                with contextlib.suppress(Exception):
                    queue.close()
            state.service.close()

    # No trailing-slash redirects: Starlette builds their Location from the Host header,
    # which any client (or attacker) sets; a path that is not a route is a 404.
    app = FastAPI(title="limner", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, redirect_slashes=False)
    schedulers: dict[str, EngineQueue] = {}
    credentials = provenance_from(settings, names)
    service = ImageService(catalogue, schedulers, delivery, policy, clock, metrics, loras,
                           credentials, settings.encoders)
    uploaded = FileStore(settings.data_dir / "files", settings.max_upload_bytes, clock)
    response_store = ResponseStore(settings.data_dir / "responses", settings.responses_ttl_s,
                                   settings.responses_max_bytes, clock)
    app.state.limner = AppState(
        settings=settings, catalogue=catalogue, engines=built, schedulers=schedulers,
        service=service, delivery=delivery, started_at=int(clock()), files=uploaded,
        responses=ResponsesService(
            service, response_store, uploaded, catalogue, settings, clock,
            TextModel(Upstream.from_config(settings.responses_upstream))
            if settings.responses_upstream else None),
        batches=BatchStore(settings.data_dir / "batches", clock),
        residency=residency, loras=loras, provenance=credentials,
    )
    metrics.add_gauge(Gauge("limner_queue_depth", "Requests waiting for an engine.",
                            lambda: {(("model", n),): s.queue_depth
                                     for n, s in schedulers.items()}))
    metrics.add_gauge(Gauge("limner_engine_loaded", "1 while an engine is loaded.",
                            lambda: {(("model", n),): float(residency.ready(n))
                                     for n in names}))
    metrics.add_gauge(Gauge("limner_model_memory_bytes",
                            "What each loaded model holds, per device.",
                            lambda: {(("model", n), ("device", d)): float(b)
                                     for n in names
                                     for d, b in residency.state(n).memory.items()}))
    metrics.add_gauge(Gauge("limner_engine_speedup",
                            "1 for each speed-up an engine runs with, as its load settled it.",
                            lambda: {(("model", n), ("speedup", s)): 1.0
                                     for n, q in schedulers.items()
                                     if residency.ready(n)
                                     for s in q.info.speedups}))
    metrics.add_gauge(Gauge("limner_replicas", "Replicas serving a model (with --ray).",
                            lambda: {(("model", n),): float(up) for n, q in schedulers.items()
                                     if (up := q.replicas_up()) is not None}))
    install_error_handlers(app)
    # `files` before `uploads`: `/v1/files/images/{name}` must win over `/v1/files/{id}/content`.
    for module in (images, edits, responses, models, files, uploads, batches, provenance,
                   health, metrics_route, playground):
        app.include_router(module.router)
    app.add_middleware(RequestContextMiddleware, api_keys=settings.api_keys,
                       admin_keys=settings.admin_keys,
                       targets=Targets(settings.host, settings.public_base_url))
    return app


async def drain(app: FastAPI) -> None:
    """New work refused (503 `shutting_down`), queued and running work given the grace period,
    then answered 503 too; a running batch line stops at once, unwritten. Safe to call
    twice: the server calls it when shutdown begins, the lifespan again at its end."""
    state: AppState = app.state.limner
    grace = state.settings.shutdown_grace_s
    if state.batch_runner is not None:
        state.batch_runner.stop()  # its running line is answered again after the restart
    await asyncio.gather(*(s.stop(grace) for s in state.schedulers.values()))


def _residency(settings: Settings, names: list[str], default_engine: str,
               built: Mapping[str, Engine], queues: Mapping[str, EngineQueue] | None
               ) -> Residency:
    """Each model's slot: preloaded when its table says so (the default model always is),
    unloaded after its keep-alive, all within `max_model_memory`."""
    residency = Residency(Budget(settings.max_model_memory))
    tables = {config.name: config for config in settings.engines}
    for name in names:
        if queues is not None:
            residency.add_remote(name, queues[name].load)
            continue
        table = tables.get(name)
        preload = name == default_engine or bool(table and table.preload)
        keep = table.keep_alive if table and table.keep_alive is not None \
            else settings.keep_alive
        residency.add_engine(name, built[name], preload=preload,
                             keep_alive_s=keep_alive_seconds(keep, f"{name}.keep_alive"))
    return residency


def _model_folders(settings: Settings) -> dict[str, str]:
    """Engine -> its saved pipeline folder, where the config names one (adapters' fit)."""
    return {config.name: config.path for config in settings.engines
            if config.kind == "diffusers" and config.path and Path(config.path).is_dir()}


async def _load_engines(state: AppState) -> None:
    """The preloaded models, one after another (each load is given the whole machine)."""
    for name in state.residency.preloaded():
        with contextlib.suppress(LimnerError):  # the residency logged it and keeps why
            await state.residency.load(name)


async def _expire_idle(residency: Residency, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await residency.expire_idle()
        except Exception:
            log.exception("unloading idle models failed")


async def _resume_responses(state: AppState, loading: asyncio.Task[None]) -> None:
    """Background responses a stop left unfinished, once the engines they need are up."""
    await asyncio.shield(loading)
    await state.responses.resume()


async def _sweep(store: LocalImageStore, responses: ResponseStore) -> None:
    while True:
        removed = await asyncio.to_thread(store.sweep)
        if removed:
            log.info("removed %d expired image files", removed)
        removed = await asyncio.to_thread(responses.sweep)
        if removed:
            log.info("removed %d expired stored responses", removed)
        await asyncio.sleep(SWEEP_EVERY_S)
