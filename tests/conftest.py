"""Shared fixtures: a real limner server on a loopback port, driven over real HTTP."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import Image as ImageData
from openai.types import ImagesResponse
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from limner.config import Settings
from limner.engines.base import Engine
from limner.engines.fake import FakeEngine
from limner.server.app import create_app
from limner.server.runner import LimnerServer, uvicorn_config


def decoded(b64: str | None) -> Image.Image:
    """An answer's base64 image, decoded (so a test reads its real size, mode and format)."""
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def images_of(response: ImagesResponse) -> list[ImageData]:
    """The SDK types `data` as optional; every answer of ours has it."""
    assert response.data is not None
    return response.data


@dataclass
class FakeClock:
    """Wall clock for URL expiry that tests can move forward."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes] | None = None,
                       polls: int = 600) -> None:
    """A readiness wait, not a speed check: polls /healthz until it answers 200, fails at once
    if the server's process has exited, and gives up after `polls` tries 0.05 s apart."""
    for _ in range(polls):
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"the server exited ({process.returncode}): {err[-3000:]}")
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{base_url} did not become healthy after {polls} polls")


@pytest.fixture(scope="session", autouse=True)
def torch_backend_by_default() -> Iterator[None]:
    """In-process diffusers engines, module fixtures' too, see no OpenVINO unless a test says
    otherwise: `backend = "auto"` takes it wherever it is installed, and the suite's torch
    tests must stay torch's."""
    try:
        from limner.engines.diffusers import engine
    except ImportError:
        yield
        return
    real = engine.detect_platform
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "detect_platform",
                      lambda: dataclasses.replace(real(), openvino=False))
        yield


def stream_until_answered(base_url: str, path: str, headers: str, first: bytes,
                          limit: int = 50 * 2**20) -> tuple[str, int]:
    """POST a chunked body, `first` and then 64 KiB frames, until the server answers or
    `limit` bytes went: the answer's status line ("" if none came) and the bytes sent."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                     f"{headers}\r\n".encode() + f"{len(first):x}\r\n".encode() + first
                     + b"\r\n")
        while sent < limit:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(frame)
            except OSError:  # the server answered and closed while we were writing
                break
            sent += len(chunk)
        else:
            return "", sent
        sock.settimeout(10)
        reply = b""
        while b"\r\n\r\n" not in reply and (more := sock.recv(65536)):
            reply += more
        return reply.split(b"\r\n", 1)[0].decode("latin-1"), sent
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    engines: Mapping[str, Engine]
    clock: FakeClock
    app: Any

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60, **kwargs)


@contextlib.contextmanager
def running_server(data_dir: Path, engines: Mapping[str, Engine] | None = None, /,
                   **overrides: Any) -> Iterator[RunningServer]:
    """A real server (the CLI's own runner) on a free 127.0.0.1 port, for the `with` block;
    `data_dir=` among the overrides replaces the port's own folder under `data_dir`, so a
    second server can take over the first one's data."""
    port = free_port()
    configured = engines is None and bool(overrides.get("engines"))
    """Engine tables and no engines: the server builds them from its config, as in use."""
    engines = {} if configured else engines if engines is not None else {"fake": FakeEngine()}
    values: dict[str, Any] = {
        "port": port, "data_dir": data_dir / f"data-{port}",
        "default_engine": overrides["engines"][0].name if configured else next(iter(engines))}
    values.update(overrides)
    settings = Settings(**values)
    clock = FakeClock()
    app = create_app(settings, engines=None if configured else engines, clock=clock)
    server = LimnerServer(uvicorn_config(app, settings), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base)
        yield RunningServer(base, settings, engines, clock, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Starts real servers for the test; call with settings overrides (and `engines`)."""
    with contextlib.ExitStack() as stack:
        def start(engines: Mapping[str, Engine] | None = None,
                  **overrides: Any) -> RunningServer:
            if "tables" in overrides:  # the config's engine tables, beside the given engines
                overrides["engines"] = overrides.pop("tables")
            return stack.enter_context(running_server(tmp_path, engines, **overrides))

        yield start
