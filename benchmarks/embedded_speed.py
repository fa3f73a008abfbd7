"""Seconds per image of the embedded engine at 256x256 and 1024x1024, per quality.

Usage:  python benchmarks/embedded_speed.py [--threads N] [--repeats 5]

Measures `EmbeddedEngine.generate` end to end (prompt embedding from the cache after the
first call, sampling, un-premultiply, upscale), one request with n=1, median of repeats.
Each setting is timed twice, in turns: with the engine's default guidance interval
(classifier-free guidance only at t > guidance_above) and with guidance at every step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from limner.engines.embedded import EmbeddedEngine
from limner.jobs import GenerationParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=1)
    args = ap.parse_args()
    engine = EmbeddedEngine(threads=args.threads)
    t = time.perf_counter()
    engine.load()
    print(f"cpu_count {os.cpu_count()}, threads {torch.get_num_threads()}, bf16 {engine.bf16}; "
          f"load {time.perf_counter() - t:.2f} s")
    default = engine.guidance_above
    for quality in ("low", "medium", "high"):
        for size in (256, 1024):
            params = GenerationParams(prompt="a slice of pepperoni pizza", width=size,
                                      height=size, seeds=tuple(range(args.n)),
                                      quality=quality)
            engine.generate([params])  # warm-up
            times: dict[float, list[float]] = {default: [], 0.0: []}
            for _ in range(args.repeats):
                for above in times:
                    engine.guidance_above = above
                    t = time.perf_counter()
                    engine.generate([params])
                    times[above].append((time.perf_counter() - t) / args.n)
            engine.guidance_above = default
            fast, every = statistics.median(times[default]), statistics.median(times[0.0])
            print(f"{quality:6s} ({engine.steps[quality]:2d} steps) {size}x{size}: "
                  f"{fast:.3f} s/image (guidance at every step: {every:.3f} s, "
                  f"{every / fast:.2f}x)")


if __name__ == "__main__":
    main()
