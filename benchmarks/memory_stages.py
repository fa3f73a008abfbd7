"""Where a limner engine's memory peaks: RSS and its high-water mark at each stage of a load
and of the first draws, the first draw part by part.

Usage:
    python benchmarks/memory_stages.py [--model sd-turbo] [--threads 2] [--draws 2]
        [--options '{"dtype": "bfloat16"}'] [--root /tmp/limner-bench]

The engine (the model's preset, the options laid over it, the weight cache under ROOT/cache)
draws 512x512 images at 1 step. Printed per stage, in MiB, from /proc/self/status: VmHWM
(the peak so far; unlike ru_maxrss, never carried over from a parent process), VmRSS,
RssAnon (the process's own memory) and RssFile (mapped weight files). Run it twice with the
same --root: the first run converts the weights and saves them to the cache, the second
loads them from there, as a server's restart would. Linux only. Building the random
pipeline (the first run) sets a peak of its own before loading: see the "before loading"
line.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from typing import Any

import bench_engine

FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def memory() -> dict[str, int]:
    """This process's memory figures in MiB."""
    with open("/proc/self/status") as status:
        values = dict(line.split(":", 1) for line in status)
    return {field: int(values[field].split()[0]) // 1024 for field in FIELDS}


def stage(name: str, rows: list[dict[str, Any]]) -> None:
    row = {"stage": name, **memory()}
    rows.append(row)
    print(f"{name:<34} " + "  ".join(f"{field} {row[field]:>5}" for field in FIELDS),
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_engine.add_arguments(ap)
    ap.add_argument("--draws", type=int, default=2)
    args = ap.parse_args()

    rows: list[dict[str, Any]] = []
    engine, options = bench_engine.build(args)
    stage("before loading", rows)
    t0 = time.perf_counter()
    engine.load()
    stage(f"loaded ({time.perf_counter() - t0:.1f} s)", rows)
    print(f"  from the cache: {engine.weights_from_cache}; saved: {engine.weights_saved}; "
          f"prepack {engine.prepack}, channels_last {engine.channels_last}, warm-up "
          f"{engine.warmup}", flush=True)

    def after(name: str, call: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            out = call(*a, **k)
            stage(f"  draw {draw + 1}, after the {name}", rows)
            return out
        return wrapper

    for draw in range(args.draws):
        # The first draw reads every weight (and packs it, without a warm-up); the second is
        # steady: those two go part by part.
        parts = bench_engine.wrapped_parts(engine.pipe, after) if draw < 2 else nullcontext()
        t0 = time.perf_counter()
        with parts:
            engine.generate(bench_engine.request(draw))
        stage(f"draw {draw + 1} ({time.perf_counter() - t0:.2f} s)", rows)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "options": options,
                                         "stages": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
