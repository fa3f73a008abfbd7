"""ResponsesService: a Responses request -> one `image_generation_call` drawn by the
`ImageService`, answered whole, as stream events, or in the background. No HTTP types.

Every way of answering runs the same event sequence (`_drive`); a whole answer reads it to
the end, a stream sends each event, a background response records them, so a client can
poll it, follow its stream from any sequence number, or cancel it. Responses are stored
(`ResponseStore`) when `store` is true, which is what `previous_response_id` reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from limner.catalogue import Catalogue
from limner.config import Settings
from limner.errors import InvalidRequest, LimnerError, NotFound, QueueFull
from limner.input_images import Upload
from limner.metadata import check_metadata
from limner.protocol.events import ImageEditCompletedEvent, ImageGenCompletedEvent
from limner.protocol.images import ImageRef
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
    ResponseError,
    ResponseObject,
    ResponseUsage,
    TokenDetails,
    ToolUsage,
)
from limner.responses import conversation
from limner.responses.planning import (
    Action,
    ImageCall,
    image_tool,
    plan_call,
    wanted_action,
)
from limner.responses.store import (
    ResponseStore,
    StoredResponse,
    item_id,
    new_response_id,
    response_of_item,
)
from limner.responses.upstream import (
    IMAGE_FUNCTION,
    IMAGE_TOOL,
    TextModel,
    chat_messages,
    client_tools,
)
from limner.server import image_refs
from limner.server.parsing import parse_as
from limner.service import Generation, ImageService
from limner.store.files import FileStore
from limner.usage import generation_usage

log = logging.getLogger("limner.responses")
Event = dict[str, Any]
HEARTBEAT_S = 10.0
MAX_ROUNDS = 8
"""Text model turns in one response: a model that keeps calling tools is stopped there."""
QUEUE_RETRY_S = 1.0
"""How soon a background response asks again when the engine's queue is full."""


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
    cancel_requested: bool = False
    """Cancelled by its client: a task cancelled otherwise (at shutdown) resumes later."""
    """Why its drawing failed: the answer to a whole (not streamed) foreground request."""

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


