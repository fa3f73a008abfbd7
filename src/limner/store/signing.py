"""HMAC signatures for image URLs: over the file's path and its expiry time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path) -> bytes:
    """The signing secret persisted at `path`, created with 0600 permissions if missing.

    Created by linking a finished file into place, which fails if another process (another
    ingress replica on a shared data dir) got there first: then its secret is the one read,
    so every process signs alike.
    """
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
        try:
            os.link(draft, path)
        except FileExistsError:
            data = path.read_bytes().strip()
            if len(data) >= 32:
                return data
            os.replace(draft, path)  # a short or empty file: ours replaces it
            return secret
    finally:
        draft.unlink(missing_ok=True)
    return secret


class Signer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the URL signing secret must be at least 16 bytes")
        self._secret = secret

    def sign(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, path: str, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.sign(path, expires), signature)
