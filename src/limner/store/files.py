"""Uploaded files for the Files API: one data file and one JSON metadata file per id, on disk."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from limner.errors import NotFound, PayloadTooLarge, StorageFailed
from limner.paging import page_after

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
CHUNK = 1 << 20
_ID = re.compile(r"file-[0-9a-f]{32}")
"""Exactly what `FileStore.create` makes, so no other name ever reaches the filesystem."""

Clock = Callable[[], float]


@dataclass(frozen=True)
class FileRecord:
    """A stored file's metadata; `created_ns` orders files created within the same second."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    created_ns: int = 0
    owner: str = ""
    """Who may see it (`middleware.owner_of` of the key that stored it); "" with no keys."""

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's `FileObject`; files never expire here, so `expires_at` is null."""
        return {"id": self.id, "object": "file", "bytes": self.bytes,
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "expires_at": None}


def not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.",
                           param="file", code="file_too_large")


class FileStore:
    """`create`, `get`, `list_files`, `open`, `get_bytes`, `delete`; blocking, so async callers run
    them in a thread.

    The metadata file is written last and removed first, so a file exists exactly while its
    metadata does, and a crash leaves at most an unlisted data file or a dot-named temporary.
    """

    def __init__(self, root: Path, max_bytes: int, clock: Clock = time.time) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.clock = clock

    def create(self, source: BinaryIO, filename: str, purpose: str,
               owner: str = "") -> FileRecord:
        """Copies `source` in chunks; over `max_bytes` it raises 413 and leaves nothing behind."""
        file_id = f"file-{secrets.token_hex(16)}"
        data, meta = self._paths(file_id)
        partial = self.root / f".{file_id}.data.part"
        meta_partial = self.root / f".{file_id}.json.part"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            size = 0
            with open(partial, "xb") as handle:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            record = FileRecord(id=file_id, bytes=size, created_at=int(self.clock()),
                                filename=filename, purpose=purpose,
                                created_ns=time.time_ns(), owner=owner)
            with open(meta_partial, "x", encoding="utf-8") as handle:
                json.dump(asdict(record), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, data)
            os.replace(meta_partial, meta)
        except BaseException as exc:
            for path in (meta, data, meta_partial, partial):
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(exc, OSError):
                raise StorageFailed(f"The file could not be stored: {exc.strerror or exc}.",
                                    code="storage_failed") from exc
            raise
        return record

    def get(self, file_id: str, owner: str = "") -> FileRecord:
        """The metadata of `file_id`; 404 for a malformed, unknown or unreadable id, and for
        another owner's file (which must look exactly like one that does not exist)."""
        _, meta = self._paths(file_id)
        try:
            with self._open_nofollow(meta) as handle:
                fields = json.loads(handle.read().decode("utf-8"))
            record = FileRecord(**fields)
        except (OSError, ValueError, TypeError) as exc:
            raise not_found(file_id) from exc
        if record.owner != owner:
            raise not_found(file_id)
        return record

    def list_files(self, purpose: str | None = None, *, owner: str = "", order: str = "desc",
                   after: str | None = None, limit: int = 10_000) -> tuple[list[FileRecord], bool]:
        """One page in creation order (`asc` or `desc`) after the file `after`, and whether
        more follow; an `after` that names no stored file is a 400."""
        records: list[FileRecord] = []
        for meta in self.root.glob("file-*.json") if self.root.is_dir() else ():
            file_id = meta.name.removesuffix(".json")
            if not _ID.fullmatch(file_id):
                continue
            try:
                record = self.get(file_id, owner)
            except NotFound:
                continue  # deleted while listing, or a stray file
            if purpose is None or record.purpose == purpose:
                records.append(record)
        records.sort(key=lambda r: (r.created_at, r.created_ns, r.id), reverse=order == "desc")
        return page_after(records, after, limit, "file", lambda r: r.id)

    def open(self, file_id: str, owner: str = "") -> tuple[FileRecord, BinaryIO]:
        """The metadata and an open handle on the data (the caller closes it), which stays
        readable if the file is deleted meanwhile."""
        record = self.get(file_id, owner)
        data, _ = self._paths(file_id)
        try:
            return record, self._open_nofollow(data)
        except OSError as exc:
            raise not_found(file_id) from exc

    def get_bytes(self, file_id: str, owner: str = "") -> bytes:
        """The whole content of `file_id` (at most `max_bytes`), for routes that take a file id."""
        _, handle = self.open(file_id, owner)
        with handle:
            return handle.read()

    def delete(self, file_id: str, owner: str = "") -> None:
        self.get(file_id, owner)
        data, meta = self._paths(file_id)
        try:
            meta.unlink()
        except OSError as exc:
            raise not_found(file_id) from exc
        with contextlib.suppress(OSError):
            data.unlink()

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        """The data and metadata paths; the id is checked before any path is built from it."""
        if not _ID.fullmatch(file_id):
            raise not_found(file_id)
        return self.root / f"{file_id}.data", self.root / f"{file_id}.json"

    @staticmethod
    def _open_nofollow(path: Path) -> BinaryIO:
        # A symlink planted in the directory must not serve a file from elsewhere.
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
