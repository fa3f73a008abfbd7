"""Request targets as clients and proxies really send them, made routable before anything
reads the path.

Open WebUI and n8n join a base URL typed with a trailing slash to `/images/generations`
without normalising (`/v1//images/generations`), and nginx merges slashes by default, so
repeated slashes are merged here too: an answer, not a redirect. An absolute-form target
(`POST http://host:port/v1/...`, which RFC 9112 §3.2.2 says a server must accept) is served
when it names this server, and answered 421 when it names another: this server is no proxy.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import Scope

_ABSOLUTE = re.compile(r"^/?(https?)://([^/?#]*)(.*)$", re.IGNORECASE)
_ABSOLUTE_RAW = re.compile(rb"^/?(https?)://([^/?#]*)(.*)$", re.IGNORECASE)
_SLASHES = re.compile(r"//+")
_SLASHES_RAW = re.compile(rb"//+")
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Misdirected:
    """An absolute-form target naming another host: the answer's message."""

    message: str


class Targets:
    """What counts as this server in an absolute-form target: its listening address and
    port, this machine's names on that port, and the public base URL's host and port."""

    def __init__(self, host: str = "127.0.0.1", public_base_url: str | None = None,
                 extra_names: Iterable[str] = ()) -> None:
        self.names = set(LOOPBACK) | {name.lower() for name in extra_names}
        if host not in WILDCARD:
            self.names.add(host.lower())
        self.names.add(socket.gethostname().lower())
        self.public: tuple[str, int] | None = None
        if public_base_url:
            parts = urlsplit(public_base_url)
            if parts.hostname:
                self.public = (parts.hostname.lower(),
                               parts.port or (443 if parts.scheme == "https" else 80))

    def is_own(self, scheme: str, authority: str, server: tuple[str, int] | None) -> bool:
        parts = urlsplit(f"{scheme}://{authority}")
        try:
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:  # a port that is not a number
            return False
        port = port or (443 if scheme.lower() == "https" else 80)
        if self.public is not None and (host, port) == self.public:
            return True
        if server is None or port != server[1]:
            return False
        return host in self.names or host == server[0].lower()

    def normalize(self, scope: Scope) -> Misdirected | None:
        """Rewrites `scope`'s path in place; a `Misdirected` where it names another host."""
        path: str = scope["path"]
        absolute = _ABSOLUTE.match(path)
        if absolute is not None:
            scheme, authority, rest = absolute.groups()
            if not self.is_own(scheme, authority, scope.get("server")):
                return Misdirected(
                    f"The request target names the host '{authority}', which is not this "
                    "server; it serves its own paths only and is not a proxy.")
            path = rest or "/"
            _set_host(scope, authority)
            raw = scope.get("raw_path")
            if raw and (match := _ABSOLUTE_RAW.match(raw)) is not None:
                scope["raw_path"] = match.group(3) or b"/"
        if "//" in path:
            path = _SLASHES.sub("/", path)
            if scope.get("raw_path"):
                scope["raw_path"] = _SLASHES_RAW.sub(b"/", scope["raw_path"])
        scope["path"] = path
        return None


def _set_host(scope: Scope, authority: str) -> None:
    """RFC 9112 §3.2.2: with an absolute-form target, its authority is the request's host."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"]
    scope["headers"] = [*headers, (b"host", authority.encode("latin-1"))]
