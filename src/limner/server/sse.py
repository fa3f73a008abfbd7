"""Server-sent events framing, byte for byte as the OpenAI clients expect.

`event: <type>` + `data: <one-line JSON>` + a blank line; no `[DONE]`. Comment lines keep
idle connections alive. A failure after the 200 is an `error` event; normal events never
carry an `error` key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from limner.errors import LimnerError
from limner.protocol.errors import error_payload
from limner.protocol.json_body import json_body

log = logging.getLogger("limner.server")
HEARTBEAT = b": keep-alive\n\n"


def frame(event_type: str, data: bytes) -> bytes:
    return b"".join((f"event: {event_type}\ndata: ".encode(), data, b"\n\n"))


def frame_model(event: BaseModel) -> bytes:
    return frame(getattr(event, "type"), json_body(event, exclude_none=True))  # noqa: B009


def frame_error(exc: BaseException) -> bytes:
    if isinstance(exc, LimnerError):
        payload = error_payload(exc.message, exc.type, exc.param, exc.code)
    else:
        payload = error_payload("The server had an error while processing your request.",
                                "server_error", None, "internal_error")
    return frame("error", json.dumps({"type": "error", **payload},
                                     separators=(",", ":")).encode())


def comment(text: str) -> bytes:
    """A line every SSE reader skips: for people watching the stream (curl), not clients."""
    return b"".join((b": ", " ".join(text.split()).encode(), b"\n\n"))


async def sse_body(events: AsyncIterator[BaseModel | None],
                   first: bytes = b"") -> AsyncIterator[bytes]:
    """`first` is sent before any event (a comment saying the model is loading)."""
    if first:
        yield first
    try:
        async for event in events:
            yield HEARTBEAT if event is None else frame_model(event)
    except Exception as exc:
        if not isinstance(exc, LimnerError):
            log.exception("stream failed after it had started")
        yield frame_error(exc)
