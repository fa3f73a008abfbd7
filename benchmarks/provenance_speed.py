"""What content credentials add to an answer: per format and size, the encode alone, the
C2PA signature on top, and the watermark on top of that, against the embedded model's own
1024x1024 draw, all in one run.

Usage:  python benchmarks/provenance_speed.py [--threads 2] [--repeats 5]

The pictures are the embedded model's (medium quality), encoded as the server encodes them
(`imaging.finish`), signed by the server's own signer (`provenance.signing.Marker`, with a
chain made in a temporary folder) and watermarked (`provenance.watermark`). Each figure is
the median of the repeats, taken in turns.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from limner import imaging
from limner.engines.embedded import EmbeddedEngine
from limner.jobs import GenerationParams
from limner.provenance import credentials, watermark
from limner.provenance.signing import Facts, Marker

FORMATS = ("png", "jpeg", "webp", "gif", "svg")
SIZES = (256, 1024)


def marked(picture: Image.Image) -> Image.Image:
    return watermark.embed(picture, 12345)


def median_s(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = EmbeddedEngine(threads=args.threads)
    engine.load()
    params = GenerationParams(prompt="a red lighthouse", width=1024, height=1024, seeds=(1,),
                              quality="medium")
    engine.generate([params])
    draw_s = median_s(lambda: engine.generate([params]), args.repeats)
    drawn: Image.Image = engine.generate([params])[0][0]
    marker = Marker(credentials.load(None, None, Path(tempfile.mkdtemp()) / "c2pa"), "bench")
    facts = Facts(model="gpt-image-1", engine_model=engine.info.name, endpoint="generations",
                  created="2026-12-07T00:00:00Z")
    background: imaging.Background = "opaque"
    print(f"embedded model, 1024x1024 medium, {args.threads} threads: {draw_s:.3f} s/image")
    print(f"{'format':6s} {'size':>9s} {'encode':>9s} {'+ C2PA':>9s} {'share':>7s} "
          f"{'+ watermark':>12s} {'share':>7s}")
    for size in SIZES:
        for fmt in FORMATS:
            def encoded(mark: bool = False, fmt: str = fmt, size: int = size) -> bytes:
                if fmt == "gif":
                    return imaging.finish_animation([drawn], size, size, background, 200)
                return imaging.finish(drawn, size, size, background, fmt, 100, None,
                                      marked if mark else None)
            blob = encoded()
            encode_s = median_s(encoded, args.repeats)
            sign_s = median_s(lambda blob=blob, fmt=fmt: marker.mark(blob, fmt, facts),
                              args.repeats)
            line = (f"{fmt:6s} {size:>4d}x{size:<4d} {encode_s * 1000:7.1f}ms "
                    f"{sign_s * 1000:7.1f}ms {sign_s / draw_s:6.1%}")
            if fmt in ("png", "jpeg", "webp"):
                mark_s = median_s(lambda: encoded(True), args.repeats) - encode_s
                line += f" {mark_s * 1000:10.1f}ms {mark_s / draw_s:6.1%}"
            print(line)


if __name__ == "__main__":
    main()
