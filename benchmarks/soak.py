"""Soak check: N clients for T seconds sending a mix of request kinds to a limner server.

Usage:
    python benchmarks/soak.py --url http://127.0.0.1:8000 [--pid PID] [--data-dir DIR]
    python benchmarks/soak.py --spawn                      # fake engine, 0.05 s/step
    python benchmarks/soak.py --spawn --engine embedded    # the shipped model
    options: --clients 50 --seconds 600 --seed 0 --edits --json report.json

Built on `limner.testing.load`, as benchmarks/load_test.py is (loopback only, spawning, /proc
readings). Loopback only and bounded: at most 500 clients and 1800 s. Each client loops,
choosing with a seeded `random.Random` among kinds: `b64` (b64_json, decoded and checked for
size and format), `url` (`response_format: url`, then GET the url and check the image),
`stream` (`stream: true`, `partial_images` 1-2, SSE parsed, an `image_generation.completed`
event required), `cancel` (one of those three, the connection closed after a short random
delay: not counted as lost), and, with `--edits` only, `edit` (a multipart `POST
/v1/images/edits` with a small PNG; not served yet, so 404 today). Sizes
256x256/512x512/1024x1024 and formats png/jpeg/webp, on the engine's own model name (free
sizes) and, where they accept the request, gpt-image-1 (1024x1024) and dall-e-2 (png). Every
request carries its own `x-request-id` (`soak-<client>-<seq>`) that the answer must echo; on
429 the client waits the `Retry-After` it was given (capped at `--backoff-cap` s).

Reported: requests sent, answered by kind and status, deliberate cancellations, lost (sent,
never answered, cancellations excluded), duplicated and mismatched request ids, error
bodies (4xx/5xx, or stream `error` events) that are not the `{"error": {"message", "type",
"param", "code"}}` envelope, 5xx, bad images, incomplete streams, p50/p99 latency of 200s
per kind, `/healthz` latency (p50/p99/max, polled every 0.25 s from a separate process so
this client's event loop does not distort it), the server's RSS and open fds every 10 s
(with `--pid` or `--spawn`), and the image files left in the server's image directory
against the urls handed out (with `--spawn` or `--data-dir`). Exit status 1 if anything
is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import multiprocessing
import os
import random
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from limner.rules import OPENAI_MODELS
from limner.testing.load import (
    LOOPBACK,
    MAX_CLIENTS,
    MAX_SECONDS,
    _percentile,
    add_target_arguments,
    memory_mib,
    poll_health,
    require_loopback,
    spawn_server,
    stop_server,
)

SIZES = ("256x256", "512x512", "1024x1024")
FORMATS = ("png", "jpeg", "webp")
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
KIND_WEIGHTS = {"b64": 3, "url": 3, "stream": 2, "cancel": 1}
EDIT_WEIGHT = 1
ENVELOPE_KEYS = ("message", "type", "param", "code")
EXAMPLES = 5
"""How many examples of each kind of problem the report keeps."""


@dataclass
class Expect:
    """What a request's image must be."""

    width: int
    height: int
    output_format: str
    partial_images: int = 0
    response_format: str = "b64_json"


