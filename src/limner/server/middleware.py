"""Pure-ASGI middleware: request ids on every response, request targets made routable
(`paths`), API keys, an access log line, and a last resort for what escapes the app."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from limner.errors import Unavailable
from limner.protocol.errors import error_payload
from limner.server.paths import Targets
from limner.server.sse import frame_error

log = logging.getLogger("limner.access")

OPEN_PATHS = ("/healthz", "/v1/files/images/", "/playground/")
"""Prefixes served without a key: health, signed image links, the playground's own files."""
OPEN_EXACT = ("/",)
"""Paths served without a key only as written: `/` is the playground page, and as a prefix
it would open everything."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def owner_of(key: str) -> str:
    """Who owns what a request stores (files, responses, batches): a name derived from its
    key, so stored records never hold the key itself; "" when no keys are configured."""
    return hashlib.sha256(b"limner-owner:" + key.encode()).hexdigest()[:32]


class RequestContextMiddleware:
    """Adds `x-request-id`, checks `Authorization: Bearer` when keys are configured.

    Keys are stored hashed and compared with `hmac.compare_digest` against every configured
    key, so timing says nothing about which key, or how much of one, matched. With no keys
    configured any key (or none) is accepted: the SDKs always send one.
    """

    def __init__(self, app: ASGIApp, api_keys: Iterable[str],
                 admin_keys: Iterable[str] = (), targets: Targets | None = None) -> None:
        self.app = app
        self.targets = targets or Targets()
        self._admins = [_digest(k) for k in admin_keys]
        self._keys = [_digest(k) for k in api_keys] + self._admins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() \
            else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["admin"] = not self._keys  # an open server has no one to tell apart
        started = time.perf_counter()
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            misdirected = self.targets.normalize(scope)  # before anything reads the path
            if misdirected is not None:
                await _send_json(send_with_id, 421, error_payload(
                    misdirected.message, "invalid_request_error", None, "misdirected_request"))
                return
            path = scope["path"]
            if self._keys and not (path in OPEN_EXACT or path.startswith(OPEN_PATHS)):
                problem = self._check_key(headers.get("authorization"))
                if problem is not None:
                    await _send_json(send_with_id, 401, error_payload(
                        problem, "invalid_request_error", None, "invalid_api_key"))
                    return
                given = headers["authorization"][7:].strip()
                scope["state"]["owner"] = owner_of(given)
                scope["state"]["admin"] = _matches(given, self._admins)
            await self.app(scope, receive, send_with_id)
        finally:
            log.info("%s %s %s %d %.1fms", request_id, scope["method"], scope["path"],
                     status["code"], (time.perf_counter() - started) * 1000)

    def _check_key(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return ("You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                    "YOUR_KEY).")
        if _matches(authorization[7:].strip(), self._keys):
            return None
        return "Incorrect API key provided. You can find your API keys in the server's " \
               "configuration (--api-key or LIMNER_API_KEYS)."


def _matches(key: str, digests: list[bytes]) -> bool:
    given = _digest(key)
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(given, digest)
    return matched


async def _send_json(send: Send, status: int, payload: object,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LastResort:
    """The outermost layer: whatever escapes the app still ends as an OpenAI error.

    Two things get past the framework's own handlers. A task that uvicorn cancels when the
    shutdown grace period is over (it would answer a bare `text/plain` 500), and an
    exception that Starlette's server-error layer has answered and then re-raises (uvicorn
    would log its traceback a second time). The first becomes 503 `shutting_down`, or an
    `error` event on a stream that has begun; the second is only swallowed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started: dict[str, bytes | None] = {}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started["content-type"] = dict(message.get("headers", [])).get(b"content-type")
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            request_id = str(scope.get("state", {}).get("request_id", ""))
            log.warning("%s cancelled at shutdown; answered 503 shutting_down", request_id)
            error = Unavailable("The server shut down before this request finished.",
                                code="shutting_down")
            if not started:
                await _send_json(send, 503, error_payload(error.message, error.type, None,
                                                          error.code),
                                 [(b"x-request-id", request_id.encode("latin-1")),
                                  (b"x-should-retry", b"true")])
            elif (started["content-type"] or b"").startswith(b"text/event-stream"):
                await send({"type": "http.response.body", "body": frame_error(error)})
                await send({"type": "http.response.body", "body": b""})
        except Exception:
            if not started:  # answered and logged by the framework otherwise
                log.exception("unexpected error outside the app's handlers")
                await _send_json(send, 500, error_payload(
                    "The server had an error while processing your request.", "server_error",
                    None, "internal_error"))
