"""limner on Ray Serve: replicas' throughput, Ray's latency per request, a load with a kill.

Usage:
    python benchmarks/ray_serve.py                         # every part, ~7 minutes
    python benchmarks/ray_serve.py --seconds 5 --rounds 1 --requests 10 --duration 20
    options: --parts engine,throughput,latency,load --clients 16 --load-clients 50 --json F

One local Ray instance in this process (`--ray-cpus`, default 2; no dashboard), as
tests/test_ray.py starts it, serving the application `limner serve --ray` serves
(`limner.ray.deployments.build_app`). Loopback only. The parts, in this order:

- `engine`: the bare embedded model, no Ray and no HTTP: 1 process, then 2 processes at
  once, 1 thread each, drawing batches of 8 256x256 images at quality low for
  `--engine-seconds` s, in turns (`--rounds`): what 1 and 2 replicas could reach if nothing
  else ran, and so the machine's own ceiling for the ratio.
- `throughput`: the embedded model (`limner-emoji`, `threads = 1`: one thread per replica)
  on 1 and on 2 replicas, in turns (`--rounds` of each, the deployment rescaled in place),
  under `--clients` (16) client threads sending `POST /v1/images/generations` (256x256,
  quality low, b64_json) in a loop for `--warmup` s unmeasured, then `--seconds` s measured:
  images/s and the ratio 2/1 (target >= 1.6). During each measured window it reads the CPU
  time of every process of this Ray instance (this process's descendants, from /proc) and
  of the whole machine, in cores: what the replicas, Ray's proxy and ingress, the rest of
  Ray, this process (the clients) and everything else on the machine used.
- `latency`: the fake engine (no step time, so the engine costs ~nothing) behind plain
  `limner serve` (a subprocess) and behind Ray (1 replica), `--requests` sequential
  requests from one client to each, in turns: median and p90 of each and the difference
  (target <= 15 ms).
- `load`: `--load-clients` (50) client threads for `--duration` s (120) through Ray against
  2 replicas of the fake engine (`step_s` 0.02, quality low: 2 steps), one replica's process
  SIGKILLed halfway. Every request must be answered 200, or 429/503 with `Retry-After`; a
  request with no answer in 60 s (the client's timeout) is counted as hung. Also: when
  `/healthz` saw the replica gone and back.

Exit status 1 if a request hung, got another status, lost its connection, or was refused
without `Retry-After`.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from limner.config import EMBEDDED_ENGINE, EngineConfig, Settings
from limner.testing.load import _free_port, _percentile, launch_server, stop_server

SECRET = "a-benchmark-signing-secret-of-32-bytes"
HUNG_S = 60.0
"""A request with no answer in this long is counted as hung."""
PLAIN_CONFIG = 'default_engine = "fake"\n\n[engines.fake]\nkind = "fake"\n'
CLK_TCK = os.sysconf("SC_CLK_TCK")


def body(model: str, prompt: str = "a red fox in the snow") -> dict[str, Any]:
    return {"prompt": prompt, "model": model, "size": "256x256", "quality": "low",
            "response_format": "b64_json"}


# CPU accounting ---------------------------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, float, bytes]]:
    """pid -> (parent pid, CPU seconds used, command line), for every process visible."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]),
                                  (int(fields[11]) + int(fields[12])) / CLK_TCK, command)
    return table


