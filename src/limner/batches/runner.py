"""The batch runner: one task, started by the app's lifespan, that answers batch lines one at
a time behind interactive work.

It takes unfinished batches oldest first: validates the input file (`lines.parse_lines`),
then answers each line through the routes' own planning and the same `ImageService`, and
stores each answer (`BatchStore.add_result`) before the next line starts, so a restarted
server resumes after the last answered line. A line is submitted only while its model's
queue is empty, and only one at a time, so an interactive request waits at most for the
one batch line in the engine. At the end the answers become the output file (2xx) and the
error file (every other status), owned by the batch's owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from limner.batches.lines import BatchLine, parse_lines
from limner.batches.store import ACTIVE, BatchRecord, BatchStore, LineError, LineResult
from limner.errors import (
    InvalidRequest,
    LimnerError,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    Unavailable,
)
from limner.planning import GenerationPlan
from limner.protocol.errors import error_payload
from limner.protocol.json_body import json_body
from limner.server.parsing import parse_json
from limner.server.routes.edits import plan_json_edit
from limner.server.routes.images import check_available, plan_generation
from limner.server.state import AppState
from limner.service import Generation

log = logging.getLogger("limner.batches")
POLL_S = 0.05
"""How often a waiting line looks again at its model's queue (or load)."""
IDLE_S = 1.0
"""How often an idle runner looks for expired batches."""
OUTPUT_PURPOSE = "batch_output"


class Interrupted(Exception):
    """The line stopped unanswered (cancelled batch, server shutting down): not written."""