@dataclass
class SoakReport:
    url: str
    clients: int
    seconds: float
    seed: int
    model: str
    kinds: dict[str, int] = field(default_factory=dict)
    """The kinds and their weights."""
    sent: dict[str, int] = field(default_factory=dict)
    answered: dict[str, dict[str, int]] = field(default_factory=dict)
    """kind -> status -> count; `cancel` holds the cancellations that were answered first."""
    cancelled: int = 0
    """Cut before any answer (sent = answered + cancelled + lost, per kind)."""
    cancelled_after_answer: int = 0
    """Cut after the status came (a stream's events, a url's GET): counted as answered."""
    lost: int = 0
    lost_errors: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    mismatched: int = 0
    non_envelope_errors: int = 0
    server_errors: int = 0
    unexpected_statuses: dict[str, int] = field(default_factory=dict)
    """kind:status for anything but 200/429 (and 404 for `edit`, not served yet)."""
    throttled_without_retry_after: int = 0
    bad_images: dict[str, int] = field(default_factory=dict)
    file_gets: dict[str, int] = field(default_factory=dict)
    streams_completed: int = 0
    streams_incomplete: int = 0
    stream_error_events: int = 0
    partial_images: int = 0
    partial_images_requested: int = 0
    """Over the streams that ended; fewer is allowed when the model takes fewer steps."""
    latency_ms: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    """kind -> n, p50, p99, max of 200s (streams: until the completed event)."""
    health_checks: int = 0
    health_failures: int = 0
    health_p50_ms: float | None = None
    health_p99_ms: float | None = None
    health_max_ms: float = 0.0
    resources: list[tuple[float, float | None, int | None, int | None]] = field(
        default_factory=list)
    """(seconds since start, RSS MiB, open fds, files in the image directory) every 10 s."""
    peak_rss_mb: float | None = None
    urls_handed_out: int = 0
    cancelled_url_requests: int = 0
    image_files_left: int | None = None
    server_exited: tuple[float, int | None] | None = None
    """(seconds since start, exit status if known) if the server went away during the run:
    the clients stop then."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.server_exited is not None:
            found.append(f"the server exited at {self.server_exited[0]:.1f}s "
                         f"(status {self.server_exited[1]})")
        for name in ("lost", "duplicated", "mismatched", "non_envelope_errors",
                     "server_errors", "throttled_without_retry_after", "streams_incomplete",
                     "stream_error_events", "health_failures"):
            if getattr(self, name):
                found.append(f"{name}={getattr(self, name)}")
        if self.unexpected_statuses:
            found.append(f"unexpected statuses {self.unexpected_statuses}")
        if self.bad_images:
            found.append(f"bad images {self.bad_images}")
        bad_gets = {k: v for k, v in self.file_gets.items() if k != "200"}
        if bad_gets:
            found.append(f"url GETs not 200 {bad_gets}")
        return found

    def summary(self) -> str:
        def series(index: int, unit: str) -> str:
            cells = [f"{row[0]:.0f}s={row[index]:.0f}{unit}" for row in self.resources
                     if row[index] is not None]
            return ", ".join(cells) or "n/a"

        answered = "; ".join(f"{kind} {dict(sorted(statuses.items()))}"
                             for kind, statuses in sorted(self.answered.items()))
        latency = "; ".join(
            f"{kind} n={v['n']} p50={v['p50']} p99={v['p99']} max={v['max']}"
            for kind, v in sorted(self.latency_ms.items()))
        lines = [
            f"{self.clients} clients x {self.elapsed_s:.1f}s against {self.url} "
            f"(model {self.model}, seed {self.seed}, kinds {self.kinds})",
            f"  sent {sum(self.sent.values())} {dict(sorted(self.sent.items()))}",
            f"  answered: {answered or 'none'}",
            f"  cancelled (deliberately) {self.cancelled} before the answer, "
            f"{self.cancelled_after_answer} after; lost {self.lost} "
            f"{self.lost_errors or ''}; duplicated {self.duplicated}; "
            f"mismatched ids {self.mismatched}",
            f"  5xx {self.server_errors}; non-envelope error bodies {self.non_envelope_errors}; "
            f"unexpected statuses {self.unexpected_statuses or 0}; "
            f"429 without Retry-After {self.throttled_without_retry_after}",
            f"  images: bad {self.bad_images or 0}; url GETs {self.file_gets or 'none'}; "
            f"streams completed {self.streams_completed}, incomplete "
            f"{self.streams_incomplete}, error events {self.stream_error_events}, "
            f"partial images {self.partial_images} of {self.partial_images_requested} "
            "requested",
            f"  latency of 200s (ms): {latency or 'n/a'}",
            f"  /healthz (own process, every 0.25 s): {self.health_checks} checks, "
            f"{self.health_failures} failed, p50 {self.health_p50_ms} ms, "
            f"p99 {self.health_p99_ms} ms, max {self.health_max_ms:.1f} ms",
            f"  server RSS: {series(1, 'MiB')} (peak {self.peak_rss_mb} MiB)",
            f"  server open fds: {series(2, '')}",
        ]
        if self.image_files_left is not None:
            lines.append(
                f"  image files left {self.image_files_left} vs urls handed out "
                f"{self.urls_handed_out} (cancelled url requests {self.cancelled_url_requests}"
                f"; over time: {series(3, '')})")
        else:
            lines.append(f"  urls handed out {self.urls_handed_out} (image directory unknown)")
        for name, examples in sorted(self.examples.items()):
            lines.append(f"  e.g. {name}: " + " | ".join(examples))
        problems = self.problems()
        lines.append("  OK" if not problems else "  PROBLEMS: " + "; ".join(problems))
        return "\n".join(lines)


def is_envelope(document: Any) -> bool:
    """`{"error": {"message", "type", "param", "code"}}` with a string message."""
    if not isinstance(document, dict):
        return False
    error = document.get("error")
    return isinstance(error, dict) and all(k in error for k in ENVELOPE_KEYS) \
        and isinstance(error["message"], str)


def check_image(data: bytes, expect: Expect) -> str | None:
    """None if `data` decodes as an image of the expected size and format, else the problem."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size, kind = image.size, image.format
    except Exception as exc:
        return f"undecodable ({type(exc).__name__})"
    if size != (expect.width, expect.height):
        return f"size {size[0]}x{size[1]} not {expect.width}x{expect.height}"
    if kind != PIL_FORMATS[expect.output_format]:
        return f"format {kind} not {expect.output_format}"
    return None


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (200, 120, 40, 255)).save(buffer, "PNG")
    return buffer.getvalue()


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def image_files(directory: Path) -> int | None:
    """Finished image files (not `.part` leftovers of writes in progress)."""
    try:
        return sum(1 for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    except FileNotFoundError:
        return 0
    except OSError:
        return None


def pid_gone(pid: int) -> bool:
    """True once PID has exited (no /proc entry, or a zombie nobody has reaped yet)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1] in ("Z", "X")
    except OSError:
        return True
    return False


def health_probe(url: str, every_s: float, stop: EventType, conn: Connection) -> None:
    """Runs in its own process: GET /healthz every `every_s` s until `stop`; sends back
    [(seconds since start, ms, ok)]."""
    conn.send(list(poll_health(url, every_s, stop)))
    conn.close()


def discover_local_model(base: str) -> str | None:
    """The first served model name that is not an OpenAI name (the engine's own)."""
    try:
        models = httpx.get(base + "/v1/models", timeout=10).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    for entry in models:
        if isinstance(entry, dict) and entry.get("id") not in OPENAI_MODELS:
            return str(entry["id"])
    return None


class Soak:
    """The run's shared state; `client` is one simulated client's loop."""

    def __init__(self, base: str, report: SoakReport, http: httpx.AsyncClient, *,
                 local_model: str | None, quality: str, seed: int, stop_at: float,
                 backoff_cap_s: float, cancel_delay_s: tuple[float, float],
                 kinds: Mapping[str, int]) -> None:
        self.base = base
        self.report = report
        self.http = http
        self.local_model = local_model
        self.quality = quality
        self.seed = seed
        self.stop_at = stop_at
        self.backoff_cap_s = backoff_cap_s
        self.cancel_delay_s = cancel_delay_s
        self.kind_names = list(kinds)
        self.kind_weights = list(kinds.values())
        self.sent: Counter[str] = Counter()
        self.statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.lost: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.bad_images: Counter[str] = Counter()
        self.file_gets: Counter[str] = Counter()
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)
        self.answered_ids: set[str] = set()
        self.examples: defaultdict[str, list[str]] = defaultdict(list)
        self.edit_png = small_png()

    def example(self, name: str, text: str) -> None:
        if len(self.examples[name]) < EXAMPLES:
            self.examples[name].append(text[:300])

    # --- one client -------------------------------------------------------------------

    async def client(self, index: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + index)
        seq = 0
        while time.perf_counter() < self.stop_at:
            kind = rng.choices(self.kind_names, self.kind_weights)[0]
            request_id = f"soak-{index}-{seq}"
            seq += 1
            self.sent[kind] += 1
            retry_after: float | None = None
            try:
                if kind == "cancel":
                    inner = rng.choice(("b64", "url", "stream"))
                    delay = rng.uniform(*self.cancel_delay_s)
                    try:
                        retry_after = await asyncio.wait_for(
                            self.one(inner, "cancel", request_id, rng), delay)
                    except TimeoutError:
                        if request_id in self.answered_ids:
                            self.report.cancelled_after_answer += 1
                        else:
                            self.report.cancelled += 1
                            self.report.cancelled_url_requests += inner == "url"
                        continue
                else:
                    retry_after = await self.one(kind, kind, request_id, rng)
            except httpx.HTTPError as exc:
                self.lost[type(exc).__name__] += 1
                self.example("lost", f"{request_id} {kind}: {type(exc).__name__} {exc}")
                if isinstance(exc, httpx.ConnectError):
                    await asyncio.sleep(0.1)  # no server: do not spin
                continue
            if retry_after is not None:
                await asyncio.sleep(retry_after)

    def request_body(self, kind: str, rng: random.Random) -> tuple[dict[str, Any], Expect]:
        size = rng.choice(SIZES)
        output_format = rng.choice(FORMATS)
        width, height = (int(v) for v in size.split("x"))
        response_format = "url" if kind == "url" else "b64_json"
        expect = Expect(width, height, output_format, response_format=response_format)
        prompt = f"a small otter, soak {rng.randrange(10_000)}"
        pick = rng.random()
        if kind != "stream" and output_format == "png" and pick < 0.3:
            return ({"prompt": prompt, "model": "dall-e-2", "size": size,
                     "response_format": response_format}, expect)
        if self.local_model is None or (size == "1024x1024" and pick < 0.5):
            expect.width = expect.height = 1024
            model, size = "gpt-image-1", "1024x1024"
        else:
            model = self.local_model
        body: dict[str, Any] = {"prompt": prompt, "model": model, "size": size,
                                "quality": self.quality, "output_format": output_format}
        if kind == "stream":
            body["stream"] = True
            body["partial_images"] = expect.partial_images = rng.randint(1, 2)
        else:
            body["response_format"] = response_format
        return body, expect

    async def one(self, kind: str, label: str, request_id: str, rng: random.Random
                  ) -> float | None:
        """One request of `kind`, recorded under `label`; returns the seconds to wait (429)."""
        headers = {"x-request-id": request_id}
        t0 = time.perf_counter()
        if kind == "edit":
            size = rng.choice(SIZES)
            width, height = (int(v) for v in size.split("x"))
            expect = Expect(width, height, "png")
            response = await self.http.post(
                self.base + "/v1/images/edits", headers=headers,
                files={"image": ("soak.png", self.edit_png, "image/png")},
                data={"prompt": "add a hat", "model": self.local_model or "dall-e-2",
                      "size": size, "response_format": "b64_json"})
            return await self.settle(label, kind, request_id, response, t0, expect)
        body, expect = self.request_body(kind, rng)
        if kind == "stream":
            return await self.stream(label, request_id, body, expect, t0)
        response = await self.http.post(self.base + "/v1/images/generations", json=body,
                                        headers=headers)
        return await self.settle(label, kind, request_id, response, t0, expect)

    # --- answers ------------------------------------------------------------------------

    def check_id(self, request_id: str, response: httpx.Response) -> None:
        echoed = response.headers.get("x-request-id")
        if echoed != request_id:
            self.report.mismatched += 1
            self.example("mismatched", f"sent {request_id}, got {echoed}")
        if request_id in self.answered_ids:
            self.report.duplicated += 1
            self.example("duplicated", request_id)
        self.answered_ids.add(request_id)

    def check_error_body(self, where: str, status: int, content: bytes) -> None:
        try:
            document = json.loads(content)
        except ValueError:
            document = None
        if not is_envelope(document):
            self.report.non_envelope_errors += 1
            self.example("non_envelope", f"{where} {status}: {content[:200]!r}")

    def record_status(self, label: str, kind: str, status: int, content: bytes,
                      request_id: str) -> None:
        self.statuses[label][str(status)] += 1
        if status >= 500:
            self.report.server_errors += 1
        if status >= 400:
            self.check_error_body(f"{request_id} {kind}", status, content)
        expected = {200, 429} | ({404} if kind == "edit" else set())
        if status not in expected:
            self.unexpected[f"{label}:{status}"] += 1
            self.example(f"status {status}", f"{request_id} {kind}: {content[:200]!r}")

    def retry_delay(self, response: httpx.Response) -> float | None:
        if response.status_code != 429:
            return None
        retry_after = response.headers.get("retry-after", "")
        if not retry_after.isdigit():
            self.report.throttled_without_retry_after += 1
            retry_after = "1"
        return min(float(retry_after), self.backoff_cap_s)

    async def image_ok(self, where: str, data: bytes, expect: Expect) -> None:
        problem = await asyncio.to_thread(check_image, data, expect)
        if problem is not None:
            name = problem.split(" ")[0]
            self.bad_images[name] += 1
            self.example(f"bad image ({name})", f"{where}: {problem}")

    async def settle(self, label: str, kind: str, request_id: str, response: httpx.Response,
                     t0: float, expect: Expect) -> float | None:
        content = await response.aread()
        elapsed_ms = (time.perf_counter() - t0) * 1000
        self.check_id(request_id, response)
        self.record_status(label, kind, response.status_code, content, request_id)
        if response.status_code != 200:
            return self.retry_delay(response)
        self.latencies[label].append(elapsed_ms)
        try:
            item = json.loads(content)["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            self.bad_images["no data"] += 1
            self.example("bad image (no data)", f"{request_id}: {content[:200]!r}")
            return None
        if expect.response_format == "url":
            await self.fetch_url(request_id, item.get("url"), expect)
            return None
        try:
            data = base64.b64decode(item["b64_json"], validate=True)
        except (KeyError, TypeError, ValueError):
            self.bad_images["no b64_json"] += 1
            return None
        await self.image_ok(request_id, data, expect)
        return None

    async def fetch_url(self, request_id: str, url: Any, expect: Expect) -> None:
        if not isinstance(url, str):
            self.bad_images["no url"] += 1
            return
        self.report.urls_handed_out += 1
        if (urlsplit(url).hostname or "") not in LOOPBACK:
            self.bad_images["url not loopback"] += 1
            self.example("bad image (url)", url)
            return
        file_id = f"{request_id}-file"
        response = await self.http.get(url, headers={"x-request-id": file_id})
        content = await response.aread()
        self.check_id(file_id, response)
        self.file_gets[str(response.status_code)] += 1
        if response.status_code >= 500:
            self.report.server_errors += 1
        if response.status_code != 200:
            self.check_error_body(f"{file_id} GET", response.status_code, content)
            self.example(f"url GET {response.status_code}", f"{file_id}: {content[:200]!r}")
            return
        await self.image_ok(file_id, content, expect)

    async def stream(self, label: str, request_id: str, body: dict[str, Any],
                     expect: Expect, t0: float) -> float | None:
        async with self.http.stream("POST", self.base + "/v1/images/generations", json=body,
                                    headers={"x-request-id": request_id}) as response:
            if response.status_code != 200 \
                    or not response.headers.get("content-type", "").startswith(
                        "text/event-stream"):
                return await self.settle(label, "stream", request_id, response, t0, expect)
            self.check_id(request_id, response)
            self.record_status(label, "stream", 200, b"", request_id)
            completed = errored = False
            partials = 0
            event = ""
            data: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    continue
                if not data:
                    event = ""
                    continue
                payload = "\n".join(data)
                data = []
                if event == "image_generation.partial_image":
                    partials += 1
                elif event == "image_generation.completed":
                    completed = True
                    self.latencies[label].append((time.perf_counter() - t0) * 1000)
                    try:
                        image = base64.b64decode(json.loads(payload)["b64_json"])
                    except (ValueError, KeyError, TypeError):
                        self.bad_images["no b64_json"] += 1
                    else:
                        await self.image_ok(request_id, image, expect)
                elif event == "error":
                    errored = True
                    self.report.stream_error_events += 1
                    self.example("stream error event", f"{request_id}: {payload[:200]}")
                    try:
                        document = json.loads(payload)
                    except ValueError:
                        document = None
                    if not is_envelope(document) or document.get("type") != "error":
                        self.report.non_envelope_errors += 1
                        self.example("non_envelope", f"{request_id} stream: {payload[:200]}")
                event = ""
        self.report.partial_images += partials
        self.report.partial_images_requested += expect.partial_images
        if partials > expect.partial_images:
            self.bad_images["too many partials"] += 1
        if completed:
            self.report.streams_completed += 1
        elif not errored:
            self.report.streams_incomplete += 1
            self.example("stream incomplete", f"{request_id}: {partials} partials, no end")
        return None


async def run_soak(url: str, *, clients: int = 50, seconds: float = 600.0, seed: int = 0,
                   pid: int | None = None, images_dir: Path | None = None,
                   edits: bool = False, quality: str = "low", model: str | None = None,
                   resources_every_s: float = 10.0, health_every_s: float = 0.25,
                   backoff_cap_s: float = 1.0, cancel_delay_s: tuple[float, float] = (0.02, 0.5),
                   request_timeout_s: float = 600.0,
                   exit_status: Callable[[], int | None] | None = None) -> SoakReport:
    """The soak run; returns once every client's last request has been answered.

    `exit_status` (a spawned server's `Popen.poll`) tells when the server has gone; with
    only `pid`, /proc does. Then the clients stop and the report says so."""
    require_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS} and seconds 0..{MAX_SECONDS}")
    base = url.rstrip("/")
    local_model = model or await asyncio.to_thread(discover_local_model, base)
    kinds = dict(KIND_WEIGHTS) | ({"edit": EDIT_WEIGHT} if edits else {})
    report = SoakReport(url=base, clients=clients, seconds=seconds, seed=seed,
                        model=local_model or "gpt-image-1 (no local name found)", kinds=kinds)
    started = time.perf_counter()
    finished = asyncio.Event()

    def gone() -> tuple[bool, int | None]:
        if exit_status is not None:
            status = exit_status()
            return status is not None, status
        return (pid is not None and pid_gone(pid)), None

    async def server_watch(soak: Soak) -> None:
        while not finished.is_set():
            exited, status = gone()
            if exited:
                report.server_exited = (round(time.perf_counter() - started, 1), status)
                soak.stop_at = 0.0
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), 0.5)

    async def resources() -> None:
        while True:
            row = (round(time.perf_counter() - started, 1),
                   None if pid is None else _round(memory_mib(pid)),
                   None if pid is None else open_fds(pid),
                   None if images_dir is None else image_files(images_dir))
            if any(value is not None for value in row[1:]):
                report.resources.append(row)
            if finished.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), resources_every_s)

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    prober = context.Process(target=health_probe, args=(base, health_every_s, stop, sender),
                             name="healthz-probe", daemon=True)
    prober.start()
    sender.close()
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    timeout = httpx.Timeout(request_timeout_s, connect=10)
    try:
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            soak = Soak(base, report, http, local_model=local_model, quality=quality,
                        seed=seed, stop_at=started + seconds, backoff_cap_s=backoff_cap_s,
                        cancel_delay_s=cancel_delay_s, kinds=kinds)
            watchers = [asyncio.create_task(resources()),
                        asyncio.create_task(server_watch(soak))]
            await asyncio.gather(*(soak.client(i) for i in range(clients)))
            finished.set()
            await asyncio.gather(*watchers)
    finally:
        stop.set()
        health: list[tuple[float, float, bool]] = []
        if await asyncio.to_thread(receiver.poll, 30):
            health = receiver.recv()
        prober.join(10)
        if prober.is_alive():
            prober.kill()
    report.elapsed_s = round(time.perf_counter() - started, 2)
    report.sent = dict(soak.sent)
    report.answered = {kind: dict(c) for kind, c in soak.statuses.items()}
    report.lost = sum(soak.lost.values())
    report.lost_errors = dict(soak.lost)
    report.unexpected_statuses = dict(soak.unexpected)
    report.bad_images = dict(soak.bad_images)
    report.file_gets = dict(soak.file_gets)
    report.examples = dict(soak.examples)
    report.latency_ms = {
        kind: {"n": len(values), "p50": _percentile(values, 0.50),
               "p99": _percentile(values, 0.99), "max": round(max(values), 1)}
        for kind, values in soak.latencies.items() if values}
    times = [ms for _, ms, _ in health]
    report.health_checks = len(health)
    report.health_failures = sum(1 for *_, ok in health if not ok)
    report.health_p50_ms = _percentile(times, 0.50)
    report.health_p99_ms = _percentile(times, 0.99)
    report.health_max_ms = round(max(times, default=0.0), 1)
    if pid is not None:
        report.peak_rss_mb = _round(memory_mib(pid, "VmHWM"))
    if images_dir is not None:
        report.image_files_left = image_files(images_dir)
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_target_arguments(ap)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="the server's data dir, to count its image files (with --url)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", default="low", help="quality of GPT-model requests")
    ap.add_argument("--model", default=None,
                    help="the local model name (default: found in /v1/models)")
    ap.add_argument("--edits", action="store_true",
                    help="also send multipart POST /v1/images/edits (not served yet: 404)")
    ap.add_argument("--backoff-cap", type=float, default=1.0)
    ap.add_argument("--cancel-min", type=float, default=0.02)
    ap.add_argument("--cancel-max", type=float, default=0.5)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    if args.url is not None:
        require_loopback(args.url)
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS:.0f}")
    process: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="limner-soak-") as tmp:
        try:
            if args.spawn:
                process, url = spawn_server(args.engine, Path(tmp), args.step_s, args.max_queue)
                pid: int | None = process.pid
                data_dir: Path | None = Path(tmp) / "data"
            else:
                url, pid, data_dir = args.url, args.pid, args.data_dir
            report = asyncio.run(run_soak(
                url, clients=args.clients, seconds=args.seconds, seed=args.seed, pid=pid,
                images_dir=None if data_dir is None else data_dir / "images",
                edits=args.edits, quality=args.quality, model=args.model,
                backoff_cap_s=args.backoff_cap,
                cancel_delay_s=(args.cancel_min, args.cancel_max),
                request_timeout_s=args.request_timeout,
                exit_status=None if process is None else process.poll))
        finally:
            if process is not None:
                stop_server(process)
                log = Path(tmp) / "server.log"
                if log.exists() and log.stat().st_size:
                    tail = log.read_text(errors="replace").splitlines()[-20:]
                    print("server log (last lines):\n  " + "\n  ".join(tail))
    print(report.summary())
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    raise SystemExit(main())
