"""One `Scheduler` per engine: a bounded FIFO queue, batching, cancellation, deadlines.

Requests become `Job`s. A single worker task takes the oldest job, gathers compatible jobs
(the same `Job.key`: size, quality, steps, sampling controls, kind of edit) that arrive within
`batch_wait_s`, up to `max_batch_images` images, and runs them as one batch on the engine in
a dedicated thread, so the event loop stays free. The window is held open only while
requests arrive together (others are queued, or the oldest came within a window of the one
before it): a lone request at an idle engine starts at once instead of paying the window as
latency. The engine's step callback delivers partial images and stops a batch whose clients
have all gone away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from limner.engines.base import Engine, EngineInfo
from limner.errors import GenerationFailed, LimnerError, QueueFull, TimedOut, Unavailable
from limner.jobs import GenerationCancelled, GenerationParams, StepUpdate
from limner.metrics import Metrics

log = logging.getLogger("limner.scheduler")
Clock = Callable[[], float]
RETRY_AFTER_MIN_S = 0.05
RETRY_AFTER_MAX_S = 120.0
"""The official SDKs honour a `Retry-After` of up to 120 s and give up beyond it."""
RETRY_MARGIN = 0.25
"""Of a batch's time: a retry arrives a little after the room it was promised opens."""
BatchKey = tuple[int, int, str, int | None, int, str | None, float | None, str | None, str,
                 float, tuple[tuple[str, float], ...]]
_ids = itertools.count(1)


@dataclass(frozen=True)
class PartialImage:
    """Intermediate pictures of one job (one per image), at `step` of `total`."""

    index: int
    step: int
    total: int
    images: list[Image.Image]


def preview_steps(partial_images: int, total: int) -> list[int]:
    """Evenly spaced steps (1-based, before the last) at which to decode partial images."""
    if partial_images <= 0 or total <= 1:
        return []
    steps = {max(1, round(total * (i + 1) / (partial_images + 1))) for i in range(partial_images)}
    return sorted(s for s in steps if s < total)


