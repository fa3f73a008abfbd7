"""Files on local disk under a random name, written atomically, deleted once expired."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from limner.errors import NotFound, StorageFailed

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp",
               "gif": "image/gif", "svg": "image/svg+xml"}
_NAME = re.compile(r"^img_[A-Za-z0-9_-]{32}\.(png|jpeg|webp|gif|svg)$")

Clock = Callable[[], float]


@dataclass(frozen=True)
class StoredFile:
    name: str
    expires: int


class LocalImageStore:
    """`put` returns a `StoredFile`; `path_for` finds it again, refusing anything else.

    A file's expiry is its modification time plus the TTL, so the store keeps no index that
    could be lost or disagree with the disk.
    """

    def __init__(self, root: Path, ttl_s: int = 3600, clock: Clock = time.time) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.clock = clock

    def put(self, data: bytes, output_format: str) -> StoredFile:
        name = f"img_{secrets.token_urlsafe(24)}.{output_format}"
        now = self.clock()
        final = self.root / name
        partial = self.root / f".{name}.part"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.utime(partial, (now, now))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise StorageFailed(
                f"The image could not be stored: {exc.strerror or exc}.", code="storage_failed"
            ) from exc
        return StoredFile(name=name, expires=int(now) + self.ttl_s)

    def put_all(self, blobs: list[bytes], output_format: str) -> list[StoredFile]:
        """All of `blobs` stored, or none: files already written are removed on a failure."""
        stored: list[StoredFile] = []
        try:
            for data in blobs:
                stored.append(self.put(data, output_format))
        except BaseException:
            self.remove([done.name for done in stored])
            raise
        return stored

    def remove(self, names: list[str]) -> None:
        """Deletes files this store wrote, for a request that will never hand out their URLs."""
        for name in names:
            with contextlib.suppress(OSError):
                (self.root / name).unlink()

    def path_for(self, name: str) -> Path:
        """The file for `name`; `NotFound` for bad names, symlinks, expired or missing files."""
        if not _NAME.match(name):
            raise NotFound("No such image.", code="not_found")
        path = self.root / name
        try:
            info = path.lstat()
        except OSError as exc:
            raise NotFound("No such image.", code="not_found") from exc
        if not path.is_file() or path.is_symlink():
            raise NotFound("No such image.", code="not_found")
        if info.st_mtime + self.ttl_s <= self.clock():
            raise NotFound("This image URL has expired.", code="expired")
        return path

    def sweep(self) -> int:
        """Delete expired files (and leftovers of interrupted writes); returns how many."""
        removed = 0
        now = self.clock()
        if not self.root.is_dir():
            return 0
        for entry in self.root.iterdir():
            try:
                stale = entry.stat().st_mtime + self.ttl_s <= now
                if entry.name.startswith(".") and entry.name.endswith(".part"):
                    stale = entry.stat().st_mtime + 60 <= now
                if stale and entry.is_file():
                    entry.unlink()
                    removed += 1
            except OSError:
                continue
        return removed
