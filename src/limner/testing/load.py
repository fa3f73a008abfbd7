"""Load check: N concurrent clients for T seconds against a limner server on this machine.

Run through `benchmarks/load_test.py`; `benchmarks/soak.py` and the tests build on it.

Usage:
    python benchmarks/load_test.py --url http://127.0.0.1:8000 [--pid PID]
    python benchmarks/load_test.py --spawn                      # fake engine, 0.05 s/step
    python benchmarks/load_test.py --spawn --engine embedded    # the shipped model
    options: --clients 50 --seconds 120 --size 1024x1024 --quality low --json report.json

Loopback only and bounded: at most 500 clients and 1800 s. Each client sends
`POST /v1/images/generations` in a loop with its own `x-request-id` (`load-<client>-<seq>`)
and, on 429, waits the `Retry-After` it was given (capped at `--backoff-cap` s). Reported:
requests sent, answered by status, lost (sent, never answered: must be 0), duplicated (an
answer whose request id was already answered, or is not the one sent), 429s without
Retry-After, p50/p99 latency of 200s, the server's RSS every 10 s (from /proc, with `--pid`
or `--spawn`), and the maximum `/healthz` latency, polled every 0.5 s throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

MAX_CLIENTS = 500
MAX_SECONDS = 1800.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadReport:
    url: str
    clients: int
    seconds: float
    sent: int = 0
    answered: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_errors: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    throttled_without_retry_after: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, resident MiB) every `rss_every_s`, start and end included."""
    health_checks: int = 0
    health_failures: int = 0
    health_max_ms: float = 0.0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        rss = ", ".join(f"{t:.0f}s={mb:.0f}MiB" for t, mb in self.rss_mb) or "n/a"
        return (f"{self.clients} clients x {self.elapsed_s:.1f}s against {self.url}\n"
                f"  sent {self.sent}; answered {dict(sorted(self.answered.items()))}; "
                f"lost {self.lost} {self.lost_errors or ''}; duplicated {self.duplicated}; "
                f"429 without Retry-After {self.throttled_without_retry_after}\n"
                f"  latency of 200s: p50 {self.p50_ms} ms, p99 {self.p99_ms} ms\n"
                f"  /healthz: {self.health_checks} checks, {self.health_failures} failed, "
                f"max {self.health_max_ms:.1f} ms\n"
                f"  server RSS: {rss}")


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load-test {host!r}: loopback addresses only")


def memory_mib(pid: int | str, field: str = "VmRSS") -> float | None:
    """A memory line of /proc/PID/status in MiB: VmRSS (now), VmHWM (peak); PID may be
    "self"."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 1)


async def run_load(url: str, *, clients: int = 50, seconds: float = 120.0,
                   body: dict[str, Any] | None = None, pid: int | None = None,
                   rss_every_s: float = 10.0, health_every_s: float = 0.5,
                   backoff_cap_s: float = 1.0, request_timeout_s: float = 600.0) -> LoadReport:
    """The load run itself; returns once every client's last request has been answered."""
    require_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS} and seconds 0..{MAX_SECONDS}")
    base = url.rstrip("/")
    body = body or {"prompt": "a small otter, load test", "model": "gpt-image-1",
                    "quality": "low", "size": "1024x1024", "output_format": "jpeg"}
    report = LoadReport(url=base, clients=clients, seconds=seconds)
    statuses: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    answered_ids: set[str] = set()
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    finished = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        seq = 0
        while time.perf_counter() < stop_at:
            request_id = f"load-{index}-{seq}"
            seq += 1
            report.sent += 1
            t0 = time.perf_counter()
            try:
                response = await http.post(base + "/v1/images/generations", json=body,
                                           headers={"x-request-id": request_id})
                await response.aread()
            except httpx.HTTPError as exc:
                lost[type(exc).__name__] += 1
                continue
            elapsed_ms = (time.perf_counter() - t0) * 1000
            statuses[str(response.status_code)] += 1
            echoed = response.headers.get("x-request-id")
            if echoed != request_id or echoed in answered_ids:
                report.duplicated += 1
            answered_ids.add(request_id)
            if response.status_code == 200:
                latencies.append(elapsed_ms)
            elif response.status_code == 429:
                retry_after = response.headers.get("retry-after", "")
                if not retry_after.isdigit():
                    report.throttled_without_retry_after += 1
                    retry_after = "1"
                await asyncio.sleep(min(float(retry_after), backoff_cap_s))

    health_done = threading.Event()

    def health() -> None:
        """Its own thread and client: probed from the load's event loop, /healthz would wait
        behind the clients' reads and measure this process, not the server."""
        for _, elapsed_ms, ok in poll_health(base, health_every_s, health_done):
            report.health_checks += 1
            report.health_failures += 0 if ok else 1
            report.health_max_ms = max(report.health_max_ms, elapsed_ms)

    async def memory() -> None:
        if pid is None:
            return
        while True:
            value = memory_mib(pid)
            if value is not None:
                report.rss_mb.append((round(time.perf_counter() - started, 1), round(value, 1)))
            if finished.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished.wait(), rss_every_s)

    timeout = httpx.Timeout(request_timeout_s, connect=10)
    prober = threading.Thread(target=health, name="healthz-probe", daemon=True)
    prober.start()
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        watcher = asyncio.create_task(memory())
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        finished.set()
        health_done.set()
        await watcher
    await asyncio.to_thread(prober.join)
    report.elapsed_s = round(time.perf_counter() - started, 2)
    report.answered = dict(statuses)
    report.lost = sum(lost.values())
    report.lost_errors = dict(lost)
    report.p50_ms = _percentile(latencies, 0.50)
    report.p99_ms = _percentile(latencies, 0.99)
    return report


