"""`POST /v1/images/generations` (also served at `/images/generations`), and the answer
every image endpoint shares (`respond`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from limner.errors import LimnerError, ModelUnavailable
from limner.planning import GenerationPlan, plan_request
from limner.protocol.json_body import json_body
from limner.server.parsing import parse_json, parse_request, read_body
from limner.server.sse import comment, sse_body
from limner.server.state import AppState, app_state, request_owner

log = logging.getLogger("limner.audit")
router = APIRouter()
T = TypeVar("T")
INLINE_BODY_BYTES = 4096
"""Bodies up to this size are admitted on the event loop: their checks take well under a
millisecond, less than the hand-off to a thread would."""


class ClientGone(Exception):
    pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`; if the client disconnects first, cancels it (and so its job)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()


@router.post("/v1/images/generations")
@router.post("/images/generations", include_in_schema=False)
async def create_image(request: Request) -> Response:
    return await counted(request, _create_image(request))


async def counted(request: Request, answering: Awaitable[Response]) -> Response:
    """The answer, counted by status in `limner_requests_total`."""
    counter = app_state(request.app).service.metrics.requests
    try:
        response = await answering
    except LimnerError as exc:
        counter.inc(status=str(exc.status))
        raise
    counter.inc(status=str(response.status_code))
    return response


def _plan(body: bytes, state: AppState) -> GenerationPlan:
    """Every check that needs neither an engine nor moderation: JSON, types, the rules."""
    return plan_generation(parse_json(body), state)


def plan_generation(document: dict[str, Any], state: AppState) -> GenerationPlan:
    """A parsed generations body's plan (types, the rules); the batch runner plans its
    lines here too, so a line is answered exactly as the route would answer it."""
    return plan_request(parse_request(document), state.catalogue, state.settings.auto_size)


def check_available(state: AppState, plan: GenerationPlan) -> None:
    """503 after the plan's model failed to load, 400 when it cannot fit the memory budget
    even alone; a model not loaded yet is loaded while the request waits in its queue."""
    model = state.residency.state(plan.entry.engine)
    if model.status == "failed":
        raise ModelUnavailable(plan.model, model.reason or "unknown")
    state.residency.check_fits(plan.entry.engine)


def _loading_note(state: AppState, plan: GenerationPlan) -> bytes:
    """A stream for a model not in memory says so first, in a comment: no invented partial
    images, and SDKs skip comments."""
    if state.residency.ready(plan.entry.engine):
        return b""
    return comment(f"loading model {plan.entry.engine}; the first events follow its load")


async def _create_image(request: Request) -> Response:
    state = app_state(request.app)
    # 1. Parse and validate everything before any work starts or a stream opens. The work
    # grows with the body (a prompt may be 32,000 characters), so a large one is planned in
    # a thread while the event loop serves everyone else.
    body = await read_body(request, state.settings.max_body_bytes)
    if len(body) <= INLINE_BODY_BYTES:
        plan = _plan(body, state)
    else:
        plan = await asyncio.to_thread(_plan, body, state)
    return await respond(request, plan)


async def respond(request: Request, plan: GenerationPlan) -> Response:
    """A planned request's answer, the same for every endpoint: admission (moderation, the
    queue), then one JSON answer or a stream."""
    state = app_state(request.app)
    request_id: str = request.state.request_id
    check_available(state, plan)
    plan = dataclasses.replace(plan, owner=request_owner(request) or None)
    log.info("%s %s model=%s n=%d size=%s quality=%s stream=%s safety_identifier=%r",
             request_id, plan.endpoint, plan.model, plan.params.n, plan.size, plan.quality,
             plan.stream, plan.safety_identifier)
    # 2. Moderation and the queue: their refusals (400, 429) come as plain JSON, streams too.
    generation = await state.service.start(plan, request_id)
    if plan.stream:
        return StreamingResponse(
            sse_body(generation.events(), _loading_note(state, plan)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    # 3. One JSON answer; the job is cancelled if the client goes away.
    try:
        result = await until_disconnect(request, generation.response())
    except ClientGone:
        log.info("%s client disconnected; generation cancelled", request_id)
        return Response(status_code=499)
    if generation.stored and await request.is_disconnected():
        generation.discard()  # its URLs would be written to nobody
        log.info("%s client disconnected; its stored images removed", request_id)
        return Response(status_code=499)
    # Not JSONResponse: model_dump() and json.dumps scan every byte of the base64 again.
    return Response(json_body(result, exclude_none=True), media_type="application/json")
