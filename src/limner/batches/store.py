"""Batch records and their per-line results, on disk under `data_dir/batches/`.

Each batch is a folder `batch_<hex>/` holding `record.json` (the batch object, rewritten
whole), `input.jsonl` (the validated copy of its input file, so deleting the input file
later changes nothing) and `results/<index>.json`, one per answered line. Every file is
written to a temporary name, synced and renamed into place, so a crash leaves either the old
file or the new one, and a line's result exists only once it is complete: that is what lets
a restarted server resume after the last answered line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from limner.errors import NotFound, StorageFailed
from limner.paging import page_after

COMPLETION_WINDOW_S = 24 * 3600
TERMINAL = ("completed", "failed", "expired", "cancelled")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
_ID = re.compile(r"batch_[0-9a-f]{32}")
"""Exactly what `BatchStore.create` makes, so no other name ever reaches the filesystem."""


@dataclass(frozen=True)
class LineError:
    """One entry of a batch's `errors.data`: why the input file could not be run."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message,
                "param": self.param}


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored; `to_openai` is OpenAI's `Batch` object."""

    id: str
    owner: str
    input_file_id: str
    endpoint: str
    completion_window: str
    created_at: int
    expires_at: int
    status: str = "validating"
    metadata: dict[str, str] | None = None
    created_ns: int = 0
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[LineError] = field(default_factory=list)
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_openai(self) -> dict[str, Any]:
        errors = None if not self.errors else {
            "object": "list", "data": [e.to_openai() for e in self.errors]}
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": errors,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "in_progress_at": self.in_progress_at, "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at, "completed_at": self.completed_at,
            "failed_at": self.failed_at, "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at, "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed,
                               "failed": self.failed},
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class LineResult:
    """One answered line: what the Images API answered (`status_code`, `body`)."""

    index: int
    id: str
    custom_id: str
    status_code: int
    request_id: str
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def to_openai(self) -> dict[str, Any]:
        """The line of the output (2xx) or error file, OpenAI's format."""
        return {"id": self.id, "custom_id": self.custom_id,
                "response": {"status_code": self.status_code, "request_id": self.request_id,
                             "body": self.body},
                "error": None}


def not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")


class BatchStore:
    """Blocking file operations (async callers run them in a thread). `update` is a
    read-modify-write under one lock, so the runner and a cancel never undo each other."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.clock = clock
        self._lock = threading.Lock()

    def create(self, owner: str, input_file_id: str, endpoint: str, completion_window: str,
               metadata: dict[str, str] | None) -> BatchRecord:
        now = int(self.clock())
        record = BatchRecord(id=f"batch_{secrets.token_hex(16)}", owner=owner,
                             input_file_id=input_file_id, endpoint=endpoint,
                             completion_window=completion_window, created_at=now,
                             expires_at=now + COMPLETION_WINDOW_S, metadata=metadata,
                             created_ns=time.time_ns())
        try:
            self._folder(record.id).mkdir(parents=True)
            self._save(record)
        except OSError as exc:
            shutil.rmtree(self._folder(record.id), ignore_errors=True)
            raise StorageFailed(f"The batch could not be stored: {exc.strerror or exc}.",
                                code="storage_failed") from exc
        return record

    def get(self, batch_id: str, owner: str | None = None) -> BatchRecord:
        """404 for a malformed or unknown id, and for another owner's batch (which must look
        exactly like one that does not exist); `owner=None` is the runner, who sees all."""
        try:
            fields = json.loads((self._folder(batch_id) / "record.json").read_text("utf-8"))
            fields["errors"] = [LineError(**e) for e in fields.get("errors", [])]
            record = BatchRecord(**fields)
        except (OSError, ValueError, TypeError) as exc:
            raise not_found(batch_id) from exc
        if owner is not None and record.owner != owner:
            raise not_found(batch_id)
        return record

    def update(self, batch_id: str, change: Callable[[BatchRecord], BatchRecord]) -> BatchRecord:
        with self._lock:
            record = change(self.get(batch_id))
            self._save(record)
            return record

    def list_batches(self, owner: str | None = None, *, after: str | None = None,
                     limit: int = 20) -> tuple[list[BatchRecord], bool]:
        """One page, newest first, after the batch `after` (a 400 if it is not in the list);
        `owner=None` lists every owner's."""
        records: list[BatchRecord] = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not _ID.fullmatch(folder.name):
                continue
            with contextlib.suppress(NotFound):
                records.append(self.get(folder.name, owner))
        records.sort(key=lambda r: (r.created_at, r.created_ns, r.id), reverse=True)
        return page_after(records, after, limit, "batch", lambda r: r.id)

    def active(self) -> list[BatchRecord]:
        """Every owner's unfinished batches, oldest first: the runner's work."""
        records, _ = self.list_batches(limit=1 << 62)
        return [r for r in reversed(records) if r.status in ACTIVE]

    def save_input(self, batch_id: str, data: bytes) -> None:
        self._write(self._folder(batch_id) / "input.jsonl", data)

    def read_input(self, batch_id: str) -> bytes:
        return (self._folder(batch_id) / "input.jsonl").read_bytes()

    def add_result(self, batch_id: str, result: LineResult) -> BatchRecord:
        """The line's result, durable before its count is."""
        results = self._folder(batch_id) / "results"
        results.mkdir(exist_ok=True)
        self._write(results / f"{result.index:06d}.json",
                    json.dumps(asdict(result)).encode("utf-8"))
        return self.update(batch_id, lambda r: dataclasses.replace(
            r, completed=r.completed + result.ok, failed=r.failed + (not result.ok)))

    def results(self, batch_id: str) -> dict[int, LineResult]:
        folder = self._folder(batch_id) / "results"
        found: dict[int, LineResult] = {}
        for path in sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else ():
            result = LineResult(**json.loads(path.read_text("utf-8")))
            found[result.index] = result
        return found

    def drop_work(self, batch_id: str) -> None:
        """The input copy and line results, once the output files hold them."""
        folder = self._folder(batch_id)
        with contextlib.suppress(OSError):
            (folder / "input.jsonl").unlink()
        shutil.rmtree(folder / "results", ignore_errors=True)

    def _folder(self, batch_id: str) -> Path:
        if not _ID.fullmatch(batch_id):
            raise not_found(batch_id)
        return self.root / batch_id

    def _save(self, record: BatchRecord) -> None:
        self._write(self._folder(record.id) / "record.json",
                    json.dumps(asdict(record)).encode("utf-8"))

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            with open(partial, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
