"""Runs the app under uvicorn: the port bound first, connection limits, a drain at shutdown.

`limner serve` and the tests' servers both start here, so what the tests see is what users
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from limner.config import Settings
from limner.server.app import drain
from limner.server.connections import (
    AcceptErrorFilter,
    ConnectionLimits,
    connection_cap,
    protocol_with,
    raise_open_file_limit,
)
from limner.server.middleware import LastResort

log = logging.getLogger("limner.server")
DRAIN_MARGIN_S = 5.0
"""uvicorn cancels what still runs this long after limner's own grace period, by which time
limner has answered every waiting request with 503 `shutting_down` itself."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before any model loads, so a port in use fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def uvicorn_config(app: FastAPI, settings: Settings, *,
                   log_level: str = "warning") -> uvicorn.Config:
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, open_files)
    if cap < settings.max_connections:
        log.warning("max_connections lowered from %d to %d: the open-file limit is %d",
                    settings.max_connections, cap, open_files)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptErrorFilter())
    limits = ConnectionLimits(max_connections=cap,
                              header_timeout_s=settings.header_timeout_s,
                              body_timeout_s=settings.body_timeout_s)
    return uvicorn.Config(
        LastResort(app), host=settings.host, port=settings.port, log_level=log_level,
        lifespan="on", http=protocol_with(limits),
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        timeout_graceful_shutdown=round(settings.shutdown_grace_s + DRAIN_MARGIN_S),
    )


class LimnerServer(uvicorn.Server):
    """uvicorn's server, with two changes. Shutdown starts limner's own drain at once (new
    work refused, running work given the grace period, then answered 503), rather than
    after uvicorn has already cancelled what was still running. And SIGTERM/SIGINT end it
    with exit status 0 instead of re-raising the signal; a second SIGINT forces the exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        draining = asyncio.ensure_future(drain(self.app))
        try:
            await super().shutdown(sockets)
        finally:
            await draining

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: Any) -> None:
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
