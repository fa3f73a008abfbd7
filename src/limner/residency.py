"""Which models are in memory: loaded when first asked for, unloaded to stay in a budget.

Each model is a `Slot`. A scheduler `acquire`s its model before every batch and `release`s it
after, so a model in use is never unloaded. Loading one that would pass the memory budget of
a device first unloads the least recently used idle models there; while none is idle, the
load waits for a batch to end, and acquires of loaded models wait behind it (one FIFO turn),
so a waiting load is not starved. Requests for a model that is loading share its one load.
`expire_idle` unloads models idle for longer than their keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from limner.budget import Budget, device_name, gib
from limner.engines.base import Engine
from limner.errors import Conflict, InvalidRequest, LimnerError, ModelUnavailable

log = logging.getLogger("limner.residency")
Status = Literal["unloaded", "loading", "ready", "failed"]
Clock = Callable[[], float]


@dataclass(frozen=True)
class ModelState:
    """What `/healthz` and `/v1/models/{id}` say about a model."""

    status: Status
    reason: str | None
    memory: Mapping[str, int]
    """Bytes it holds per device: measured once loaded, reserved while loading."""
    keep_alive_s: float | None
    idle_s: float | None
    """Seconds since its last batch ended; None while in use or not loaded."""
    load_s: float | None
    """How long its last load took."""


@dataclass
class Slot:
    name: str
    load: Callable[[], Awaitable[None]]
    unload: Callable[[], Awaitable[None]] | None
    """None where this process cannot let it go (a Ray deployment's replicas)."""
    estimate: Callable[[], Mapping[str, int]]
    measure: Callable[[], Mapping[str, int]]
    keep_alive_s: float | None
    preload: bool
    status: Status = "unloaded"
    reason: str | None = None
    held: dict[str, int] = field(default_factory=dict)
    users: int = 0
    last_used: float = 0.0
    load_s: float | None = None
    loading: asyncio.Future[None] | None = None


@dataclass(frozen=True)
class ModelLease:
    """One model's side of the residency, as its scheduler holds it (`scheduler.Lease`)."""

    residency: Residency
    name: str

    async def acquire(self) -> None:
        await self.residency.acquire(self.name)

    def release(self) -> None:
        self.residency.release(self.name)


class ModelTooLarge(InvalidRequest):
    """The model alone needs more than a device's budget: no unloading can make room."""


class Residency:
    def __init__(self, budget: Budget | None = None, clock: Clock = time.monotonic) -> None:
        self.budget = budget or Budget(None)
        self.clock = clock
        self._slots: dict[str, Slot] = {}
        self._turn = asyncio.Lock()
        self._released = asyncio.Event()

    # Registration ----------------------------------------------------------------------
    def add_engine(self, name: str, engine: Engine, *, preload: bool,
                   keep_alive_s: float | None) -> None:
        """A local engine: loaded and closed in a worker thread, measured by itself."""
        async def load() -> None:
            await asyncio.to_thread(engine.load)

        async def unload() -> None:
            await asyncio.to_thread(_close_and_free, engine)

        self._slots[name] = Slot(name, load, unload, engine.estimate_memory, engine.memory,
                                 keep_alive_s, preload)

    def add_remote(self, name: str, load: Callable[[], Awaitable[None]]) -> None:
        """A model served elsewhere (Ray replicas): its load is awaited, never undone here."""
        self._slots[name] = Slot(name, load, None, dict, dict, None, True)

    def lease(self, name: str) -> ModelLease:
        return ModelLease(self, name)

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def preloaded(self) -> list[str]:
        return [name for name, slot in self._slots.items() if slot.preload]

    # What it says ----------------------------------------------------------------------
    def state(self, name: str) -> ModelState:
        slot = self._slots[name]
        idle = None
        if slot.status == "ready" and slot.users == 0:
            idle = max(0.0, self.clock() - slot.last_used)
        return ModelState(slot.status, slot.reason, dict(slot.held), slot.keep_alive_s, idle,
                          slot.load_s)

    def ready(self, name: str) -> bool:
        return self._slots[name].status == "ready"

    def sweeps(self) -> float | None:
        """How often `expire_idle` has work to check: a quarter of the shortest keep-alive
        (at least a second); None when every model stays loaded while idle."""
        alive = [s.keep_alive_s for s in self._slots.values() if s.keep_alive_s is not None]
        return max(1.0, min(alive) / 4) if alive else None

    def check_fits(self, name: str) -> None:
        """A model that cannot fit its budget even alone is refused before it is queued."""
        slot = self._slots[name]
        if slot.status == "ready":
            return
        for device, needed in slot.estimate().items():
            limit = self.budget.limit(device)
            if limit is not None and needed > limit:
                raise ModelTooLarge(
                    f"The model '{name}' needs about {gib(needed)} of memory on "
                    f"{device_name(device)}, more than the {gib(limit)} that "
                    "max_model_memory allows for all loaded models there; raise "
                    "max_model_memory or serve a smaller model.",
                    param="model", code="model_too_large")

    # Use -------------------------------------------------------------------------------
    async def acquire(self, name: str) -> None:
        """Returns once `name` is loaded, counted in use until `release`; raises the load's
        error (`ModelUnavailable`) or `ModelTooLarge`."""
        slot = self._slots[name]
        while True:
            if slot.status == "ready" and not self._turn.locked():
                slot.users += 1
                return
            mine = False
            async with self._turn:
                if slot.status == "ready":
                    slot.users += 1
                    return
                if slot.status == "failed":
                    raise _unavailable(slot)
                if slot.loading is None:
                    await self._make_room(slot)
                    slot.status = "loading"  # its reservation counts from now on
                    # In use from the start: a load waited for is not undone by the next
                    # load's room-making before its own batch has run.
                    slot.users += 1
                    mine = True
                    slot.loading = asyncio.ensure_future(self._load(slot))
                loading = slot.loading
            try:
                await asyncio.shield(loading)
            except LimnerError:
                if mine:
                    self.release(name)
                    raise
                continue  # another caller's load: the next round says what became of it
            except BaseException:
                if mine:
                    self.release(name)
                raise
            if mine:
                return

    def release(self, name: str) -> None:
        slot = self._slots[name]
        slot.users = max(0, slot.users - 1)
        slot.last_used = self.clock()
        self._released.set()

    async def load(self, name: str) -> ModelState:
        """An operator's load (or the start's preload): a failed model is tried again."""
        slot = self._slots[name]
        if slot.status == "failed":
            slot.status, slot.reason = "unloaded", None
        await self.acquire(name)
        self.release(name)
        return self.state(name)

    async def unload(self, name: str) -> ModelState:
        """An operator's unload; a model drawing now is a 409, not cut short."""
        slot = self._slots[name]
        if slot.unload is None:
            raise Conflict(f"The model '{name}' is served by its own replicas and cannot be "
                           "unloaded from here.", code="model_not_unloadable")
        async with self._turn:
            if slot.status == "loading" and slot.loading is not None:
                with contextlib.suppress(LimnerError):
                    await asyncio.shield(slot.loading)
            if slot.users:
                raise Conflict(f"The model '{name}' is drawing now; unload it when its "
                               "requests are done.", code="model_in_use")
            if slot.status == "ready":
                await self._unload(slot, "on request")
        return self.state(name)

    async def expire_idle(self) -> list[str]:
        """Unloads every model idle for longer than its keep-alive; returns their names."""
        now = self.clock()
        expired = []
        async with self._turn:
            for slot in self._slots.values():
                if (slot.status == "ready" and slot.users == 0 and slot.unload is not None
                        and slot.keep_alive_s is not None
                        and now - slot.last_used >= slot.keep_alive_s):
                    await self._unload(slot, f"idle for {slot.keep_alive_s:g} s")
                    expired.append(slot.name)
        return expired

    # Inside the turn -------------------------------------------------------------------
    async def _make_room(self, slot: Slot) -> None:
        """Unloads idle models, least recently used first, until `slot`'s estimate fits
        every device's budget; waits for batches to end while nothing idle is left."""
        self.check_fits(slot.name)
        needed = {device_name(d): n for d, n in slot.estimate().items()}
        while True:
            short = [d for d, n in needed.items() if not self._fits(d, n)]
            if not short:
                slot.held = needed  # reserved until the load measures what it really holds
                return
            idle = sorted((s for s in self._slots.values()
                           if s is not slot and s.status == "ready" and s.users == 0
                           and s.unload is not None
                           and any(s.held.get(d, 0) for d in short)),
                          key=lambda s: s.last_used)
            if idle:
                await self._unload(idle[0], f"to make room for {slot.name}")
                continue
            log.info("%s waits for a model to finish drawing before it can load", slot.name)
            self._released.clear()
            await self._released.wait()

    def _fits(self, device: str, needed: int) -> bool:
        limit = self.budget.limit(device)
        if limit is None:
            return True
        held = sum(s.held.get(device, 0) for s in self._slots.values()
                   if s.status in ("ready", "loading"))
        return held + needed <= limit

    async def _load(self, slot: Slot) -> None:
        slot.status, slot.reason = "loading", None
        started = self.clock()
        log.info("loading %s", slot.name)
        try:
            await slot.load()
        except BaseException as exc:
            slot.status = "failed"
            slot.reason = f"{type(exc).__name__}: {exc}"
            slot.held = {}
            log.error("%s failed to load: %s", slot.name, slot.reason)
            raise _unavailable(slot) from exc
        finally:
            slot.loading = None
            self._released.set()
        slot.load_s = self.clock() - started
        slot.held = {device_name(d): n for d, n in slot.measure().items()} or slot.held
        slot.status, slot.last_used = "ready", self.clock()
        log.info("loaded %s in %.1f s (%s)", slot.name, slot.load_s, _describe(slot.held))
        # A loaded model is hundreds of thousands of Python objects that are never garbage:
        # frozen, the collector stops walking them on every full collection, which otherwise
        # put a pause of milliseconds in front of requests.
        gc.collect()
        gc.freeze()

    async def _unload(self, slot: Slot, why: str) -> None:
        assert slot.unload is not None
        held = _describe(slot.held)
        slot.status = "unloaded"
        await slot.unload()
        slot.held = {}
        log.info("unloaded %s %s (it held %s)", slot.name, why, held)


def _unavailable(slot: Slot) -> ModelUnavailable:
    return ModelUnavailable(slot.name, slot.reason or "unknown")


def _describe(held: Mapping[str, int]) -> str:
    return ", ".join(f"{gib(n)} on {d}" for d, n in held.items()) or "no measured memory"


def _close_and_free(engine: Engine) -> None:
    """Lets the engine go and gives its memory back to the system: the frozen objects are
    unfrozen so its reference cycles can be collected, and glibc returns freed heap pages."""
    engine.close()
    gc.unfreeze()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    gc.freeze()
