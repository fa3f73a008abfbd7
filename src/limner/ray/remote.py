"""`RemoteQueue`: a model's queue in the ingress, when the model is a Ray Serve deployment.

The service submits to it as to a local `Scheduler` and gets the same `Job` back. Behind
it, one streaming call to a replica (`ModelReplica.generate`) carries the job there, where
limner's own scheduler batches it; partial images and the result come back as messages.
Cancelling the job cancels the call, and Ray Serve cancels it in the replica. Ray's own
refusals become limner's: its back-pressure is a 429, a replica that died before sending
anything is retried once on another, after that it is a 503 the client may retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from limner import errors
from limner.engines.base import EngineInfo
from limner.errors import LimnerError, QueueFull, Unavailable
from limner.jobs import GenerationParams
from limner.scheduler import Job, PartialImage

log = logging.getLogger("limner.ray")
Message = tuple[str, Any]
"""What a replica sends: ("partial", PartialImage), ("done", (images, replica id)) or
("error", wire)."""
RETRY_AFTER_S = 1.0


def error_to_wire(exc: LimnerError) -> dict[str, Any]:
    """A limner error as plain data: its class and fields cross processes unchanged."""
    return {"kind": type(exc).__name__, "message": exc.message, "param": exc.param,
            "code": exc.code, "extra": exc.extra, "headers": exc.headers,
            "retry_after_s": getattr(exc, "retry_after_s", None)}


def error_from_wire(wire: dict[str, Any]) -> LimnerError:
    kind = getattr(errors, wire["kind"], None)
    if kind is QueueFull:
        return QueueFull(wire["message"], retry_after_s=wire["retry_after_s"] or RETRY_AFTER_S)
    if not (isinstance(kind, type) and issubclass(kind, LimnerError)):
        kind = LimnerError
    return kind(wire["message"], param=wire["param"], code=wire["code"], extra=wire["extra"],
                headers=wire["headers"])


class RemoteQueue:
    """One model's deployment, seen from an ingress replica (an `EngineQueue`)."""

    def __init__(self, name: str, handle: Any, *, app_name: str = "limner") -> None:
        self.name = name
        self.handle = handle
        """A Ray Serve `DeploymentHandle` to the model's deployment. How much it admits is
        Ray's to say (each replica's `max_ongoing_requests`, the deployment's
        `max_queued_requests`) and each replica's scheduler's: their refusals are 429s."""
        self.app_name = app_name
        self._info: EngineInfo | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False
        self._replicas: tuple[float, int] = (0.0, 0)
        self.answered_by: Counter[str] = Counter()
        """Answers by replica id: where the requests went."""

    @property
    def info(self) -> EngineInfo:
        if self._info is None:  # asked only once loaded; a placeholder keeps `/metrics` safe
            return EngineInfo(name=self.name, native_width=0, native_height=0,
                              draws_alpha=False)
        return self._info

    @property
    def queue_depth(self) -> int:
        """Requests this ingress has sent and not had answered (queued or drawing)."""
        return len(self._in_flight)

    def replicas_up(self) -> int | None:
        """Running replicas, from Serve's status at most once a second (it asks the
        controller)."""
        checked, count = self._replicas
        if time.monotonic() - checked > 1.0:
            count = _running_replicas(self.app_name, self.handle.deployment_name)
            self._replicas = (time.monotonic(), count)
        return count

    def start(self) -> None:
        pass

    async def load(self) -> None:
        """Waits for a replica to answer: its constructor loads the model."""
        self._info = await self.handle.info.remote()

    def close(self) -> None:
        pass

    async def stop(self, grace_s: float = 30.0) -> None:
        self._closing = True
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)
        for task in list(self._in_flight):
            task.cancel()

    def submit(self, params: GenerationParams, partial_images: int = 0) -> Job:
        if self._closing:
            raise Unavailable("The server is shutting down; retry shortly.", code="shutting_down")
        loop = asyncio.get_running_loop()
        calls: list[asyncio.Task[None]] = []

        def cancel_call(_: Job) -> None:
            for call in calls:
                call.cancel()

        job = Job(params, partial_images, None, loop, submitted_at=time.monotonic(),
                  on_cancel=cancel_call)
        task = loop.create_task(self._run(job))
        calls.append(task)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return job

    async def _run(self, job: Job) -> None:
        try:
            for attempt in (1, 2):
                received = await self._call(job)
                if received is not None:
                    return
                log.warning("a replica of %s died before answering; retrying on another (%d)",
                            self.name, attempt)
            job.fail(_replica_died())
        except asyncio.CancelledError:
            job.fail(Unavailable("The request was cancelled.", code="cancelled"))
            raise
        except LimnerError as exc:
            job.fail(exc)
        except Exception as exc:
            log.exception("the call to %s failed", self.name)
            job.fail(_from_ray(exc))

    async def _call(self, job: Job) -> bool | None:
        """One call: streaming when previews are wanted, else a plain one, which costs
        Ray less. `None`: the replica died before sending anything (retry)."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        if job.partial_images == 0:
            try:
                kind, payload = await self.handle.draw.remote(job.params)
            except (ActorDiedError, ActorUnavailableError, RayActorError):
                return None
            self._settle(job, kind, payload)
            return True
        sent_any = False
        stream = self.handle.options(stream=True).generate.remote(job.params,
                                                                  job.partial_images)
        try:
            async for kind, payload in stream:
                sent_any = True
                self._settle(job, kind, payload)
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            if not sent_any:
                return None
            job.fail(_replica_died())
        finally:
            with contextlib.suppress(Exception):
                stream.cancel()
        return True

    def _settle(self, job: Job, kind: str, payload: Any) -> None:
        """One message from a replica, applied to the job."""
        if kind == "partial":
            assert isinstance(payload, PartialImage)
            job.partials.put_nowait(payload)
        elif kind == "done":
            images, replica = payload
            self.answered_by[replica] += 1
            job.succeed(list(images))
        else:
            job.fail(error_from_wire(payload))


def _replica_died() -> Unavailable:
    return Unavailable("The replica drawing this request stopped before it finished; retry "
                       "the request.", code="replica_unavailable",
                       headers={"retry-after": "1"})


def _from_ray(exc: Exception) -> LimnerError:
    """Ray Serve's own refusals, as the OpenAI envelope says them."""
    name = type(exc).__name__
    if name == "BackPressureError":
        return QueueFull("Every replica of this model is busy and its queue is full. Please "
                         "retry after a short wait.", retry_after_s=RETRY_AFTER_S)
    if name in ("DeploymentUnavailableError", "RayServeException"):
        return _replica_died()
    return errors.GenerationFailed(f"The model's replica failed: {name}.",
                                   code="replica_error")


def _running_replicas(app_name: str, deployment: str) -> int:
    from ray import serve

    try:
        status = serve.status().applications[app_name].deployments[deployment]
    except (KeyError, Exception):
        return 0
    return sum(count for state, count in status.replica_states.items() if state == "RUNNING")