class BatchRunner:
    """`run()` is the task; `submitted`, `cancel` and `stop` are called by the routes and
    the app."""

    def __init__(self, state: AppState, store: BatchStore,
                 clock: Callable[[], float]) -> None:
        self.state = state
        self.store = store
        self.clock = clock
        self._wake = asyncio.Event()
        self._line: tuple[str, asyncio.Task[LineResult]] | None = None
        self._stopping = False
        self._new: set[str] = set()
        self._unfinished: set[str] = set()
        """Ids of the batches still to finish: the disk is scanned once, at startup."""

    def submitted(self, batch_id: str) -> None:
        """A batch was created: validate it now (between two lines of another batch, if one
        runs), rather than at the next idle poll."""
        self._new.add(batch_id)
        self._unfinished.add(batch_id)
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """The batch is `cancelling`: stop its running line (which is then not written), or,
        if it is waiting its turn, finish it between two lines of the running batch."""
        if self._line is not None and self._line[0] == batch_id:
            self._line[1].cancel()
        else:
            self._new.add(batch_id)
        self._wake.set()

    def stop(self) -> None:
        """Shutdown: the running line stops unwritten, so a restart answers it again."""
        self._stopping = True
        if self._line is not None:
            self._line[1].cancel()
        self._wake.set()

    async def run(self) -> None:
        scanned = False
        while not self._stopping:
            self._wake.clear()
            try:
                if not scanned:  # what the last server left unfinished
                    self._unfinished |= {r.id for r in await asyncio.to_thread(
                        self.store.active)}
                    scanned = True
                for record in await asyncio.to_thread(self._oldest_first):
                    if self._stopping:
                        return
                    await self._process(record.id)
            except Exception:
                log.exception("the batch runner failed; it tries again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_S)

    def _oldest_first(self) -> list[BatchRecord]:
        records = []
        for batch_id in list(self._unfinished):
            try:
                record = self.store.get(batch_id)
            except NotFound:
                record = None
            if record is None or record.status not in ACTIVE:
                self._unfinished.discard(batch_id)
            else:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.created_ns, r.id))

    # One batch, from wherever it stopped ---------------------------------------------------
    async def _process(self, batch_id: str) -> None:
        record = await self._get(batch_id)
        if record.status in ("validating", "in_progress") and self._expired(record):
            await self._finish(record, "expired")
            return
        if record.status == "validating":
            record = await self._validate(record)
        if record.status == "in_progress":
            record = await self._run_lines(record)
        if record.status == "finalizing":
            await self._finish(record, "completed")
        elif record.status == "cancelling":
            await self._finish(record, "cancelled")

    async def _tend_others(self) -> None:
        """Batches created or cancelled since the last line are validated or finished at
        once, so a malformed file fails, and a cancel ends, while another batch runs
        instead of after it."""
        while self._new:
            batch_id = self._new.pop()
            with contextlib.suppress(NotFound):
                record = await self._get(batch_id)
                if record.status == "validating" and not self._expired(record):
                    await self._validate(record)
                elif record.status == "cancelling":
                    await self._finish(record, "cancelled")

    async def _validate(self, record: BatchRecord) -> BatchRecord:
        try:
            data = await asyncio.to_thread(self.state.files.get_bytes, record.input_file_id,
                                           record.owner)
        except NotFound:
            return await self._fail(record, [LineError(
                "invalid_file", f"The input file '{record.input_file_id}' no longer exists.",
                param="input_file_id")])
        lines, errors = await asyncio.to_thread(parse_lines, data, record.endpoint)
        if errors:
            return await self._fail(record, errors)
        await asyncio.to_thread(self.store.save_input, record.id, data)
        now = int(self.clock())
        return await self._update(record.id, lambda r: dataclasses.replace(
            r, status="in_progress", in_progress_at=now, total=len(lines))
            if r.status == "validating" else r)

    async def _fail(self, record: BatchRecord, errors: list[LineError]) -> BatchRecord:
        now = int(self.clock())
        log.info("batch %s failed validation: %d error(s)", record.id, len(errors))
        return await self._update(record.id, lambda r: dataclasses.replace(
            r, status="failed", failed_at=now, errors=errors)
            if r.status == "validating" else r)

    async def _run_lines(self, record: BatchRecord) -> BatchRecord:
        try:
            data = await asyncio.to_thread(self.store.read_input, record.id)
        except OSError:  # someone removed it from the data dir: nothing left to run from
            now = int(self.clock())
            errors = [LineError("input_missing", "The batch's copy of its input file is "
                                "gone from the data directory.")]
            return await self._update(record.id, lambda r: dataclasses.replace(
                r, status="failed", failed_at=now, errors=errors)
                if r.status == "in_progress" else r)
        lines, _ = await asyncio.to_thread(parse_lines, data, record.endpoint)
        done = await asyncio.to_thread(self.store.results, record.id)
        # The counts from the results themselves: a crash may fall between the two writes.
        record = await self._update(record.id, lambda r: dataclasses.replace(
            r, completed=sum(x.ok for x in done.values()),
            failed=sum(not x.ok for x in done.values())))
        output_bytes = sum(_line_size(x) for x in done.values() if x.ok)
        for line in lines:
            if line.index in done:
                continue
            await self._tend_others()
            record = await self._get(record.id)
            if record.status != "in_progress" or self._stopping:
                return record
            if self._expired(record):
                await self._finish(record, "expired")
                return await self._get(record.id)
            try:
                result = await self._answer_in_task(record, line)
            except Interrupted:
                return await self._get(record.id)
            if result.ok and output_bytes + _line_size(result) > self.state.files.max_bytes:
                result = _result(line, result.request_id, PayloadTooLarge(
                    "This answer would make the batch's output file larger than the limit "
                    f"of {self.state.files.max_bytes} bytes, so it was not kept.",
                    code="batch_output_too_large"))
            output_bytes += _line_size(result) if result.ok else 0
            record = await asyncio.to_thread(self.store.add_result, record.id, result)
        now = int(self.clock())
        return await self._update(record.id, lambda r: dataclasses.replace(
            r, status="finalizing", finalizing_at=now) if r.status == "in_progress" else r)

    async def _finish(self, record: BatchRecord, status: str) -> None:
        """The output and error files of what was answered, then the terminal status."""
        results = await asyncio.to_thread(self.store.results, record.id)
        outputs = [r.to_openai() for _, r in sorted(results.items()) if r.ok]
        failures = [r.to_openai() for _, r in sorted(results.items()) if not r.ok]
        if status == "expired" and record.total:
            # As OpenAI does: each line that never ran is in the error file, as expired.
            data = await asyncio.to_thread(self.store.read_input, record.id)
            lines, _ = await asyncio.to_thread(parse_lines, data, record.endpoint)
            failures += [_expired_line(line) for line in lines if line.index not in results]
        output_id = await self._write_file(record, "output", outputs)
        error_id = await self._write_file(record, "error", failures)
        now = int(self.clock())

        def finished(r: BatchRecord) -> BatchRecord:
            if r.status not in ACTIVE:
                return r
            return dataclasses.replace(
                r, status=status, output_file_id=output_id, error_file_id=error_id,
                completed_at=now if status == "completed" else r.completed_at,
                cancelled_at=now if status == "cancelled" else r.cancelled_at,
                expired_at=now if status == "expired" else r.expired_at)

        await self._update(record.id, finished)
        await asyncio.to_thread(self.store.drop_work, record.id)
        log.info("batch %s %s: %d answered, %d failed", record.id, status, len(outputs),
                 len(failures))

    async def _write_file(self, record: BatchRecord, kind: str,
                          lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        data = "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
        stored = await asyncio.to_thread(
            self.state.files.create, io.BytesIO(data), f"{record.id}_{kind}.jsonl",
            OUTPUT_PURPOSE, record.owner)
        return stored.id

    # One line ------------------------------------------------------------------------------
    async def _answer_in_task(self, record: BatchRecord, line: BatchLine) -> LineResult:
        """The line's answer, in a task that `cancel` and `stop` can stop."""
        task = asyncio.ensure_future(self._answer(record, line))
        self._line = (record.id, task)
        try:
            await asyncio.wait({task})
        finally:
            self._line = None
            if not task.done():  # the runner itself was cancelled
                task.cancel()
        if task.cancelled():
            raise Interrupted()
        return task.result()

    async def _answer(self, record: BatchRecord, line: BatchLine) -> LineResult:
        """What the Images API answers the line's body: a 200 with its response, or the
        error's status with its envelope."""
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            plan = await self._plan(record, line)
            if plan.stream:
                raise InvalidRequest("Invalid 'stream': a batch line cannot stream; omit "
                                     "'stream' or set it to false.", param="stream",
                                     code="invalid_value")
            check_available(self.state, plan)
            generation = await self._admit(plan, request_id)
            response = await generation.response()
        except LimnerError as exc:
            if isinstance(exc, Unavailable) and exc.code == "shutting_down":
                raise asyncio.CancelledError() from exc
            return _result(line, request_id, exc)
        except Exception:
            log.exception("%s batch %s line %d failed", request_id, record.id, line.line)
            return _result(line, request_id, LimnerError(
                "The server had an error while processing your request.",
                code="internal_error"))
        body = json.loads(json_body(response, exclude_none=True))
        return LineResult(line.index, _line_id(), line.custom_id, 200, request_id, body)

    async def _plan(self, record: BatchRecord, line: BatchLine) -> GenerationPlan:
        # The body goes through the same JSON checks as a posted one, and its size limit.
        body = json.dumps(line.body).encode("utf-8")
        edits = record.endpoint.endswith("/edits")
        limit = self.state.settings.max_upload_bytes if edits \
            else self.state.settings.max_body_bytes
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than the limit of {limit} "
                                  "bytes.", code="request_too_large")
        document = await asyncio.to_thread(parse_json, body)
        if edits:
            return await plan_json_edit(document, self.state, record.owner)
        return await asyncio.to_thread(plan_generation, document, self.state)

    async def _admit(self, plan: GenerationPlan, request_id: str) -> Generation:
        """Submitted only while the model's queue is empty, so interactive work goes first."""
        scheduler = self.state.schedulers[plan.entry.engine]
        while True:
            while scheduler.queue_depth > 0:
                await asyncio.sleep(POLL_S)
            try:
                return await self.state.service.start(plan, request_id)
            except QueueFull as exc:  # filled meanwhile: wait, never answer a line 429
                await asyncio.sleep(max(POLL_S, exc.retry_after_s))

    def _expired(self, record: BatchRecord) -> bool:
        return self.clock() >= record.expires_at

    async def _get(self, batch_id: str) -> BatchRecord:
        return await asyncio.to_thread(self.store.get, batch_id)

    async def _update(self, batch_id: str,
                      change: Callable[[BatchRecord], BatchRecord]) -> BatchRecord:
        return await asyncio.to_thread(self.store.update, batch_id, change)


def _line_id() -> str:
    return f"batch_req_{secrets.token_hex(16)}"


def _result(line: BatchLine, request_id: str, exc: LimnerError) -> LineResult:
    body = error_payload(exc.message, exc.type, exc.param, exc.code, **exc.extra)
    return LineResult(line.index, _line_id(), line.custom_id, exc.status, request_id, body)


def _line_size(result: LineResult) -> int:
    return len(json.dumps(result.to_openai())) + 1


def _expired_line(line: BatchLine) -> dict[str, Any]:
    return {"id": _line_id(), "custom_id": line.custom_id, "response": None,
            "error": {"code": "batch_expired",
                      "message": "This request could not be executed before the completion "
                                 "window expired."}}
