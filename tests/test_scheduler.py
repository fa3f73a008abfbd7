"""The scheduler against the fake engine: batching, FIFO, 429, cancellation, deadlines."""

from __future__ import annotations

import asyncio

import pytest

from limner.engines.fake import FakeEngine
from limner.errors import GenerationFailed, QueueFull, TimedOut, Unavailable
from limner.jobs import GenerationParams
from limner.scheduler import Scheduler
from limner.scheduler.scheduler import preview_steps


def params(prompt: str = "otter", n: int = 1, size: int = 64, quality: str = "low",
           seed: int = 0) -> GenerationParams:
    return GenerationParams(prompt=prompt, width=size, height=size,
                            seeds=tuple(range(seed, seed + n)), quality=quality)  # type: ignore[arg-type]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_preview_steps_are_evenly_spaced() -> None:
    assert preview_steps(0, 10) == []
    assert preview_steps(1, 10) == [5]
    assert preview_steps(3, 8) == [2, 4, 6]
    assert preview_steps(3, 4) == [1, 2, 3]
    assert preview_steps(3, 2) == [1]
    assert preview_steps(2, 1) == []


async def test_compatible_requests_share_a_batch() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=0, max_batch_images=8)
    scheduler.start()
    jobs = [scheduler.submit(params(seed=i, n=2)) for i in range(3)]
    other = scheduler.submit(params(size=128))
    results = await asyncio.gather(*(job.result for job in [*jobs, other]))
    assert [len(r) for r in results] == [2, 2, 2, 1]
    sizes = [[p.width for p in batch] for batch in engine.batches]
    assert sizes == [[64, 64, 64], [128]]
    await scheduler.stop()


async def test_a_lone_request_does_not_wait_for_the_batch_window() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=30.0, clock=ManualClock())
    scheduler.start()
    lone = scheduler.submit(params())
    assert len(await asyncio.wait_for(lone.result, 5)) == 1, "no 30 s window for one request"
    await scheduler.stop()


async def test_requests_arriving_together_hold_the_window() -> None:
    """The clock never moves here: the window ends only because the batch fills."""
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=30.0, max_batch_images=2, clock=ManualClock())
    scheduler.start()
    alone = scheduler.submit(params(seed=0))
    await asyncio.wait_for(alone.result, 5)  # idle engine: it ran at once
    first = scheduler.submit(params(seed=1))  # within a window of the one before: wait
    for _ in range(5):
        await asyncio.sleep(0)  # let the worker take it and hold the window open
    assert not first.result.done() and engine.batches == [[params(seed=0)]]
    second = scheduler.submit(params(seed=2))
    await asyncio.wait_for(asyncio.gather(first.result, second.result), 5)
    assert [[p.seeds for p in batch] for batch in engine.batches] == [[(0,)], [(1,), (2,)]]
    await scheduler.stop()


async def test_batch_size_is_bounded_and_order_is_fifo() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=0, max_batch_images=4)
    scheduler.start()
    jobs = [scheduler.submit(params(prompt=f"p{i}", n=3)) for i in range(3)]
    await asyncio.gather(*(job.result for job in jobs))
    assert [[p.prompt for p in batch] for batch in engine.batches] == [["p0"], ["p1"], ["p2"]]
    await scheduler.stop()


async def test_queue_full_is_a_429_with_bounded_retry_after() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, max_queue=2)
    jobs = [scheduler.submit(params()) for _ in range(2)]
    with pytest.raises(QueueFull) as caught:
        scheduler.submit(params())
    assert caught.value.status == 429
    assert 1 <= int(caught.value.headers["retry-after"]) <= 120
    scheduler.start()
    await asyncio.gather(*(job.result for job in jobs))
    await scheduler.stop()


async def test_cancelled_queued_job_never_runs() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    first = scheduler.submit(params(prompt="first", size=32))
    second = scheduler.submit(params(prompt="second"))
    second.cancel()
    assert scheduler.queue_depth == 1  # only the first is left waiting
    await first.result
    third = scheduler.submit(params(prompt="third"))
    await third.result  # FIFO: had the second run, it would have run before this
    assert [p.prompt for batch in engine.batches for p in batch] == ["first", "third"]
    await scheduler.stop()


async def wait_for_steps(engine: FakeEngine, count: int) -> None:
    assert await asyncio.to_thread(engine.wait_for_steps, count), f"step {count} never came"


