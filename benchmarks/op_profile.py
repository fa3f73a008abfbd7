"""Which operators one image's time goes to: torch.profiler over a limner engine's draw.

Usage:
    python benchmarks/op_profile.py [--model sd-turbo] [--threads 2] [--rows 25]
        [--options '{"dtype": "bfloat16"}'] [--root /tmp/limner-bench]

The engine (the model's preset, the options laid over it, the weight cache under ROOT/cache)
draws two 512x512 images at 1 step to warm up, then one under the profiler. Printed: the
operators by their own CPU time (children excluded), with call counts and shares of the
image, and each part's share (text encoder, UNet, decoder). Eager torch only: compiled and
OpenVINO graphs hide their operators.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import bench_engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_engine.add_arguments(ap)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    engine, options = bench_engine.build(args)
    engine.load()
    takes = iter(range(1_000_000))

    def draw() -> None:
        engine.generate(bench_engine.request(next(takes)))

    for _ in range(2):
        draw()
    def labelled(name: str, call: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            with record_function(f"## {name}"):
                return call(*a, **k)
        return wrapper

    t0 = time.perf_counter()
    with bench_engine.wrapped_parts(engine.pipe, labelled), \
            profile(activities=[ProfilerActivity.CPU]) as prof:
        draw()
    seconds = time.perf_counter() - t0

    events = prof.key_averages()
    total_us = seconds * 1e6
    print(f"{args.model}, {engine.dtype}, prepack {engine.prepack}, channels_last "
          f"{engine.channels_last}, {args.threads} threads: {seconds:.3f} s under the "
          f"profiler (torch {torch.__version__})")
    for event in events:
        if event.key.startswith("## "):
            print(f"  {event.key[3:]:<14} {event.cpu_time_total / 1e3:9.1f} ms "
                  f"{event.cpu_time_total / total_us:6.1%}")
    rows = sorted((e for e in events if not e.key.startswith("## ")),
                  key=lambda e: e.self_cpu_time_total, reverse=True)[:args.rows]
    print(f"  {'operator (own time)':<52} {'calls':>6} {'ms':>9} {'share':>6}")
    table = []
    for event in rows:
        share = event.self_cpu_time_total / total_us
        print(f"  {event.key[:52]:<52} {event.count:>6} "
              f"{event.self_cpu_time_total / 1e3:9.1f} {share:6.1%}")
        table.append({"op": event.key, "calls": event.count,
                      "self_ms": event.self_cpu_time_total / 1e3})
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "options": options,
                                         "seconds": seconds, "ops": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