def _descendants(table: dict[int, tuple[int, float, bytes]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


ROLES = ("replicas", "proxy", "ingress", "rest of Ray", "limner serve", "clients")
"""Where the CPU time goes: the model replicas, Ray's HTTP proxy, the ingress (limner's API),
the rest of this Ray instance (gcs, raylet, controller...), plain `limner serve` (a
subprocess), this process (the clients)."""


def _role(pid: int, command: bytes) -> str:
    if pid == os.getpid():
        return "clients"
    if command.startswith(b"ray::ServeReplica:limner:model-"):
        return "replicas"
    if command.startswith(b"ray::ServeReplica:limner:ingress"):
        return "ingress"
    if command.startswith(b"ray::ProxyActor"):
        return "proxy"
    if b"\0limner\0serve\0" in command:
        return "limner serve"
    return "rest of Ray"


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuWindow:
    """CPU time of this Ray instance's processes, by role, and of the machine, between
    `start()` and `stop()`, in cores (CPU seconds per second)."""

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._machine0 = _machine_busy()
        self._before = self._ours()

    def _ours(self) -> dict[int, tuple[float, str]]:
        table = _proc_table()
        pids = _descendants(table, os.getpid()) | {os.getpid()}
        return {pid: (table[pid][1], _role(pid, table[pid][2])) for pid in pids if pid in table}

    def stop(self) -> dict[str, float]:
        after = self._ours()
        machine = _machine_busy() - self._machine0
        elapsed = time.perf_counter() - self._t0
        roles: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        for pid, (cpu, role) in after.items():
            roles[role] += cpu - self._before.get(pid, (0.0, role))[0]
        cores = {role: round(roles[role] / elapsed, 2) for role in ROLES}
        cores["other"] = round(max(0.0, machine - sum(roles.values())) / elapsed, 2)
        """Everything else on the machine (other users' processes)."""
        cores["machine"] = round(machine / elapsed, 2)
        return cores


# Ray ----------------------------------------------------------------------------------------

def _replica_pids(deployment: str) -> list[int]:
    """This Ray instance's replica processes of `deployment` (`ray::ServeReplica:app:name`):
    only this process's descendants, so another Ray on the machine is never touched."""
    table = _proc_table()
    return sorted(pid for pid in _descendants(table, os.getpid())
                  if pid in table and table[pid][2].startswith(b"ray::ServeReplica:")
                  and deployment.encode() in table[pid][2])


def _replicas_up(base: str, model: str) -> int | None:
    try:
        replicas = httpx.get(base + "/healthz", timeout=5).json().get("replicas") or {}
    except (httpx.HTTPError, ValueError):
        return None
    value = replicas.get(model)
    return value if isinstance(value, int) else None


def deploy(settings: Settings, replicas: int, base: str, model: str,
           timeout_s: float = 300.0) -> float:
    """Runs (or rescales) the application; returns once `/healthz` counts `replicas` up."""
    from ray import serve

    from limner.ray.deployments import APP_NAME, build_app

    t0 = time.perf_counter()
    serve.run(build_app(settings, replicas=replicas), name=APP_NAME, route_prefix="/")
    while _replicas_up(base, model) != replicas:
        if time.perf_counter() - t0 > timeout_s:
            raise SystemExit(f"{replicas} replicas of {model} did not come up")
        time.sleep(0.25)
    return time.perf_counter() - t0


def ray_settings(port: int, data_dir: Path, engine: EngineConfig) -> Settings:
    return Settings(port=port, data_dir=data_dir, signing_secret=SECRET,
                    default_engine=engine.name, engines=(engine,))


# Clients ------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What a crowd of client threads got."""

    statuses: Counter[int] = field(default_factory=Counter)
    refused_without_retry_after: int = 0
    hung: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    completions: list[float] = field(default_factory=list)
    """perf_counter() at each 200."""
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def crowd(url: str, payload: Callable[[int, int], dict[str, Any]], clients: int,
          seconds: float, tally: Tally, *, backoff_cap_s: float = 1.0,
          midway: Callable[[], None] | None = None) -> None:
    """`clients` threads, each with its own connection, posting in a loop for `seconds`;
    `midway` is called once, halfway, from this thread."""
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        seq = 0
        with httpx.Client(timeout=httpx.Timeout(HUNG_S, connect=10)) as http:
            while time.perf_counter() < stop_at:
                seq += 1
                t0 = time.perf_counter()
                try:
                    response = http.post(url + "/v1/images/generations",
                                         json=payload(index, seq),
                                         headers={"x-request-id": f"bench-{index}-{seq}"})
                except httpx.TimeoutException:
                    with tally.lock:
                        tally.hung += 1
                    continue
                except httpx.HTTPError as exc:
                    with tally.lock:
                        tally.errors[type(exc).__name__] += 1
                    time.sleep(0.1)
                    continue
                done = time.perf_counter()
                retry_after = response.headers.get("retry-after", "")
                with tally.lock:
                    tally.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        tally.completions.append(done)
                        tally.latencies_ms.append((done - t0) * 1000)
                    elif response.status_code in (429, 503) and not retry_after.isdigit():
                        tally.refused_without_retry_after += 1
                if response.status_code in (429, 503):
                    time.sleep(min(float(retry_after or 1), backoff_cap_s))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    if midway is not None:
        time.sleep(seconds / 2)
        midway()
    for thread in threads:
        thread.join()


# Parts --------------------------------------------------------------------------------------

def _engine_worker(batch: int, seconds: float, barrier: Any, results: Any) -> None:
    """One process: the embedded model, 1 thread, drawing batches for `seconds`."""
    from limner.engines.embedded import EmbeddedEngine
    from limner.jobs import GenerationParams

    engine = EmbeddedEngine(threads=1)
    engine.load()
    def batch_of(k: int) -> list[GenerationParams]:
        """Each image a prompt of its own, as the clients send (none from the engine's
        prompt cache)."""
        return [GenerationParams(prompt=f"a red fox {k}-{i}", width=256, height=256,
                                 seeds=(i,), quality="low") for i in range(batch)]

    engine.generate(batch_of(-1))  # warm-up
    barrier.wait()
    t0, images = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        engine.generate(batch_of(images))
        images += batch
    results.put(images / (time.perf_counter() - t0))
    engine.close()


def engine_alone(args: argparse.Namespace, batch: int = 8) -> dict[str, Any]:
    """The ceiling without Ray or HTTP: 1 and 2 processes of the bare engine, 1 thread each,
    in turns, `--engine-seconds` each."""
    context = multiprocessing.get_context("spawn")
    runs = []
    for round_ in range(args.rounds):
        for processes in (1, 2):
            barrier, results = context.Barrier(processes + 1), context.Queue()
            workers = [context.Process(target=_engine_worker,
                                       args=(batch, args.engine_seconds, barrier, results))
                       for _ in range(processes)]
            for worker in workers:
                worker.start()
            barrier.wait()
            window = CpuWindow()
            window.start()
            rates = [results.get(timeout=args.engine_seconds + 120) for _ in workers]
            cores = window.stop()
            for worker in workers:
                worker.join()
            runs.append({"round": round_ + 1, "processes": processes,
                         "images_per_s": round(sum(rates), 2), "other_cores": cores["other"]})
            print(f"  engine alone, round {round_ + 1}, {processes} process(es): "
                  f"{sum(rates):.2f} images/s (other processes on the machine: "
                  f"{cores['other']:.2f} cores)", flush=True)
    one = statistics.mean(r["images_per_s"] for r in runs if r["processes"] == 1)
    two = statistics.mean(r["images_per_s"] for r in runs if r["processes"] == 2)
    return {"batch": batch, "seconds": args.engine_seconds, "runs": runs,
            "images_per_s": {"1": round(one, 2), "2": round(two, 2)},
            "ratio": round(two / one, 2)}


def measured_crowd(base: str, clients: int, warmup_s: float, seconds: float
                   ) -> tuple[Tally, int, float, dict[str, float]]:
    """The embedded model's crowd: (tally, images answered in the measured window, its
    length, cores used in it)."""
    tally, window = Tally(), CpuWindow()
    measured: dict[str, Any] = {}

    def mark_window() -> None:
        time.sleep(warmup_s)
        measured["start"] = time.perf_counter()
        window.start()
        time.sleep(seconds)
        measured["end"] = time.perf_counter()
        measured["cores"] = window.stop()

    marker = threading.Thread(target=mark_window)
    marker.start()
    crowd(base, lambda i, s: body(EMBEDDED_ENGINE, f"a red fox {i}-{s}"), clients,
          warmup_s + seconds, tally)
    marker.join()
    start, end = measured["start"], measured["end"]
    images = sum(1 for t in tally.completions if start <= t <= end)
    return tally, images, end - start, measured["cores"]


PLAIN_EMBEDDED = f'[engines."{EMBEDDED_ENGINE}"]\nkind = "embedded"\nthreads = 1\n'
VARIANTS = {0: "limner serve", 1: "Ray, 1 replica", 2: "Ray, 2 replicas"}
"""The throughput part's servers, by replica count (0: plain `limner serve`, no Ray)."""


def throughput(args: argparse.Namespace, base: str, data_dir: Path,
               workdir: Path) -> dict[str, Any]:
    engine = EngineConfig(EMBEDDED_ENGINE, "embedded", options={"threads": 1})
    settings = ray_settings(int(base.rsplit(":", 1)[1]), data_dir, engine)
    runs: list[dict[str, Any]] = []
    (workdir / "plain").mkdir()
    process, plain = launch_server(PLAIN_EMBEDDED, workdir / "plain")
    try:
        for round_ in range(args.rounds):
            for replicas in VARIANTS:  # in turns
                took = 0.0 if replicas == 0 else deploy(settings, replicas, base,
                                                        EMBEDDED_ENGINE)
                tally, images, elapsed, cores = measured_crowd(
                    plain if replicas == 0 else base, args.clients, args.warmup, args.seconds)
                runs.append({"round": round_ + 1, "replicas": replicas,
                             "deploy_s": round(took, 1), "images": images,
                             "images_per_s": round(images / elapsed, 2),
                             "p50_ms": _percentile(tally.latencies_ms, 0.5), "cores": cores,
                             "statuses": dict(tally.statuses), "hung": tally.hung,
                             "errors": dict(tally.errors)})
                print(f"  round {round_ + 1}, {VARIANTS[replicas]}: "
                      f"{runs[-1]['images_per_s']:.2f} images/s, cores {cores}", flush=True)
    finally:
        stop_server(process)
    per = {n: statistics.mean(r["images_per_s"] for r in runs if r["replicas"] == n)
           for n in VARIANTS}
    return {"clients": args.clients, "seconds": args.seconds, "runs": runs,
            "images_per_s": {str(n): round(v, 2) for n, v in per.items()},
            "ratio": round(per[2] / per[1], 2) if per[1] else None,
            "one_replica_to_plain": round(per[1] / per[0], 2) if per[0] else None}


def latency(args: argparse.Namespace, base: str, data_dir: Path,
            workdir: Path) -> dict[str, Any]:
    engine = EngineConfig("fake", "fake")
    deploy(ray_settings(int(base.rsplit(":", 1)[1]), data_dir, engine), 1, base, "fake")
    process, plain = launch_server(PLAIN_CONFIG, workdir)
    try:
        targets = {"plain": plain, "ray": base}
        times: dict[str, list[float]] = {"plain": [], "ray": []}
        with httpx.Client(timeout=HUNG_S) as http:
            for i in range(args.warmup_requests + args.requests):
                for name, url in targets.items():  # in turns
                    t0 = time.perf_counter()
                    response = http.post(url + "/v1/images/generations",
                                         json=body("fake", f"a red fox {i}"))
                    elapsed = (time.perf_counter() - t0) * 1000
                    if response.status_code != 200:
                        raise SystemExit(f"{name}: {response.status_code} {response.text}")
                    if i >= args.warmup_requests:
                        times[name].append(elapsed)
    finally:
        stop_server(process)
    figures = {name: {"median_ms": round(statistics.median(v), 1),
                      "p90_ms": _percentile(v, 0.9) or 0.0, "min_ms": round(min(v), 1)}
               for name, v in times.items()}
    return {"requests": args.requests, **figures,
            "added_median_ms": round(figures["ray"]["median_ms"]
                                     - figures["plain"]["median_ms"], 1),
            "added_p90_ms": round(figures["ray"]["p90_ms"] - figures["plain"]["p90_ms"], 1)}


def load(args: argparse.Namespace, base: str, data_dir: Path) -> dict[str, Any]:
    engine = EngineConfig("fake", "fake", options={"step_s": 0.02})
    deploy(ray_settings(int(base.rsplit(":", 1)[1]), data_dir, engine), 2, base, "fake")
    tally = Tally()
    events: dict[str, Any] = {}
    started = time.perf_counter()
    watching = threading.Event()

    def watch() -> None:
        """`/healthz` every 0.5 s: when the replica was seen gone, and back."""
        while not watching.is_set():
            up = _replicas_up(base, "fake")
            now = round(time.perf_counter() - started, 1)
            if "killed_at_s" in events:
                if up is not None and up < 2 and "seen_gone_at_s" not in events:
                    events["seen_gone_at_s"] = now
                if up == 2 and "seen_gone_at_s" in events and "back_at_s" not in events:
                    events["back_at_s"] = now
            watching.wait(0.5)

    def kill() -> None:
        pids = _replica_pids("model-fake")
        events["replica_pids"] = pids
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            events["killed_pid"] = pids[0]
        events["killed_at_s"] = round(time.perf_counter() - started, 1)
        with tally.lock:
            events["answered_before_kill"] = sum(tally.statuses.values())
        print(f"  killed replica process {pids[:1]} of {pids} at "
              f"{events['killed_at_s']} s", flush=True)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    crowd(base, lambda i, s: body("fake", f"a red fox {i}-{s}"), args.load_clients,
          args.duration, tally, midway=kill)
    events["clients_done_at_s"] = round(time.perf_counter() - started, 1)
    deadline = time.perf_counter() + 60
    while "back_at_s" not in events and time.perf_counter() < deadline:
        time.sleep(0.5)
    watching.set()
    watcher.join()
    answered = sum(tally.statuses.values())
    return {"clients": args.load_clients, "duration_s": args.duration,
            "sent": answered + tally.hung + sum(tally.errors.values()),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "refused_without_retry_after": tally.refused_without_retry_after,
            "hung": tally.hung, "errors": dict(tally.errors),
            "p50_ms": _percentile(tally.latencies_ms, 0.5),
            "p99_ms": _percentile(tally.latencies_ms, 0.99),
            "max_ms": round(max(tally.latencies_ms), 1) if tally.latencies_ms else None,
            **events}


# Report -------------------------------------------------------------------------------------

def report(results: dict[str, Any]) -> list[str]:
    """Prints the tables; returns what is wrong."""
    print()
    if "engine" in results:
        e = results["engine"]
        print(f"embedded model alone (no Ray, no HTTP), 1 thread per process, batches of "
              f"{e['batch']} 256x256 images at quality low, {e['seconds']:.0f} s per run, "
              f"in turns")
        print("| round | processes | images/s | cores used by other processes |")
        print("|---|---|---|---|")
        for r in e["runs"]:
            print(f"| {r['round']} | {r['processes']} | {r['images_per_s']:.2f} | "
                  f"{r['other_cores']:.2f} |")
        print(f"images/s: 1 process {e['images_per_s']['1']:.2f}, 2 processes "
              f"{e['images_per_s']['2']:.2f}; ratio 2/1 = {e['ratio']}x (the machine's own "
              f"ceiling for 2 replicas)")
    if "throughput" in results:
        t = results["throughput"]
        print(f"\nthroughput, embedded model, 1 thread per replica, {t['clients']} clients, "
              f"{t['seconds']:.0f} s per run, in turns")
        columns = (*ROLES, "other", "machine")
        print("| round | server | images/s | p50 ms | "
              + " | ".join(f"cores: {c}" for c in columns) + " |")
        print("|---" * (4 + len(columns)) + "|")
        for r in t["runs"]:
            print(f"| {r['round']} | {VARIANTS[r['replicas']]} | {r['images_per_s']:.2f} | "
                  f"{r['p50_ms']} | " + " | ".join(f"{r['cores'][c]:.2f}" for c in columns)
                  + " |")
        print("(cores: CPU seconds per second during the measured window; other: processes "
              "outside this benchmark)")
        for n, label in VARIANTS.items():
            runs = [r for r in t["runs"] if r["replicas"] == n and r["images_per_s"]]
            per_image = {c: statistics.mean(r["cores"][c] * 1000 / r["images_per_s"]
                                            for r in runs) for c in ROLES}
            print(f"CPU ms per image, {label}: " + ", ".join(
                f"{c} {v:.1f}" for c, v in per_image.items() if v >= 0.05)
                + f"; all {sum(per_image.values()):.1f}")
        ips = t["images_per_s"]
        print(f"images/s: limner serve {ips['0']:.2f}, Ray 1 replica {ips['1']:.2f}, Ray 2 "
              f"replicas {ips['2']:.2f}; ratio 2/1 replicas = {t['ratio']}x (target >= 1.6x); "
              f"1 replica / limner serve = {t['one_replica_to_plain']}x")
        if "engine" in results:
            e = results["engine"]["images_per_s"]
            print(f"against the bare engine: limner serve {ips['0'] / e['1']:.2f}x and 1 "
                  f"replica {ips['1'] / e['1']:.2f}x of 1 process, 2 replicas "
                  f"{ips['2'] / e['2']:.2f}x of 2 processes")
    if "latency" in results:
        lat = results["latency"]
        print(f"\nlatency, fake engine, {lat['requests']} sequential requests each, in turns")
        print("| server | median ms | p90 ms | min ms |")
        print("|---|---|---|---|")
        for name, label in (("plain", "limner serve"), ("ray", "limner on Ray, 1 replica")):
            f = lat[name]
            print(f"| {label} | {f['median_ms']} | {f['p90_ms']} | {f['min_ms']} |")
        print(f"Ray adds {lat['added_median_ms']} ms at the median, {lat['added_p90_ms']} ms "
              f"at p90 (target <= 15 ms); ratio of medians "
              f"{lat['ray']['median_ms'] / lat['plain']['median_ms']:.2f}x")
    others = [r["other_cores"] for r in results.get("engine", {}).get("runs", [])] + [
        r["cores"]["other"] for r in results.get("throughput", {}).get("runs", [])]
    if others and max(others) > 0.1:
        print(f"\nNOTE: processes outside this benchmark used up to {max(others):.2f} cores "
              "during the measured windows: the throughput figures are disturbed")
    problems = []
    if "load" in results:
        ld = results["load"]
        print(f"\nload, fake engine (step_s 0.02), 2 replicas, {ld['clients']} clients for "
              f"{ld['duration_s']:.0f} s, replica process {ld.get('killed_pid')} SIGKILLed at "
              f"{ld.get('killed_at_s')} s")
        print(f"sent {ld['sent']}; answered by status {ld['statuses']}; "
              f"429/503 without Retry-After {ld['refused_without_retry_after']}; "
              f"hung (no answer in {HUNG_S:.0f} s) {ld['hung']}; "
              f"connection errors {ld['errors'] or 0}")
        print(f"latency of 200s: p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms, max "
              f"{ld['max_ms']} ms; /healthz saw the replica gone at {ld.get('seen_gone_at_s')} s"
              f" and both back at {ld.get('back_at_s')} s")
        other = {k: v for k, v in ld["statuses"].items() if k not in ("200", "429", "503")}
        if ld["hung"]:
            problems.append(f"{ld['hung']} requests hung")
        if other:
            problems.append(f"unexpected statuses {other}")
        if ld["errors"]:
            problems.append(f"connection errors {ld['errors']}")
        if ld["refused_without_retry_after"]:
            problems.append(f"{ld['refused_without_retry_after']} refusals without Retry-After")
        if "killed_pid" not in ld:
            problems.append("no replica process was found to kill")
        if "back_at_s" not in ld:
            problems.append("the killed replica did not come back within 60 s")
    print("\n" + ("PROBLEMS: " + "; ".join(problems) if problems else "no request hung, "
                  "every answer was 200 or a refusal with Retry-After"))
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--parts", default="engine,throughput,latency,load")
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--engine-seconds", type=float, default=10.0,
                    help="engine: seconds per run of the bare engine")
    ap.add_argument("--clients", type=int, default=16, help="throughput: client threads")
    ap.add_argument("--seconds", type=float, default=30.0, help="throughput: measured s")
    ap.add_argument("--warmup", type=float, default=5.0, help="throughput: unmeasured s first")
    ap.add_argument("--rounds", type=int, default=2, help="throughput: runs of 1 and 2")
    ap.add_argument("--requests", type=int, default=30, help="latency: requests per server")
    ap.add_argument("--warmup-requests", type=int, default=5)
    ap.add_argument("--load-clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=120.0, help="load: seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if not 1 <= args.load_clients <= 500 or not 0 < args.duration <= 1800:
        ap.error("--load-clients must be 1..500 and --duration 0..1800")
    started = time.perf_counter()
    print(f"ray_serve.py {' '.join(sys.argv[1:])}\ncommit {_commit()}; {_cpu()}; "
          f"cpu_count {os.cpu_count()}", flush=True)
    results: dict[str, Any] = {"argv": sys.argv[1:], "commit": _commit(), "cpu": _cpu()}
    if "engine" in parts:
        results["engine"] = engine_alone(args)
    if parts & {"throughput", "latency", "load"}:
        import ray
        from ray import serve

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            with tempfile.TemporaryDirectory(prefix="limner-ray-bench-") as tmp:
                workdir = Path(tmp)
                if "throughput" in parts:
                    results["throughput"] = throughput(args, base, workdir / "ray-data",
                                                       workdir)
                if "latency" in parts:
                    results["latency"] = latency(args, base, workdir / "ray-data", workdir)
                if "load" in parts:
                    results["load"] = load(args, base, workdir / "ray-data")
        finally:
            with suppress(Exception):
                serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
    problems = report(results)
    results["problems"] = problems
    print(f"whole run {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if problems else 0


def _commit() -> str:
    with suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    return "unknown"


def _cpu() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown cpu"


if __name__ == "__main__":
    raise SystemExit(main())