class Stop(Protocol):
    """What `threading.Event` and `multiprocessing.Event` both offer."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def poll_health(base: str, every_s: float, stop: Stop) -> Iterator[tuple[float, float, bool]]:
    """GET /healthz every `every_s` s until `stop` is set: (seconds since start, ms, ok)."""
    started = time.perf_counter()
    with httpx.Client(timeout=5) as probe:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = probe.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - t0
            yield round(t0 - started, 2), round(elapsed * 1000, 2), ok
            stop.wait(max(0.0, every_s - elapsed))


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a minute for the graceful shutdown, then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_server(engine: str, workdir: Path, step_s: float, max_queue: int
                 ) -> tuple[subprocess.Popen[bytes], str]:
    lines = [f"max_queue = {max_queue}"]
    if engine == "fake":
        lines = ['default_engine = "fake"', *lines, "", "[engines.fake]", 'kind = "fake"',
                 f"step_s = {step_s}"]
    return launch_server("\n".join(lines) + "\n", workdir)


def launch_server(config: str, workdir: Path, args: tuple[str, ...] = (),
                  env: dict[str, str] | None = None, timeout_s: float = 300.0
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`limner serve` on a free loopback port with `config` as its TOML; waits for /healthz."""
    port = _free_port()
    (workdir / "limner.toml").write_text(config)
    environ = {**os.environ, "LIMNER_DATA_DIR": str(workdir / "data"), **(env or {})}
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "limner", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(workdir / "limner.toml"), "--log-level", "warning", *args],
        env=environ, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: see {workdir / 'server.log'}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the spawned server did not become healthy in {timeout_s:.0f} s")


def add_target_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every load check shares: a running server, or one to spawn."""
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--spawn", action="store_true", help="start a server for the run")
    ap.add_argument("--engine", choices=["fake", "embedded"], default="fake",
                    help="with --spawn: the engine (default fake)")
    ap.add_argument("--step-s", type=float, default=0.05, help="fake engine seconds per step")
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--pid", type=int, default=None, help="server pid, for RSS (with --url)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_target_arguments(ap)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--size", default="1024x1024")
    ap.add_argument("--quality", default="low")
    ap.add_argument("--model", default="gpt-image-1")
    ap.add_argument("--backoff-cap", type=float, default=1.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    body = {"prompt": "a small otter, load test", "model": args.model,
            "quality": args.quality, "size": args.size, "output_format": "jpeg"}
    process: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="limner-load-") as tmp:
        try:
            if args.spawn:
                process, url = spawn_server(args.engine, Path(tmp), args.step_s, args.max_queue)
                pid: int | None = process.pid
            else:
                url, pid = args.url, args.pid
            report = asyncio.run(run_load(url, clients=args.clients, seconds=args.seconds,
                                          body=body, pid=pid, backoff_cap_s=args.backoff_cap))
        finally:
            if process is not None:
                stop_server(process)
    print(report.summary())
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    bad = set(report.answered) - {"200", "429"}
    ok = report.lost == 0 and report.duplicated == 0 and not bad \
        and report.throttled_without_retry_after == 0 and report.health_failures == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
