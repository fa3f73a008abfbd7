"""ResponsesService: a Responses request -> one `image_generation_call` drawn by the
`ImageService`, answered whole, as stream events, or in the background. No HTTP types.

Every way of answering runs the same event sequence (`_drive`); a whole answer reads it to
the end, a stream sends each event, a background response records them, so a client can
poll it, follow its stream from any sequence number, or cancel it. Responses are stored
(`ResponseStore`) when `store` is true, which is what `previous_response_id` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from limner.catalogue import Catalogue
from limner.config import Settings
from limner.errors import InvalidRequest, LimnerError, NotFound, QueueFull
from limner.input_images import Upload
from limner.metadata import check_metadata
from limner.protocol.images import ImageRef
from limner.protocol.responses import (
    CreateResponseRequest,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)
from limner.responses import conversation
from limner.responses.items import (
    HEARTBEAT_S,
    Event,
    Run,
    image_call,
    response_code,
    tool_usage,
)
from limner.responses.planning import image_tool, plan_call, wanted_action
from limner.responses.store import ResponseStore, StoredResponse, new_response_id, response_of_item
from limner.responses.text_turns import converse
from limner.responses.upstream import TextModel, chat_messages
from limner.server import image_refs
from limner.server.parsing import parse_as
from limner.service import Generation, ImageService
from limner.store.files import FileStore

log = logging.getLogger("limner.responses")
QUEUE_RETRY_S = 1.0
"""How soon a background response asks again when the engine's queue is full."""


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
        # In a thread: an `item_reference` reads a stored response, and earlier pictures are
        # decoded from base64.
        turn = await asyncio.to_thread(conversation.read_turn, request, response_id,
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
        messages: list[dict[str, Any]] = []
        if self.text_model is not None:
            # `instructions` hold for their own turn only, as OpenAI's do.
            history = [m for m in (previous.messages if previous else [])
                       if m["role"] != "system"]
            messages = chat_messages(request.instructions, history, turn.items)
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
        self._publish(run, run.lifecycle("response.created"))
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
            run.response.error = ResponseError(code=response_code(exc), message=exc.message)
            self._publish(run, run.lifecycle("response.failed"))
        finally:
            run.changed.set()
            # Stored before it stops being `_running`: a `get` or a follower in between
            # would otherwise read the stored `queued` record, with no events.
            try:
                await asyncio.shield(asyncio.to_thread(self._save_finished, run))
            finally:
                self._running.pop(run.response.id, None)

    def _save_finished(self, run: Run) -> None:
        try:
            self.store.save(run.record())
            if run.stream and run.response.background:
                self.store.save_events(run.response.id, run.owner, run.events)
        except LimnerError:
            log.exception("response %s could not be stored", run.response.id)

    def _publish(self, run: Run, event: Event) -> None:
        """Kept for its followers when it streams; a poll reads `run.response` instead."""
        if run.stream:
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
            if not run.done:
                run.response.status = "cancelled"
            try:
                if run.response.store:
                    await asyncio.shield(asyncio.to_thread(self._save_finished, run))
            finally:
                self._running.pop(run.response.id, None)

    # 3. The event sequence ------------------------------------------------------------------
    async def _drive(self, run: Run, generation: Generation | None
                     ) -> AsyncIterator[Event | None]:
        response = run.response
        response.status = "in_progress"
        yield run.lifecycle("response.in_progress")
        if self.text_model is not None:
            async for event in converse(run, self.text_model, self.images.start,
                                        self.catalogue, self.settings.auto_size):
                yield event
            if response.error is not None:  # the text model failed: `_converse` said so
                return
        else:
            assert run.call is not None and generation is not None
            async for event in image_call(run, run.call, generation):
                yield event
            if run.failure is not None:
                response.status = "failed"
                response.error = ResponseError(code=response_code(run.failure),
                                               message=run.failure.message)
                yield run.lifecycle("response.failed")
                return
            run.calls.append(run.call)
        response.status = "completed"
        response.completed_at = int(self.clock())
        response.usage = response.usage or ResponseUsage()
        response.tool_usage = tool_usage(run.calls)
        yield run.lifecycle("response.completed")

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


def _not_background() -> InvalidRequest:
    return InvalidRequest("Only responses created with 'background': true can be cancelled.",
                          param="response_id", code="invalid_value")