class Job:
    """A request in the scheduler: await `result`, read `partials`, or `cancel()`."""

    def __init__(self, params: GenerationParams, partial_images: int,
                 deadline: float | None, loop: asyncio.AbstractEventLoop, *,
                 submitted_at: float = 0.0,
                 on_cancel: Callable[[Job], None] | None = None) -> None:
        self.id = next(_ids)
        self.params = params
        self.partial_images = partial_images
        self.deadline = deadline
        self.result: asyncio.Future[list[Image.Image]] = loop.create_future()
        self.partials: asyncio.Queue[PartialImage] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._timed_out = threading.Event()
        self._partials_sent = 0
        self._loop = loop
        self.submitted_at = submitted_at
        """On the scheduler's clock."""
        self.follows_closely = False
        """It arrived within `batch_wait_s` of the request before it: more may be coming."""
        self._on_cancel = on_cancel

    @property
    def key(self) -> BatchKey:
        p = self.params
        return (p.width, p.height, p.quality, p.steps, p.min_steps, p.negative_prompt,
                p.guidance, p.scheduler, p.edit, p.strength,
                tuple((a.name, a.scale) for a in p.adapters))

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """The client went away: drop the job, or stop it at the engine's next step."""
        self._cancelled.set()
        if not self.result.done():
            self.result.cancel()
        if self._on_cancel is not None:
            self._on_cancel(self)

    @property
    def timed_out(self) -> bool:
        return self._timed_out.is_set()

    def expire(self) -> None:
        """Its deadline passed: stop it like a cancelled one, and fail it as timed out."""
        self._timed_out.set()
        self._cancelled.set()

    def fail(self, error: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(error)

    def succeed(self, images: list[Image.Image]) -> None:
        if not self.result.done():
            self.result.set_result(images)

    def send_partial(self, step: int, total: int, images: list[Image.Image]) -> None:
        """From the engine's thread: hand this job's pictures at `step` to the event loop."""
        partial = PartialImage(self._partials_sent, step, total, images)
        self._partials_sent += 1
        self._loop.call_soon_threadsafe(self.partials.put_nowait, partial)


def take_compatible(pending: deque[Job], batch: list[Job], max_images: int) -> None:
    """Moves the queued jobs that can join `batch` into it, oldest first: those with the head's
    `key` (size, quality, steps, sampling controls, and the kind of edit with its strength),
    while the batch has room for all their images."""
    images = sum(job.params.n for job in batch)
    for job in list(pending):
        if job.key == batch[0].key and images + job.params.n <= max_images:
            pending.remove(job)
            batch.append(job)
            images += job.params.n


class Lease(Protocol):
    """The model's memory: `acquire` returns once it is loaded (loading it if need be) and
    keeps it from being unloaded until `release` (`limner.residency`)."""

    async def acquire(self) -> None: ...

    def release(self) -> None: ...


class EngineQueue(Protocol):
    """What the service and the server need of a model's queue: this module's `Scheduler`
    in front of a local engine, or the proxy to a Ray Serve deployment whose replicas each
    run one (`limner.ray.remote`)."""

    @property
    def info(self) -> EngineInfo: ...

    @property
    def queue_depth(self) -> int: ...

    def replicas_up(self) -> int | None:
        """How many replicas serve it; `None` where there is just this process."""

    def submit(self, params: GenerationParams, partial_images: int = 0) -> Job: ...

    def start(self) -> None: ...

    async def load(self) -> None:
        """Returns once the model can draw (raises if it cannot)."""

    async def stop(self, grace_s: float = 30.0) -> None: ...

    def close(self) -> None:
        """Lets the model go, after `stop`."""


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int = 64,
        max_batch_images: int | None = None,
        batch_wait_s: float = 0.01,
        request_timeout_s: float | None = None,
        clock: Clock = time.monotonic,
        metrics: Metrics | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.engine = engine
        self.lease = lease
        """None: the engine is loaded by whoever built it and stays loaded."""
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_batch_images = max_batch_images or engine.info.max_batch_images
        self.batch_wait_s = batch_wait_s
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self._pending: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="limner-engine")
        self._worker: asyncio.Task[None] | None = None
        self._running: list[Job] = []
        self._idle = asyncio.Event()
        """Set while nothing is queued or running: what `stop` waits for."""
        self._idle.set()
        self._closing = False
        self._seconds_per_image = 1.0
        """A guess until the first batch is measured, then a moving average."""
        self._measured = False
        self._last_arrival = float("-inf")
        self._running_since = 0.0
        self._promised: deque[float] = deque()
        """When each recent 429 told its client to come back, in order."""

    # Admission -------------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def replicas_up(self) -> int | None:
        return None

    def submit(self, params: GenerationParams, partial_images: int = 0) -> Job:
        if self._closing:
            raise Unavailable("The server is shutting down; retry shortly.", code="shutting_down")
        if len(self._pending) >= self.max_queue:
            raise QueueFull(
                "Too many requests are queued for this model. Please retry after a short wait.",
                retry_after_s=self._promise_retry(),
            )
        deadline = None
        if self.request_timeout_s is not None:
            deadline = self.clock() + self.request_timeout_s
        now = self.clock()
        job = Job(params, partial_images, deadline, asyncio.get_running_loop(),
                  submitted_at=now, on_cancel=self._discard)
        job.follows_closely = now - self._last_arrival <= self.batch_wait_s
        self._last_arrival = now
        self._pending.append(job)
        self._idle.clear()
        self._arrived.set()
        return job

    def retry_after_s(self) -> float:
        """When a request refused now would find room in the queue, if every client refused
        before it comes back at the time it was told.

        A full queue frees room only when the engine takes its next batch: first when the
        running batch ends, then once a batch's time later each. So the k-th refused client
        is told the moment the batch that frees the k-th place starts, plus a margin.
        """
        now = self.clock()
        while self._promised and self._promised[0] <= now:
            self._promised.popleft()
        pending = list(self._pending)
        mean_n = sum(job.params.n for job in pending) / len(pending) if pending else 1.0
        jobs_per_batch = max(1, int(self.max_batch_images // max(1.0, mean_n)))
        batch_s = jobs_per_batch * mean_n * self._seconds_per_image
        if self._running:
            images = sum(job.params.n for job in self._running)
            first = max(0.0, images * self._seconds_per_image - (now - self._running_since))
        else:
            first = 0.0
        place = len(self._promised) + 1
        batches_after_first = -(-place // jobs_per_batch) - 1
        estimate = first + batches_after_first * batch_s + RETRY_MARGIN * batch_s
        return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, estimate))

    def _promise_retry(self) -> float:
        delay = self.retry_after_s()
        self._promised.append(self.clock() + delay)
        return delay

    def _discard(self, job: Job) -> None:
        with contextlib.suppress(ValueError):
            self._pending.remove(job)
        self._note_if_idle()

    def _note_if_idle(self) -> None:
        if not self._pending and not self._running:
            self._idle.set()

    # Lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def load(self) -> None:
        await asyncio.to_thread(self.engine.load)

    @property
    def stopped_by_error(self) -> bool:
        """Its worker ended though nobody stopped it: nothing queued will ever run."""
        return (self._worker is not None and self._worker.done() and not self._closing)

    def close(self) -> None:
        self.engine.close()

    async def stop(self, grace_s: float = 30.0) -> None:
        """Refuse new work, let queued and running work finish within `grace_s`, then cancel."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for job in [*self._pending, *self._running]:
            job.fail(Unavailable("The server shut down before this request finished.",
                                  code="shutting_down"))
            job.cancel()
        self._pending.clear()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    # The worker ------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if self.lease is None:
                await self._gather_and_run()
                continue
            if not await self._acquire_for_pending():
                continue
            try:
                if self._pending:  # all may have gone while the model loaded
                    await self._gather_and_run()
            finally:
                self.lease.release()

    async def _gather_and_run(self) -> None:
        batch = await self._gather_batch()
        if batch:
            await self._run_batch(batch)

    async def _acquire_for_pending(self) -> bool:
        """The model, loaded for the queued requests (which wait for it in the queue, each
        within its deadline); when the load fails, every queued request gets its error."""
        assert self.lease is not None
        acquiring = asyncio.ensure_future(self.lease.acquire())
        try:
            while not (await asyncio.wait({acquiring}, timeout=self._until_deadline()))[0]:
                self._expire_pending()
        except asyncio.CancelledError:
            acquiring.cancel()
            raise
        error = acquiring.exception()
        if error is None:
            return True
        for job in self._pending:
            job.fail(error)
        self._pending.clear()
        self._note_if_idle()
        if not isinstance(error, LimnerError):
            log.error("model %s could not be made ready: %s", self.engine.info.name, error)
        return False

    def _until_deadline(self) -> float | None:
        deadlines = [job.deadline for job in self._pending if job.deadline is not None]
        return max(0.05, min(deadlines) - self.clock()) if deadlines else None

    def _expire_pending(self) -> None:
        now = self.clock()
        for job in list(self._pending):
            if job.deadline is not None and now >= job.deadline:
                self._pending.remove(job)
                job.fail(_timed_out())
        self._note_if_idle()

    async def _gather_batch(self) -> list[Job]:
        head = self._pending.popleft()
        batch = [head]
        wait = self.batch_wait_s if self._pending or head.follows_closely else 0.0
        window_end = self.clock() + wait
        while True:
            take_compatible(self._pending, batch, self.max_batch_images)
            remaining = window_end - self.clock()
            if sum(job.params.n for job in batch) >= self.max_batch_images or remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        now = self.clock()
        live = []
        for job in batch:
            if job.deadline is not None and now >= job.deadline:
                job.fail(_timed_out())
            elif not job.cancelled:
                live.append(job)
        if not live:
            self._note_if_idle()
        return live

    async def _run_batch(self, batch: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        self._running = batch
        started = self._running_since = self.clock()
        model = self.engine.info.name
        if self.metrics is not None:
            self.metrics.batch_images.observe(sum(j.params.n for j in batch), model=model)
            for job in batch:
                self.metrics.queue_seconds.observe(started - job.submitted_at, model=model)
        try:
            images = await loop.run_in_executor(self._executor, self._generate, batch)
        except GenerationCancelled:
            for job in batch:
                if job.timed_out:
                    job.fail(_timed_out())
                else:
                    job.cancel()
            return
        except LimnerError as exc:
            for job in batch:
                job.fail(exc)
            return
        except Exception as exc:
            log.exception("engine %s failed on a batch of %d", self.engine.info.name, len(batch))
            error = GenerationFailed(
                f"The image could not be generated: {type(exc).__name__}: {exc}",
                code="generation_failed",
            )
            for job in batch:
                job.fail(error)
            return
        finally:
            self._running = []
            self._note_if_idle()
        elapsed = self.clock() - started
        count = sum(job.params.n for job in batch)
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(elapsed, model=model)
        per_image = elapsed / max(1, count)
        self._seconds_per_image = (0.7 * self._seconds_per_image + 0.3 * per_image
                                   if self._measured else per_image)
        self._measured = True
        for job, job_images in zip(batch, images, strict=True):
            if job.timed_out:
                job.fail(_timed_out())
            else:
                job.succeed(job_images)

    def _generate(self, batch: list[Job]) -> list[list[Image.Image]]:
        """Runs in the engine thread."""
        plans: dict[int, list[int]] = {}
        last_step = [self.clock()]
        model = self.engine.info.name

        def on_step(update: StepUpdate) -> None:
            if self.metrics is not None:
                moment = self.clock()
                self.metrics.step_seconds.observe(moment - last_step[0], model=model)
                last_step[0] = moment
            now = self.clock()
            for job in batch:
                if job.deadline is not None and now >= job.deadline and not job.cancelled:
                    job.expire()
            if all(job.cancelled for job in batch):
                raise GenerationCancelled()
            wanted = []
            for index, job in enumerate(batch):
                if job.cancelled or not job.partial_images:
                    continue
                steps = plans.setdefault(job.id, preview_steps(job.partial_images, update.total))
                if update.step in steps:
                    wanted.append((index, job))
            if not wanted:
                return
            previews = update.preview()
            for index, job in wanted:
                job.send_partial(update.step, update.total, previews[index])

        return self.engine.generate([job.params for job in batch], on_step)


def _timed_out() -> TimedOut:
    return TimedOut("The request did not finish within the server's time limit.",
                    code="timeout")
