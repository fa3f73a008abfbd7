"""The embedded model's upscaling: looked up per pair of levels, the bytes the float math gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import limner.engines.embedded
from limner.engines.embedded.upscale import (
    _sharpen_alpha,
    on_canvas,
    resample,
    to_straight_rgba,
    upscale,
)

ASSETS = Path(limner.engines.embedded.__file__).parent / "assets"
SIZES = [(1024, 1024), (512, 512), (256, 256), (96, 96), (64, 64), (1536, 1024), (1024, 1792)]


def upscale_per_pixel(image: Image.Image, width: int, height: int) -> Image.Image:
    """The upscaling with its alpha and colour arithmetic per pixel in float32, as it was
    before the lookup tables."""
    side = min(width, height)
    if image.size == (width, height):
        return image
    scale = side / image.width
    arr = np.asarray(resample(image, side), dtype=np.float32) / 255.0
    alpha = arr[..., 3]
    new_alpha = _sharpen_alpha(alpha, scale)
    ratio = np.where(alpha > 1e-3, new_alpha / np.maximum(alpha, 1e-3), 0.0)[..., None]
    arr = np.concatenate(
        [np.clip(arr[..., :3] * ratio, 0, new_alpha[..., None]), new_alpha[..., None]], axis=-1
    )
    return on_canvas(to_straight_rgba(arr), width, height)


def shipped_pictures(per_sheet: int = 4) -> list[Image.Image]:
    """Real 64x64 emoji: the first non-empty tiles of each shipped reference sheet."""
    pictures = []
    for sheet_path in sorted(ASSETS.glob("refs_*.png")):
        with Image.open(sheet_path) as sheet:
            found = 0
            for index in range((sheet.width // 64) * (sheet.height // 64)):
                x, y = index % (sheet.width // 64) * 64, index // (sheet.width // 64) * 64
                tile = sheet.crop((x, y, x + 64, y + 64)).convert("RGBA")
                alpha = np.asarray(tile)[..., 3]
                if 0.2 < (alpha > 0).mean() < 0.9:  # an emoji with edges, not an empty tile
                    pictures.append(tile)
                    found += 1
                    if found == per_sheet:
                        break
    return pictures


@pytest.mark.parametrize("size", SIZES)
def test_the_same_bytes_as_the_float_arithmetic(size: tuple[int, int]) -> None:
    pictures = shipped_pictures()
    assert len(pictures) >= 12
    for picture in pictures:
        ours = upscale(picture, *size)
        assert ours.mode == "RGBA" and ours.size == size
        assert np.array_equal(np.asarray(ours), np.asarray(upscale_per_pixel(picture, *size)))


def test_a_wide_picture_stays_whole_on_a_transparent_canvas() -> None:
    picture = shipped_pictures(per_sheet=1)[0]
    wide = np.asarray(upscale(picture, 1536, 1024))
    assert wide.shape == (1024, 1536, 4)
    assert not wide[:, :256, 3].any() and not wide[:, -256:, 3].any()  # the side margins
    assert wide[:, 256:-256, 3].any()
    # Edges stay crisp: few pixels are half transparent at 16x.
    alpha = wide[..., 3]
    assert ((alpha > 30) & (alpha < 225)).sum() < 0.02 * (alpha > 0).sum()
