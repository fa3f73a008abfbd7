"""The state of a response being answered (`Run`) and the output items it is built of, each
with the stream events that add it: an `image_generation_call`, a message, a function call.

Every item's events go through `Run.event`, so sequence numbers are counted in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from limner.errors import LimnerError, QueueFull
from limner.input_images import Upload
from limner.protocol.events import ImageEditCompletedEvent, ImageGenCompletedEvent
from limner.protocol.responses import (
    TERMINAL,
    CallError,
    CreateResponseRequest,
    FunctionCall,
    ImageGenerationCall,
    ImageGenerationTool,
    ImageGenToolUsage,
    OutputMessage,
    OutputText,
    ResponseObject,
    TokenDetails,
    ToolUsage,
)
from limner.responses.planning import ImageCall
from limner.responses.store import StoredResponse, item_id
from limner.service import Generation
from limner.usage import generation_usage

Event = dict[str, Any]
HEARTBEAT_S = 10.0
"""A keep-alive comment after this long without an event."""


@dataclass
class Run:
    """A response being answered: its live state and, in the background, its events."""

    owner: str
    request_id: str
    request: CreateResponseRequest
    document: dict[str, Any]
    response: ResponseObject
    call: ImageCall | None
    """Image-only mode's one call, planned at admission; with a text model, `None`."""
    items: list[dict[str, Any]]
    stream: bool
    tool: ImageGenerationTool | None = None
    tool_index: int = 0
    pictures: list[Upload] = field(default_factory=list)
    earlier: list[Upload] = field(default_factory=list)
    mask: Upload | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """With a text model: the conversation as chat messages, kept for the next turn."""
    calls: list[ImageCall] = field(default_factory=list)
    """The image calls drawn, for `tool_usage`."""
    events: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sequence: int = 0
    failure: LimnerError | None = None
    """Why its drawing failed: the answer to a whole (not streamed) foreground request."""
    cancel_requested: bool = False
    """Cancelled by its client: a task cancelled otherwise (at shutdown) resumes later."""

    @property
    def done(self) -> bool:
        return self.response.status in TERMINAL

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def lifecycle(self, kind: str) -> Event:
        return self.event(kind, response=self.response.dump())

    def record(self) -> StoredResponse:
        return StoredResponse(self.owner, self.response.dump(), self.document, self.items,
                              messages=self.messages)


async def image_call(run: Run, call: ImageCall,
                      generation: Generation) -> AsyncIterator[Event | None]:
    """One `image_generation_call` item from added to done; a failure is the item's
    `error` (and `run.failure`), not an exception."""
    response, plan = run.response, call.plan
    index = len(response.output)
    item = ImageGenerationCall(id=item_id(response.id, "ig", index), status="in_progress",
                               action=call.action)
    response.output.append(item)
    yield run.event("response.output_item.added", output_index=index,
                    item=item.model_dump(exclude_none=True))
    yield run.event("response.image_generation_call.in_progress", output_index=index,
                    item_id=item.id)
    item.status = "generating"
    yield run.event("response.image_generation_call.generating", output_index=index,
                    item_id=item.id)
    echo = {"background": plan.background, "output_format": plan.output_format,
            "quality": plan.quality, "size": plan.size}
    result: str | None = None
    try:
        if plan.stream:
            async for image_event in generation.events(HEARTBEAT_S):
                if image_event is None:
                    yield None
                elif isinstance(image_event, ImageGenCompletedEvent
                                | ImageEditCompletedEvent):
                    result = image_event.b64_json
                else:
                    yield run.event(
                        "response.image_generation_call.partial_image",
                        output_index=index, item_id=item.id,
                        partial_image_b64=image_event.b64_json,
                        partial_image_index=image_event.partial_image_index, **echo)
        else:
            answer = await generation.response()
            result = answer.data[0].b64_json if answer.data else None
    except LimnerError as exc:
        run.failure = exc
        item.status = "failed"
        item.error = call_error(exc)
        yield run.event("response.output_item.done", output_index=index,
                        item=item.model_dump(exclude_none=True))
        return
    item.status = "completed"
    item.result = result
    item.revised_prompt = call.prompt
    for name, value in echo.items():
        setattr(item, name, value)
    yield run.event("response.image_generation_call.completed", output_index=index,
                    item_id=item.id)
    yield run.event("response.output_item.done", output_index=index,
                    item=item.model_dump(exclude_none=True))


async def message(run: Run, text: str) -> AsyncIterator[Event]:
    index = len(run.response.output)
    message = OutputMessage(id=item_id(run.response.id, "msg", index), status="in_progress",
                            content=[])
    run.response.output.append(message)
    yield run.event("response.output_item.added", output_index=index,
                    item=message.model_dump())
    part = OutputText(text="")
    common = {"item_id": message.id, "output_index": index, "content_index": 0}
    yield run.event("response.content_part.added", part=part.model_dump(), **common)
    yield run.event("response.output_text.delta", delta=text, logprobs=[], **common)
    yield run.event("response.output_text.done", text=text, logprobs=[], **common)
    part.text = text
    yield run.event("response.content_part.done", part=part.model_dump(), **common)
    message.content = [part]
    message.status = "completed"
    yield run.event("response.output_item.done", output_index=index,
                    item=message.model_dump())

def function_call(run: Run, tool_call: dict[str, Any]) -> list[Event]:
    index = len(run.response.output)
    function = tool_call.get("function", {})
    item = FunctionCall(id=item_id(run.response.id, "fc", index),
                        call_id=str(tool_call.get("id")), name=str(function.get("name")),
                        arguments=str(function.get("arguments") or ""))
    run.response.output.append(item)
    return [run.event("response.output_item.added", output_index=index,
                      item=item.model_dump()),
            run.event("response.output_item.done", output_index=index,
                      item=item.model_dump())]


def tool_usage(calls: list[ImageCall]) -> ToolUsage:
    """The image calls' usage estimates, summed."""
    totals = {"text": 0, "image": 0, "output": 0}
    for call in calls:
        plan = call.plan
        p = plan.params
        partials = plan.partial_images if plan.stream else 0
        usage = generation_usage(plan.prompt_tokens, p.width, p.height, plan.quality, 1,
                                 partials, plan.input_image_tokens)
        totals["text"] += usage.input_tokens_details.text_tokens
        totals["image"] += usage.input_tokens_details.image_tokens
        totals["output"] += usage.output_tokens
    given = totals["text"] + totals["image"]
    return ToolUsage(image_gen=ImageGenToolUsage(
        input_tokens=given,
        input_tokens_details=TokenDetails(text_tokens=totals["text"],
                                          image_tokens=totals["image"]),
        output_tokens=totals["output"],
        output_tokens_details=TokenDetails(text_tokens=0, image_tokens=totals["output"]),
        total_tokens=given + totals["output"]))


def call_error(exc: LimnerError) -> CallError:
    return CallError(code=exc.code, message=exc.message, param=exc.param, type=exc.type,
                     moderation_details=exc.extra.get("moderation_details"))


def response_code(exc: LimnerError) -> str:
    """`Response.error.code` takes a fixed set: a refused prompt is `invalid_prompt`."""
    if exc.code in ("moderation_blocked", "content_policy_violation"):
        return "invalid_prompt"
    return "rate_limit_exceeded" if isinstance(exc, QueueFull) else "server_error"
