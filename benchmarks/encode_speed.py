"""PNG encoding: zlib's default strategy against the run-length one `imaging.encode` uses.

Usage:
    python benchmarks/encode_speed.py [--reps 5] [IMAGE ...]

Encodes each picture, square-cropped and resized to 512x512 (RGB), at compress_level 4 with
both strategies in turns, and prints the median milliseconds and the bytes of each and their
ratios. Pictures: the embedded model's contact sheet, one of its emoji upscaled to 1024x1024
(RGBA, as served), and any IMAGE given (photographs, say).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def pictures(paths: list[Path]) -> list[tuple[str, Image.Image]]:
    from limner.embedded.upscale import upscale

    def square(image: Image.Image) -> Image.Image:
        w, h = image.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        return image.convert("RGB").crop(box).resize((512, 512), Image.Resampling.LANCZOS)

    with Image.open(ROOT / "docs" / "contact-sheet.png") as sheet:
        out = [("contact sheet, 512x512", square(sheet))]
    with Image.open(ROOT / "src/limner/embedded/assets/refs_twemoji.png") as refs:
        emoji = refs.crop((192, 0, 256, 64)).convert("RGBA")
    out.append(("an emoji upscaled, 1024x1024 RGBA", upscale(emoji, 1024, 1024)))
    for path in paths:
        with Image.open(path) as image:
            out.append((f"{path.name}, 512x512", square(image)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("images", nargs="*", type=Path)
    args = ap.parse_args()
    strategies = (("default", zlib.Z_DEFAULT_STRATEGY), ("run-length", zlib.Z_RLE))
    for name, image in pictures(args.images):
        times: dict[str, list[float]] = {label: [] for label, _ in strategies}
        sizes: dict[str, int] = {}
        for _ in range(args.reps):
            for label, strategy in strategies:
                buffer = io.BytesIO()
                started = time.perf_counter()
                image.save(buffer, format="PNG", compress_level=4, compress_type=strategy)
                times[label].append(time.perf_counter() - started)
                sizes[label] = len(buffer.getvalue())
        ms = {label: statistics.median(values) * 1000 for label, values in times.items()}
        print(f"{name}: default {ms['default']:.1f} ms, {sizes['default'] / 1000:.0f} KB; "
              f"run-length {ms['run-length']:.1f} ms, {sizes['run-length'] / 1000:.0f} KB; "
              f"{ms['default'] / ms['run-length']:.2f}x faster, "
              f"{sizes['run-length'] / sizes['default']:.3f}x the bytes", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