class ResponsesService:
    def __init__(self, images: ImageService, store: ResponseStore, files: FileStore,
                 catalogue: Catalogue, settings: Settings,
                 clock: Callable[[], float], text_model: TextModel | None = None) -> None:
        self.images = images
        self.store = store
        self.files = files
        self.catalogue = catalogue
        self.settings = settings
        self.clock = clock
        self.text_model = text_model
        self._running: dict[str, Run] = {}

    # 1. Admission: every 400 before anything is drawn or stored ----------------------------
    async def prepare(self, document: dict[str, Any], owner: str, request_id: str,
                      response_id: str | None = None) -> Run:
        request = parse_as(CreateResponseRequest, document)
        if request.model is None:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model",
                                 code="missing_required_parameter")
        metadata = check_metadata(request.metadata)
        store = request.store is not False
        if request.background and not store:
            raise InvalidRequest("Invalid 'store': background responses must be stored; "
                                 "'background': true requires 'store': true.",
                                 param="store", code="invalid_value")
        previous = None
        if request.previous_response_id is not None:
            previous = await self._previous(request.previous_response_id, owner)
        chosen = image_tool(request, text_model=self.text_model is not None)
        index, tool = chosen if chosen is not None else (0, None)
        response_id = response_id or new_response_id()
        turn = conversation.read_turn(request, response_id,
                                      previous.response if previous else None,
                                      lambda item: self._find_item(item, owner))
        stream = bool(request.stream)
        mask = None
        if tool is not None and tool.input_image_mask is not None:
            ref = ImageRef(**tool.input_image_mask.model_dump())
            mask = await self._resolve(
                conversation.Picture(f"tools[{index}].input_image_mask", ref=ref), owner)
        pictures = [await self._resolve(p, owner) for p in turn.pictures]
        earlier = [await self._resolve(turn.earlier, owner)] if turn.earlier else []
        call = None
        if self.text_model is None:
            assert tool is not None  # image-only: `image_tool` answers the 400 otherwise
            action = wanted_action(tool, index, turn)
            call = await asyncio.to_thread(
                plan_call, request, tool, index, turn.prompt, action,
                (pictures or earlier) if action == "edit" else [], mask, self.catalogue,
                stream=stream, auto_size=self.settings.auto_size)
        elif tool is not None:  # the options are checked now, before the text model runs
            await asyncio.to_thread(plan_call, request, tool, index, turn.prompt, "generate",
                                    [], None, self.catalogue, stream=stream,
                                    auto_size=self.settings.auto_size)
        response = ResponseObject(
            id=response_id, created_at=int(self.clock()),
            status="queued" if request.background else "in_progress",
            background=bool(request.background), model=request.model, output=[],
            tools=request.tools or [], tool_choice=request.tool_choice or "auto",
            parallel_tool_calls=request.parallel_tool_calls is not False,
            previous_response_id=request.previous_response_id,
            instructions=request.instructions, metadata=metadata or {}, store=store,
            user=request.user, safety_identifier=request.safety_identifier)
        messages = [m for m in (previous.messages if previous else []) if m["role"] != "system"]
        messages = chat_messages(request.instructions, []) + messages + \
            chat_messages(None, turn.items)
        return Run(owner, request_id, request, document, response, call, turn.items, stream,
                   tool=tool, tool_index=index, pictures=pictures, earlier=earlier, mask=mask,
                   messages=messages)

    async def admit(self, run: Run) -> Generation | None:
        """The image service's admission (moderation, the queue): its 400 or 429 is the
        answer to a request in the foreground. With a text model each call is admitted
        when the model makes it."""
        if run.call is None:
            return None
        return await self.images.start(run.call.plan, run.request_id)

    # 2. The three ways of answering ---------------------------------------------------------
    async def answer(self, run: Run, generation: Generation | None) -> ResponseObject:
        """The whole response. A failed drawing is the Images API's error for it."""
        async for _ in self._tracked(run, generation):
            pass
        if run.failure is not None:
            raise run.failure
        return run.response

    def stream(self, run: Run, generation: Generation | None) -> AsyncIterator[Event | None]:
        return self._streamed(run, generation)

    async def _streamed(self, run: Run, generation: Generation | None
                        ) -> AsyncIterator[Event | None]:
        yield run.lifecycle("response.created")
        async for event in self._tracked(run, generation):
            yield event

    async def start_background(self, run: Run) -> ResponseObject:
        """Stored as `queued` before the answer goes out, then drawn by a task of its own."""
        run.events.append(run.lifecycle("response.created"))
        await asyncio.to_thread(self.store.save, run.record())
        self._running[run.response.id] = run
        run.task = asyncio.create_task(self._background(run))
        return run.response.model_copy(deep=True)

    async def _background(self, run: Run) -> None:
        try:
            while True:
                try:
                    generation = await self.admit(run)
                    break
                except QueueFull:
                    await asyncio.sleep(QUEUE_RETRY_S)
            async for event in self._drive(run, generation):
                if event is not None:
                    self._publish(run, event)
        except asyncio.CancelledError:
            if run.cancel_requested:
                run.response.status = "cancelled"
            raise
        except LimnerError as exc:  # admission refused it (moderation): a failed response
            run.response.status = "failed"
            run.response.error = ResponseError(code=_response_code(exc), message=exc.message)
            self._publish(run, run.lifecycle("response.failed"))
        finally:
            run.changed.set()
            self._running.pop(run.response.id, None)
            await asyncio.shield(asyncio.to_thread(self._save_finished, run))

    def _save_finished(self, run: Run) -> None:
        try:
            self.store.save(run.record())
            if run.stream and run.response.background:
                self.store.save_events(run.response.id, run.owner, run.events)
        except LimnerError:
            log.exception("response %s could not be stored", run.response.id)

    def _publish(self, run: Run, event: Event) -> None:
        run.events.append(event)
        run.changed.set()

    async def _tracked(self, run: Run, generation: Generation | None
                       ) -> AsyncIterator[Event | None]:
        """`_drive` for a foreground answer: visible to `get` while it runs, stored at the
        end, and `cancelled` if its client goes away first."""
        self._running[run.response.id] = run
        try:
            async for event in self._drive(run, generation):
                yield event
        finally:
            self._running.pop(run.response.id, None)
            if not run.done:
                run.response.status = "cancelled"
            if run.response.store:
                await asyncio.shield(asyncio.to_thread(self._save_finished, run))

    # 3. The event sequence ------------------------------------------------------------------
    async def _drive(self, run: Run, generation: Generation | None
                     ) -> AsyncIterator[Event | None]:
        response = run.response
        response.status = "in_progress"
        yield run.lifecycle("response.in_progress")
        if self.text_model is not None:
            async for event in self._converse(run, self.text_model):
                yield event
            if response.error is not None:  # the text model failed: `_converse` said so
                return
        else:
            assert run.call is not None and generation is not None
            async for event in self._image_call(run, run.call, generation):
                yield event
            if run.failure is not None:
                response.status = "failed"
                response.error = ResponseError(code=_response_code(run.failure),
                                               message=run.failure.message)
                yield run.lifecycle("response.failed")
                return
            run.calls.append(run.call)
        response.status = "completed"
        response.completed_at = int(self.clock())
        response.usage = response.usage or ResponseUsage()
        response.tool_usage = _tool_usage(run.calls)
        yield run.lifecycle("response.completed")

    async def _image_call(self, run: Run, call: ImageCall,
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
            item.error = _call_error(exc)
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

    async def _converse(self, run: Run, text_model: TextModel) -> AsyncIterator[Event | None]:
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
                async for said in self._message(run, reply.text):
                    yield said
            theirs = [c for c in reply.tool_calls
                      if c.get("function", {}).get("name") != IMAGE_FUNCTION]
            ours = [c for c in reply.tool_calls if c not in theirs]
            for tool_call in theirs:
                for made in self._function_call(run, tool_call):
                    yield made
            if theirs or not ours:
                return
            for tool_call in ours:
                run.failure = None
                async for drawn in self._tool_image(run, tool_call, latest):
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

    async def _tool_image(self, run: Run, tool_call: dict[str, Any],
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
                latest if action == "edit" else [], run.mask, self.catalogue,
                stream=run.stream, auto_size=self.settings.auto_size)
            generation = await self.images.start(call.plan, run.request_id)
        except (LimnerError, ValueError) as exc:
            failure = exc if isinstance(exc, LimnerError) else InvalidRequest(
                "The text model's arguments for the image tool are not JSON.",
                code="invalid_value")
            run.failure = failure
            index = len(run.response.output)
            item = ImageGenerationCall(id=item_id(run.response.id, "ig", index),
                                       status="failed", error=_call_error(failure))
            run.response.output.append(item)
            yield run.event("response.output_item.added", output_index=index,
                            item=item.model_dump(exclude_none=True))
            yield run.event("response.output_item.done", output_index=index,
                            item=item.model_dump(exclude_none=True))
            return
        async for event in self._image_call(run, call, generation):
            yield event
        if run.failure is None:
            run.calls.append(call)

    async def _message(self, run: Run, text: str) -> AsyncIterator[Event]:
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

    def _function_call(self, run: Run, tool_call: dict[str, Any]) -> list[Event]:
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

    # 4. Stored responses --------------------------------------------------------------------
    async def get(self, response_id: str, owner: str) -> dict[str, Any]:
        run = self._running.get(response_id)
        if run is not None and run.owner == owner:
            return run.response.dump()
        return (await asyncio.to_thread(self.store.load, response_id, owner)).response

    async def follow(self, response_id: str, owner: str,
                     starting_after: int | None) -> AsyncIterator[Event | None]:
        """A background stream's events after `starting_after`, then the live ones."""
        run = self._running.get(response_id)
        if run is None or run.owner != owner:
            record = await asyncio.to_thread(self.store.load, response_id, owner)
            events = await asyncio.to_thread(self.store.load_events, response_id, owner)
            if not (record.response.get("background") and events):
                raise InvalidRequest(
                    "This response cannot be streamed: only responses created with "
                    "'background': true and 'stream': true keep their events.",
                    param="stream", code="invalid_value")
            return _replay(events, starting_after)
        if not run.stream:
            raise InvalidRequest(
                "This response cannot be streamed: it was created without 'stream': true.",
                param="stream", code="invalid_value")
        return self._follow_live(run, starting_after)

    async def _follow_live(self, run: Run,
                           starting_after: int | None) -> AsyncIterator[Event | None]:
        position = 0 if starting_after is None else starting_after + 1
        while True:
            while position < len(run.events):
                yield run.events[position]
                position += 1
            if run.done and position >= len(run.events):
                return
            run.changed.clear()
            try:
                await asyncio.wait_for(run.changed.wait(), HEARTBEAT_S)
            except TimeoutError:
                yield None

    async def cancel(self, response_id: str, owner: str) -> dict[str, Any]:
        run = self._running.get(response_id)
        if run is not None and run.owner == owner:
            if not run.response.background:
                raise _not_background()
            if run.task is not None:
                run.cancel_requested = True
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task
            return run.response.dump()
        record = await asyncio.to_thread(self.store.load, response_id, owner)
        if not record.response.get("background"):
            raise _not_background()
        return record.response

    async def delete(self, response_id: str, owner: str) -> None:
        run = self._running.get(response_id)
        if run is not None and run.owner == owner and run.task is not None:
            run.cancel_requested = True
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task
        await asyncio.to_thread(self.store.delete, response_id, owner)

    async def input_items(self, response_id: str, owner: str) -> list[dict[str, Any]]:
        run = self._running.get(response_id)
        if run is not None and run.owner == owner:
            return run.items
        return (await asyncio.to_thread(self.store.load, response_id, owner)).input_items

    async def resume(self) -> None:
        """Background responses a stop left unfinished run again from their request; one
        that cannot is marked failed with the reason, never dropped."""
        for record in await asyncio.to_thread(self.store.unfinished):
            try:
                run = await self.prepare(record.request, record.owner, "resumed", record.id)
            except LimnerError as exc:
                record.response.update(status="failed", error={
                    "code": "server_error",
                    "message": f"The response could not be resumed after a restart: "
                               f"{exc.message}"})
                await asyncio.to_thread(self.store.save, record)
                continue
            run.response.created_at = int(record.response.get("created_at", run.response
                                                              .created_at))
            run.items = record.input_items
            log.info("resuming background response %s", record.id)
            await self.start_background(run)

    async def close(self) -> None:
        """At shutdown: background work stops; it stays `in_progress` on disk to resume."""
        tasks = [run.task for run in self._running.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.text_model is not None:
            await self.text_model.close()

    # Helpers -----------------------------------------------------------------------------
    async def _previous(self, response_id: str, owner: str) -> StoredResponse:
        try:
            return await asyncio.to_thread(self.store.load, response_id, owner)
        except NotFound:
            raise InvalidRequest(f"Previous response with id '{response_id}' not found.",
                                 param="previous_response_id",
                                 code="previous_response_not_found") from None

    def _find_item(self, item: str, owner: str) -> dict[str, Any] | None:
        response_id = response_of_item(item)
        if response_id is None:
            return None
        try:
            record = self.store.load(response_id, owner)
        except NotFound:
            return None
        for candidate in (*record.response.get("output", []), *record.input_items):
            if candidate.get("id") == item:
                found: dict[str, Any] = candidate
                return found
        return None

    async def _resolve(self, picture: conversation.Picture, owner: str) -> Upload:
        if picture.data is not None:
            return Upload(picture.param, picture.data)
        assert picture.ref is not None
        settings = self.settings
        return await image_refs.resolve_one(picture.ref, picture.param, picture.param,
                                            self.files, settings.image_url_hosts,
                                            settings.max_upload_bytes, owner)


async def _replay(events: list[Event], starting_after: int | None) -> AsyncIterator[Event | None]:
    for event in events:
        if starting_after is None or event["sequence_number"] > starting_after:
            yield event


def _tool_usage(calls: list[ImageCall]) -> ToolUsage:
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


def _call_error(exc: LimnerError) -> CallError:
    return CallError(code=exc.code, message=exc.message, param=exc.param, type=exc.type,
                     moderation_details=exc.extra.get("moderation_details"))


def _response_code(exc: LimnerError) -> str:
    """`Response.error.code` takes a fixed set: a refused prompt is `invalid_prompt`."""
    if exc.code in ("moderation_blocked", "content_policy_violation"):
        return "invalid_prompt"
    return "rate_limit_exceeded" if isinstance(exc, QueueFull) else "server_error"


def _not_background() -> InvalidRequest:
    return InvalidRequest("Only responses created with 'background': true can be cancelled.",
                          param="response_id", code="invalid_value")

