"""Connection limits that uvicorn lacks: a head and a body deadline, a connection cap, and
answers for clients that half-close.

uvicorn closes only an idle keep-alive connection; one that never sends a byte, sends its
head a line at a time (slowloris), or its body a byte at a time keeps its socket for good,
and about a thousand of them exhaust the process's file descriptors for everyone. This
protocol, uvicorn's own h11 one with deadlines added, is handed to uvicorn as its `http`
class (a documented option). Every answer it gives itself is an OpenAI error envelope.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from limner.protocol.errors import error_payload

log = logging.getLogger("limner.connections")
Phase = Literal["head", "body", "app"]
RESERVED_FDS = 128
PROBE_AFTER_S = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
"""When a half-closed connection is checked for a reset (round trips up to seconds)."""
TCP_CLOSE = 7
"""Linux's `tcpi_state` of a connection the peer has reset."""
"""File descriptors kept back from the connection cap: model files, image files, logs."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    """Open connections; one more is answered 503 and closed at once."""
    header_timeout_s: float = 10.0
    """From a request's first byte (or the connection's opening) to the end of its head."""
    body_timeout_s: float = 60.0
    """From the end of the head to the end of the body."""


class LogThrottle:
    """Logs a repeated event at most once per `every_s`, with how many were not logged."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        suffix = f" ({skipped} more since the last such message)" if skipped else ""
        self.logger.warning(message + suffix, *args)


class AcceptErrorFilter(logging.Filter):
    """Lets asyncio's "accept() out of system resource" errors through once per 10 s: the
    loop retries every second and would otherwise write megabytes of the same traceback."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if "accept() out of system resource" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True


_throttle = LogThrottle(log)


def _note_event_streams(cycle: Any) -> None:
    """Marks the cycle `limner_event_stream` once its answer starts as `text/event-stream`,
    so an end of input can be checked with an SSE comment. The cycle's `send` is wrapped
    before its ASGI task first runs (the task reads `self.send` when it starts)."""
    if getattr(cycle, "limner_watched", False):
        return
    cycle.limner_watched = True
    cycle.limner_event_stream = False
    original = cycle.send

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            cycle.limner_event_stream = any(
                name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                for name, value in message.get("headers", []))
        await original(message)

    cycle.send = send


def _was_reset(sock: socket.socket | None) -> bool:
    """Whether the peer has reset the connection: a pending socket error, or (on Linux)
    TCP's state."""
    if sock is None:
        return False
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return True
        if hasattr(socket, "TCP_INFO"):
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE
    except OSError:
        return True
    return False


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps(error_payload(message, "invalid_request_error" if status < 500
                                    else "server_error", None, code)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-request-id: req_{uuid.uuid4().hex}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with one deadline at a time for what the connection
    waits for: a request head, then its body; none while the app works on it, and uvicorn's
    own keep-alive timeout between requests."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase: Phase | None = None
        self._half_closed = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            _throttle.warning("cap", "refused a connection: %d are open, the limit is %d",
                              len(self.connections), self.limits.max_connections)
            self._answer_and_close(503, "Service Unavailable",
                                   "The server has too many open connections; retry shortly.",
                                   "too_many_connections")
            return
        self._arm("head")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None:
            _note_event_streams(self.cycle)
        phase = self._phase()
        if phase == "app":
            self._disarm()
        elif phase != self._deadline_phase:
            self._arm(phase)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that half-closes once its request is sent (`shutdown(SHUT_WR)`, as some
        proxies and one-shot tools do) still reads its answer, so an end of input after a
        whole request does not cancel it. TCP cannot tell that from a client that is gone
        until something is written: a `100 Continue` (which every HTTP/1.1 client must
        accept and skip) is, and a peer that has really closed answers it with a reset,
        seen within a round trip. Before the request is complete, an end of input closes
        the connection as before."""
        cycle = self.cycle
        if self._phase() != "app" or cycle is None:
            return None
        self._half_closed = True
        if not cycle.response_started:
            self.transport.write(self.conn.send(h11.InformationalResponse(
                status_code=100, headers=[], reason=b"Continue")) or b"")
        elif getattr(cycle, "limner_event_stream", False) and not cycle.response_complete:
            # An event stream under way: a comment line is an event its reader skips.
            self.transport.write(self.conn.send(h11.Data(data=b": checking the connection\n\n"))
                                 or b"")
        self.loop.call_later(PROBE_AFTER_S[0], self._probe, 0)
        return True

    def _probe(self, attempt: int) -> None:
        """Aborts the connection once the kernel has seen the peer reset it; the app's
        request then reads a disconnect, as for any client that went away."""
        if self.transport.is_closing():
            return
        if _was_reset(self.transport.get_extra_info("socket")):
            log.debug("a half-closed client is gone (reset): its request is cancelled")
            self.transport.abort()
        elif attempt + 1 < len(PROBE_AFTER_S):
            self.loop.call_later(PROBE_AFTER_S[attempt + 1], self._probe, attempt + 1)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._half_closed:  # nothing more can arrive on it
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: the envelope, not uvicorn's plain text."""
        self._answer_and_close(400, "Bad Request", f"{msg} The request is not valid HTTP/1.1.",
                               "invalid_http")

    # Deadlines ------------------------------------------------------------------------
    def _phase(self) -> Phase:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return "head"
        return "body" if cycle.more_body else "app"

    def _arm(self, phase: Phase) -> None:
        self._disarm()
        seconds = self.limits.header_timeout_s if phase == "head" \
            else self.limits.body_timeout_s
        self._deadline = self.loop.call_later(seconds, self._expired, phase)
        self._deadline_phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_phase = None

    def _expired(self, phase: Phase) -> None:
        self._deadline = None
        self._deadline_phase = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if phase == "body" and cycle is not None and not cycle.response_started:
            # The app waits in `receive()`: it now sees a disconnect, and what it would send
            # is dropped, so the 408 below is the only answer.
            cycle.disconnected = True
            cycle.message_event.set()
            _throttle.warning("body", "closed a connection whose body did not arrive within "
                              "%.0f s", self.limits.body_timeout_s)
            self._answer_and_close(408, "Request Timeout",
                                   "The request body was not received in time.",
                                   "request_timeout")
        elif phase == "head" and self.conn.trailing_data[0]:
            _throttle.warning("head", "closed a connection whose request head did not arrive "
                              "within %.0f s", self.limits.header_timeout_s)
            self._answer_and_close(408, "Request Timeout",
                                   "The request head was not received in time.",
                                   "request_timeout")
        else:  # idle, or the app already answered: nothing to say
            self.transport.close()

    def _answer_and_close(self, status: int, reason: str, message: str, code: str) -> None:
        self.transport.write(_raw_response(status, reason, message, code))
        self.transport.close()


def protocol_with(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """The protocol class for uvicorn's `http` option, carrying these limits."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})


def raise_open_file_limit() -> int:
    """Raises the soft limit on open files to the hard one; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, open_files: int) -> int:
    """`wanted`, or fewer where the open-file limit would be reached first."""
    return max(1, min(wanted, open_files - RESERVED_FDS))
