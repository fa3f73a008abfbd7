"""Stored responses: one JSON record per response (and, for a background stream, its event
log) under `data_dir/responses/<owner>/`, kept for a TTL and within a size cap (both
enforced by `sweep`).

Every write goes to a temporary file that replaces the record at once, so a crash leaves the
old record or the new one, never half of one. Ids are checked before any path is built from
them, and each owner has a folder of its own: another key's response is not found, exactly
like one that never existed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from limner.errors import NotFound, StorageFailed

RESPONSE_ID = re.compile(r"resp_([0-9a-f]{48})")
ITEM_ID = re.compile(r"(?:ig|msg|fc|in)_([0-9a-f]{48})[0-9a-f]{4}")
"""An output or input item's id carries its response's: `item_reference` needs no index."""
_OWNER = re.compile(r"[0-9a-f]{32}")


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def item_id(response_id: str, prefix: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}{index:04x}"


def response_of_item(item: str) -> str | None:
    match = ITEM_ID.fullmatch(item)
    return f"resp_{match.group(1)}" if match else None


def not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


@dataclass
class StoredResponse:
    owner: str
    response: dict[str, Any]
    """The `Response` as the routes answer it (its images' base64 included)."""
    request: dict[str, Any]
    """The request as it came, so a background response can be run again after a restart."""
    input_items: list[dict[str, Any]] = field(default_factory=list)
    stored_at: float = 0.0
    messages: list[dict[str, Any]] = field(default_factory=list)
    """With a text model: the conversation so far as chat messages, for the next turn."""

    @property
    def id(self) -> str:
        value: str = self.response["id"]
        return value


class ResponseStore:
    """Blocking file operations; async callers run them in a thread."""

    def __init__(self, root: Path, ttl_s: float, max_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.clock = clock

    def save(self, record: StoredResponse) -> None:
        if not record.stored_at:
            record.stored_at = self.clock()
        self._write(self._path(record.id, record.owner), json.dumps(asdict(record)))

    def load(self, response_id: str, owner: str) -> StoredResponse:
        path = self._path(response_id, owner)
        try:
            with open(path, encoding="utf-8") as handle:
                fields = json.load(handle)
            record = StoredResponse(**fields)
        except (OSError, ValueError, TypeError) as exc:
            raise not_found(response_id) from exc
        if self._expired(record):
            self.delete(response_id, owner)
            raise not_found(response_id)
        return record

    def delete(self, response_id: str, owner: str) -> None:
        path = self._path(response_id, owner)
        try:
            path.unlink()
        except OSError as exc:
            raise not_found(response_id) from exc
        with contextlib.suppress(OSError):
            self._events_path(path).unlink()

    def save_events(self, response_id: str, owner: str, events: list[dict[str, Any]]) -> None:
        """A background stream's events, for `GET /v1/responses/{id}?stream=true`."""
        self._write(self._events_path(self._path(response_id, owner)),
                    "".join(json.dumps(event) + "\n" for event in events))

    def load_events(self, response_id: str, owner: str) -> list[dict[str, Any]]:
        try:
            with open(self._events_path(self._path(response_id, owner)),
                      encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except (OSError, ValueError):
            return []

    def unfinished(self) -> list[StoredResponse]:
        """Background responses a stop left queued or running, oldest first."""
        found = []
        for record in self._all():
            if record.response.get("background") and record.response.get("status") in (
                    "queued", "in_progress"):
                found.append(record)
        return sorted(found, key=lambda r: r.stored_at)

    def sweep(self) -> int:
        """Removes expired records, then, over the size cap, the oldest finished ones (never
        a running one); the number removed. Run periodically, so a save costs one write."""
        removed = 0
        kept: list[tuple[StoredResponse, int]] = []
        for record in sorted(self._all(), key=lambda r: r.stored_at):
            if self._expired(record):
                with contextlib.suppress(NotFound):
                    self.delete(record.id, record.owner)
                    removed += 1
            else:
                kept.append((record, self._size(record)))
        total = sum(size for _, size in kept)
        for record, size in kept:
            if total <= self.max_bytes:
                break
            if record.response.get("status") in ("queued", "in_progress"):
                continue
            with contextlib.suppress(NotFound):
                self.delete(record.id, record.owner)
                removed += 1
            total -= size
        return removed

    # Helpers ------------------------------------------------------------------------------
    def _expired(self, record: StoredResponse) -> bool:
        running = record.response.get("status") in ("queued", "in_progress")
        return not running and self.clock() - record.stored_at > self.ttl_s

    def _size(self, record: StoredResponse) -> int:
        """The bytes a record holds on disk, its event log included."""
        path = self._path(record.id, record.owner)
        size = 0
        for part in (path, self._events_path(path)):
            with contextlib.suppress(OSError):
                size += part.stat().st_size
        return size

    def _all(self) -> list[StoredResponse]:
        records = []
        for path in self.root.glob("*/resp_*.json") if self.root.is_dir() else ():
            try:
                with open(path, encoding="utf-8") as handle:
                    records.append(StoredResponse(**json.load(handle)))
            except (OSError, ValueError, TypeError):
                continue  # removed meanwhile, or not a record of ours
        return records

    def _path(self, response_id: str, owner: str) -> Path:
        if not RESPONSE_ID.fullmatch(response_id):
            raise not_found(response_id)
        if owner and not _OWNER.fullmatch(owner):
            raise not_found(response_id)
        return self.root / (owner or "_") / f"{response_id}.json"

    @staticmethod
    def _events_path(path: Path) -> Path:
        return path.with_suffix(".json.events")

    def _write(self, path: Path, text: str) -> None:
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "x", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise StorageFailed(f"The response could not be stored: {exc.strerror or exc}.",
                                code="storage_failed") from exc