async def test_cancelling_a_running_batch_stops_the_engine_at_its_next_step() -> None:
    engine = FakeEngine(gated=True)
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    job = scheduler.submit(params(quality="high"))  # 8 steps
    engine.release(2)
    await wait_for_steps(engine, 2)
    job.cancel()
    engine.release(6)
    follow = scheduler.submit(params(prompt="next", quality="low"))  # 2 more steps
    assert len(await asyncio.wait_for(follow.result, 10)) == 1
    assert engine.steps_run == 3 + 2, "the cancelled batch stopped after its third step"
    await scheduler.stop()


async def test_engine_failure_fails_only_that_batch() -> None:
    engine = FakeEngine(fail_on="boom")
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    bad = scheduler.submit(params(prompt="boom"))
    with pytest.raises(GenerationFailed) as caught:
        await bad.result
    assert caught.value.status == 500 and caught.value.should_retry is False
    good = scheduler.submit(params(prompt="fine"))
    assert len(await good.result) == 1
    await scheduler.stop()


async def test_deadline_while_queued_and_while_running() -> None:
    clock = ManualClock()
    engine = FakeEngine(gated=True)
    scheduler = Scheduler(engine, batch_wait_s=0, request_timeout_s=10, clock=clock)
    stale = scheduler.submit(params())
    clock.now += 11
    scheduler.start()
    with pytest.raises(TimedOut):
        await stale.result
    running = scheduler.submit(params(quality="high"))
    engine.release(1)
    await wait_for_steps(engine, 1)
    clock.now += 11
    engine.release(7)
    with pytest.raises(TimedOut):
        await running.result
    assert engine.steps_run == 2, "the step after the deadline stopped the batch"
    await scheduler.stop()


async def test_partial_images_are_delivered() -> None:
    engine = FakeEngine()
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    job = scheduler.submit(params(quality="high", n=2), partial_images=3)
    images = await job.result
    partials = [job.partials.get_nowait() for _ in range(job.partials.qsize())]
    assert [(p.index, p.step, p.total) for p in partials] == [(0, 2, 8), (1, 4, 8), (2, 6, 8)]
    assert all(len(p.images) == 2 for p in partials)
    assert len(images) == 2
    await scheduler.stop()


async def test_stop_refuses_new_work_and_finishes_running_work() -> None:
    engine = FakeEngine(gated=True)
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    job = scheduler.submit(params())
    stopping = asyncio.create_task(scheduler.stop(grace_s=5))
    await asyncio.sleep(0)
    with pytest.raises(Unavailable):
        scheduler.submit(params())
    engine.release(2)
    assert len(await job.result) == 1
    await stopping


async def test_event_loop_stays_free_during_generation() -> None:
    engine = FakeEngine(gated=True)
    scheduler = Scheduler(engine, batch_wait_s=0)
    scheduler.start()
    job = scheduler.submit(params(quality="high"))
    engine.release(1)
    await wait_for_steps(engine, 1)  # the engine is mid-batch, waiting in its thread
    ticks = 0
    for _ in range(50):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 50 and not job.result.done()
    engine.release(7)
    assert len(await job.result) == 1
    await scheduler.stop()


async def test_take_compatible_on_a_plain_queue() -> None:
    """The batching rule alone: same size, quality and steps as the head, oldest first,
    while the batch has room for all of a job's images."""
    from collections import deque

    from limner.scheduler.scheduler import Job, take_compatible

    loop = asyncio.get_running_loop()

    def job(n: int = 1, size: int = 64, quality: str = "low") -> Job:
        return Job(params(n=n, size=size, quality=quality), 0, None, loop)

    head = job()
    big, other_size, other_quality, fits, late = job(n=4), job(size=128), \
        job(quality="high"), job(n=2), job()
    pending = deque([big, other_size, other_quality, fits, late])
    batch = [head]
    take_compatible(pending, batch, max_images=4)
    assert batch == [head, fits, late]  # `big` would make 5 images
    assert list(pending) == [big, other_size, other_quality]
    take_compatible(pending, batch, max_images=4)  # full: nothing more
    assert batch == [head, fits, late]


async def test_deadlines_and_waits_follow_the_scheduler_clock() -> None:
    """One clock: a job's submission time and deadline come from the injected clock."""
    clock = ManualClock()
    scheduler = Scheduler(FakeEngine(), request_timeout_s=5, clock=clock)
    job = scheduler.submit(params())
    assert (job.submitted_at, job.deadline) == (1000.0, 1005.0)
    await scheduler.stop(grace_s=0)
    with pytest.raises(Unavailable):
        await job.result
