"""The one place where exceptions become OpenAI error envelopes."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from limner.errors import LimnerError
from limner.protocol.errors import error_payload

log = logging.getLogger("limner.server")


def error_response(exc: LimnerError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return JSONResponse(
        error_payload(exc.message, exc.type, exc.param, exc.code, **exc.extra),
        status_code=exc.status,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LimnerError)
    async def _limner(request: Request, exc: LimnerError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method not allowed ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        return JSONResponse(
            error_payload(message, "invalid_request_error"),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette sends this response from outside every middleware, so the request id
        # that RequestContextMiddleware put in the scope is added here.
        request_id = str(request.scope.get("state", {}).get("request_id", ""))
        log.exception("%s unexpected error on %s %s", request_id, request.method,
                      request.url.path)
        headers = {"x-should-retry": "false"}
        if request_id:
            headers["x-request-id"] = request_id
        return JSONResponse(
            error_payload("The server had an error while processing your request.",
                          "server_error", None, "internal_error"),
            status_code=500,
            headers=headers,
        )
