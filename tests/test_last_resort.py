"""`LastResort`, the outermost layer: a request task cancelled at the end of the shutdown grace
period, or an exception that escapes the framework, still ends as an OpenAI envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from limner.server.middleware import LastResort

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/images/generations",
                         "headers": [], "state": {"request_id": "req_1"}}


async def run_cancelled(app: Any) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.ensure_future(LastResort(app)(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    task.cancel("Task cancelled, timeout graceful shutdown exceeded")
    await asyncio.wait([task])
    return sent


async def test_a_cancelled_request_gets_503_shutting_down() -> None:
    async def waits_forever(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(3600)

    sent = await run_cancelled(waits_forever)
    assert sent[0]["status"] == 503
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"req_1"
    error = json.loads(sent[1]["body"])["error"]
    assert (error["type"], error["code"], error["param"]) == ("server_error", "shutting_down",
                                                              None)


async def test_a_cancelled_stream_ends_with_an_error_event() -> None:
    async def streams_forever(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b": keep-alive\n\n",
                    "more_body": True})
        await asyncio.sleep(3600)

    sent = await run_cancelled(streams_forever)
    assert [m["type"] for m in sent] == ["http.response.start", *["http.response.body"] * 3]
    event = sent[2]["body"].decode()
    assert event.startswith("event: error\ndata: ") and event.endswith("\n\n")
    payload = json.loads(event.split("data: ", 1)[1])
    assert payload["type"] == "error" and payload["error"]["code"] == "shutting_down"
    assert sent[3].get("more_body", False) is False


async def test_an_escaped_exception_before_the_answer_is_a_500_envelope() -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await LastResort(fails)(SCOPE, receive, send)  # swallowed: nothing reaches uvicorn
    assert sent[0]["status"] == 500
    error = json.loads(sent[1]["body"])["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
