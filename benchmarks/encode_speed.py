"""Lossless encoding settings, in turns: PNG with zlib's default strategy against the
run-length one `imaging.encode` uses, and lossless WebP (`output_compression` 100) at method 2
and quality 60 against the method 0 and quality 25 it uses.

Usage:
    python benchmarks/encode_speed.py [--reps 5] [IMAGE ...]

Encodes each picture with each setting in turns and prints the median milliseconds and the
bytes of each, and their ratios. Pictures: the embedded model's contact sheet, one of its emoji
upscaled to 1024x1024 (RGBA, as served), and any IMAGE given (photographs, say), the sheet and
the IMAGEs square-cropped and resized to 512x512 (RGB).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def pictures(paths: list[Path]) -> list[tuple[str, Image.Image]]:
    from limner.engines.embedded.upscale import upscale

    def square(image: Image.Image) -> Image.Image:
        w, h = image.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        return image.convert("RGB").crop(box).resize((512, 512), Image.Resampling.LANCZOS)

    with Image.open(ROOT / "docs" / "contact-sheet.png") as sheet:
        out = [("contact sheet, 512x512", square(sheet))]
    with Image.open(ROOT / "src/limner/engines/embedded/assets/refs_twemoji.png") as refs:
        emoji = refs.crop((192, 0, 256, 64)).convert("RGBA")
    out.append(("an emoji upscaled, 1024x1024 RGBA", upscale(emoji, 1024, 1024)))
    for path in paths:
        with Image.open(path) as image:
            out.append((f"{path.name}, 512x512", square(image)))
    return out


COMPARISONS: dict[str, tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    "png": (("default", {"format": "PNG", "compress_level": 4,
                         "compress_type": zlib.Z_DEFAULT_STRATEGY}),
            ("run-length", {"format": "PNG", "compress_level": 4,
                            "compress_type": zlib.Z_RLE})),
    "lossless webp": (("method 2", {"format": "WEBP", "lossless": True, "quality": 60,
                                    "method": 2}),
                      ("method 0", {"format": "WEBP", "lossless": True, "quality": 25,
                                    "method": 0})),
}
"""Per format: (the setting before, the one `imaging.encode` uses)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("images", nargs="*", type=Path)
    args = ap.parse_args()
    for name, image in pictures(args.images):
        for kind, settings in COMPARISONS.items():
            times: dict[str, list[float]] = {label: [] for label, _ in settings}
            sizes: dict[str, int] = {}
            for _ in range(args.reps):
                for label, options in settings:
                    buffer = io.BytesIO()
                    started = time.perf_counter()
                    image.save(buffer, **options)
                    times[label].append(time.perf_counter() - started)
                    sizes[label] = len(buffer.getvalue())
            (old, _), (new, _) = settings
            ms = {label: statistics.median(values) * 1000 for label, values in times.items()}
            print(f"{name}, {kind}: {old} {ms[old]:.1f} ms, {sizes[old] / 1000:.0f} KB; "
                  f"{new} {ms[new]:.1f} ms, {sizes[new] / 1000:.0f} KB; "
                  f"{ms[old] / ms[new]:.2f}x faster, {sizes[new] / sizes[old]:.3f}x the bytes",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
