"""A response answered with a text model: its turns, its image calls drawn here and
answered back to it, its text as message items, its calls of the client's tools as
`function_call` items (which end the response: the client runs them).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from limner.catalogue import Catalogue
from limner.errors import InvalidRequest, LimnerError
from limner.input_images import Upload
from limner.planning import GenerationPlan
from limner.protocol.responses import ImageGenerationCall, ResponseError, ResponseUsage
from limner.responses.items import (
    Event,
    Run,
    call_error,
    function_call,
    image_call,
    message,
)
from limner.responses.planning import Action, plan_call
from limner.responses.store import item_id
from limner.responses.upstream import IMAGE_FUNCTION, IMAGE_TOOL, TextModel, client_tools
from limner.service import Generation

MAX_ROUNDS = 8
"""Text model turns in one response: a model that keeps calling tools is stopped there."""
Admit = Callable[[GenerationPlan, str], Awaitable[Generation]]
"""The image service's admission of a plan (`ImageService.start`)."""


async def converse(run: Run, text_model: TextModel, admit: Admit, catalogue: Catalogue,
                   auto_size: str) -> AsyncIterator[Event | None]:
    """The text model's turns: its image calls drawn here and answered to it, until it
    writes its answer or calls one of the client's tools (which the client runs)."""
    tools = ([IMAGE_TOOL] if run.tool is not None else []) + \
        client_tools(run.request.tools or [])
    usage = ResponseUsage()
    latest = run.pictures[-1:] if run.pictures else run.earlier
    for _ in range(MAX_ROUNDS):
        try:
            reply = await text_model.reply(run.messages, tools)
        except LimnerError as exc:
            run.response.status = "failed"
            run.response.error = ResponseError(code="server_error", message=exc.message)
            yield run.lifecycle("response.failed")
            return
        usage.input_tokens += reply.input_tokens
        usage.output_tokens += reply.output_tokens
        usage.total_tokens = usage.input_tokens + usage.output_tokens
        run.response.usage = usage
        run.messages.append({"role": "assistant", "content": reply.text,
                             **({"tool_calls": reply.tool_calls} if reply.tool_calls
                                else {})})
        if reply.text:
            async for said in message(run, reply.text):
                yield said
        theirs = [c for c in reply.tool_calls
                  if c.get("function", {}).get("name") != IMAGE_FUNCTION]
        ours = [c for c in reply.tool_calls if c not in theirs]
        for tool_call in theirs:
            for made in function_call(run, tool_call):
                yield made
        if theirs or not ours:
            return
        for tool_call in ours:
            run.failure = None
            async for drawn in _tool_image(run, admit, catalogue, auto_size, tool_call, latest):
                yield drawn
            item = run.response.output[-1]
            if isinstance(item, ImageGenerationCall) and item.status == "completed" \
                    and item.result is not None:
                latest = [Upload(f"{item.id}.result", base64.b64decode(item.result))]
                answer = "The picture was drawn and is shown to the user."
            else:
                reason = run.failure.message if run.failure else "it failed"
                answer = f"The picture could not be drawn: {reason}"
            run.messages.append({"role": "tool", "tool_call_id": tool_call.get("id"),
                                 "content": answer})
        run.failure = None


async def _tool_image(run: Run, admit: Admit, catalogue: Catalogue, auto_size: str,
                      tool_call: dict[str, Any],
                      latest: list[Upload]) -> AsyncIterator[Event | None]:
    """One image call of the text model, planned and admitted like any other; a refusal
    is a failed item whose reason goes back to the model."""
    assert run.tool is not None
    try:
        arguments = json.loads(tool_call.get("function", {}).get("arguments") or "{}")
        prompt = arguments.get("prompt") if isinstance(arguments, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("The text model called the image tool without a prompt.",
                                 param="prompt", code="invalid_value")
        asked = arguments.get("action") or run.tool.action or "auto"
        action: Action = "edit" if latest and asked != "generate" else "generate"
        call = await asyncio.to_thread(
            plan_call, run.request, run.tool, run.tool_index, prompt, action,
            latest if action == "edit" else [], run.mask, catalogue,
            stream=run.stream, auto_size=auto_size)
        generation = await admit(call.plan, run.request_id)
    except (LimnerError, ValueError) as exc:
        failure = exc if isinstance(exc, LimnerError) else InvalidRequest(
            "The text model's arguments for the image tool are not JSON.",
            code="invalid_value")
        run.failure = failure
        index = len(run.response.output)
        item = ImageGenerationCall(id=item_id(run.response.id, "ig", index),
                                   status="failed", error=call_error(failure))
        run.response.output.append(item)
        yield run.event("response.output_item.added", output_index=index,
                        item=item.model_dump(exclude_none=True))
        yield run.event("response.output_item.done", output_index=index,
                        item=item.model_dump(exclude_none=True))
        return
    async for event in image_call(run, call, generation):
        yield event
    if run.failure is None:
        run.calls.append(call)
