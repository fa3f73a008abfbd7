"""limner as a Ray Serve application: one deployment per engine, and the HTTP API as ingress.

`ModelReplica` holds one loaded model and runs limner's own scheduler in front of it
(batching, previews, cancellation, deadlines), exactly as `limner serve` does in one
process. `Ingress` is limner's FastAPI app (every route, check, error and stream), whose
model queues are `RemoteQueue`s to those deployments. Ray does placement, replicas,
autoscaling, routing and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from limner.config import EngineConfig, Settings
from limner.engines.base import EngineInfo
from limner.engines.registry import build_engine
from limner.errors import LimnerError
from limner.jobs import GenerationParams
from limner.loras import LoraLibrary
from limner.metrics import Gauge
from limner.ray.remote import Message, RemoteQueue, error_to_wire
from limner.scheduler import Scheduler

log = logging.getLogger("limner.ray")
APP_NAME = "limner"
AUTOSCALING_KEYS = {"min": "min_replicas", "max": "max_replicas"}
"""The config's short names for Ray's autoscaling keys (the others pass as they are)."""


class ModelReplica:
    """One replica of one model: the engine, loaded in the constructor, and its scheduler."""

    def __init__(self, config: EngineConfig, settings: Settings) -> None:
        self.settings = settings
        self.engine = build_engine(config, settings.threads, settings.data_dir,
                                   LoraLibrary(settings.data_dir / "loras",
                                               settings.loras).all())
        self.engine.load()
        self._scheduler: Scheduler | None = None
        self._replica = serve.get_replica_context().replica_id.unique_id
        """Named in each answer, so the ingress can count who answered (`/metrics`)."""

    def _queue(self) -> Scheduler:
        """Made on first use: it belongs to the replica's event loop."""
        if self._scheduler is None:
            self._scheduler = Scheduler(
                self.engine, max_queue=self.settings.max_queue,
                batch_wait_s=self.settings.batch_wait_ms / 1000,
                request_timeout_s=self.settings.request_timeout_s)
            self._scheduler.start()
        return self._scheduler

    async def info(self) -> EngineInfo:
        return self.engine.info

    async def generate(self, params: GenerationParams,
                       partial_images: int) -> AsyncIterator[Message]:
        """The job's partial images as they come, then its pictures, or its error. When the
        caller goes away Ray cancels this generator, and the job with it."""
        try:
            job = self._queue().submit(params, partial_images)
        except LimnerError as exc:
            yield "error", error_to_wire(exc)
            return
        try:
            while not job.result.done() or not job.partials.empty():
                getter = asyncio.ensure_future(job.partials.get())
                waiting: set[asyncio.Future[Any]] = {getter, job.result}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield "partial", getter.result()
                else:
                    getter.cancel()
            try:
                images = job.result.result()
            except LimnerError as exc:
                yield "error", error_to_wire(exc)
            else:
                yield "done", (images, self._replica)
        finally:
            job.cancel()

    async def draw(self, params: GenerationParams) -> Message:
        """A job without previews, as one answer: ("done", (images, replica)) or its error.
        A caller that goes away cancels this call, and the job with it."""
        try:
            job = self._queue().submit(params, 0)
        except LimnerError as exc:
            return "error", error_to_wire(exc)
        try:
            images = await job.result
        except LimnerError as exc:
            return "error", error_to_wire(exc)
        finally:
            job.cancel()
        return "done", (images, self._replica)

    async def check_health(self) -> None:
        """Ray's health check: a replica whose engine is gone is restarted."""
        if self._scheduler is not None and self._scheduler.stopped_by_error:
            raise RuntimeError("the replica's scheduler stopped")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.close()


@serve.ingress()
class Ingress:
    """limner's whole HTTP API; the models it serves are deployments (`handles`, by name)."""

    def __init__(self, settings: Settings, names: list[str], *handles: Any) -> None:
        self.settings = settings
        self.handles = dict(zip(names, handles, strict=True))

    def __serve_build_asgi_app__(self) -> Any:
        from limner.server.app import create_app

        queues = {name: RemoteQueue(name, handle, app_name=APP_NAME)
                  for name, handle in self.handles.items()}
        app = create_app(self.settings, queues=queues)
        app.state.limner.service.metrics.add_gauge(Gauge(
            "limner_replica_answers", "Answers this ingress had from each model replica.",
            lambda: {(("model", name), ("replica", replica)): float(count)
                     for name, queue in queues.items()
                     for replica, count in queue.answered_by.items()}))
        return app


def build_app(settings: Settings, *, replicas: int | None = None,
              ingress_replicas: int = 1) -> Application:
    """The application `serve.run` takes: every configured engine as a deployment (its
    `ray` table, or `replicas` for all), the API in front."""
    names, bound = [], []
    for config in settings.engines:
        names.append(config.name)
        bound.append(_model_deployment(config, settings, replicas).bind(config, settings))
    ingress: Any = serve.deployment(Ingress, name="ingress", num_replicas=ingress_replicas,
                                    max_ongoing_requests=max(100, settings.max_connections),
                                    ray_actor_options={"num_cpus": 0})
    application: Application = ingress.bind(settings, names, *bound)
    return application


def _model_deployment(config: EngineConfig, settings: Settings,
                      replicas: int | None) -> Any:
    table = dict(config.ray)
    options: dict[str, Any] = {
        "name": f"model-{config.name}",
        # A replica takes in what its scheduler can queue and batch; beyond that Ray holds
        # requests at the caller, up to the queue's length, then refuses them (429).
        "max_ongoing_requests": table.get("max_ongoing_requests", settings.max_queue),
        "max_queued_requests": table.get("max_queued_requests", settings.max_queue),
        "ray_actor_options": {"num_cpus": table.get("num_cpus", 1),
                              "num_gpus": table.get("num_gpus", 0)},
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": settings.shutdown_grace_s,
    }
    if "autoscaling" in table and replicas is None:
        scaling = dict(table["autoscaling"])
        options["autoscaling_config"] = {AUTOSCALING_KEYS.get(k, k): v for k, v in scaling.items()}
    else:
        options["num_replicas"] = replicas or table.get("replicas", 1)
    return serve.deployment(ModelReplica, **options)
