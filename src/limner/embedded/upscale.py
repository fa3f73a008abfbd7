"""64 px premultiplied RGBA -> any size, clean rather than blocky.

Emoji are flat art with hard outlines, so plain Lanczos from 64 px looks soft at 1024.
We resample the *premultiplied* colour (no dark fringes), tighten the alpha ramp so the
silhouette edge stays about one output pixel wide at every scale, and apply a mild
unsharp mask to the colour. Non-square sizes keep the picture whole, centred on a
transparent canvas.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def to_straight_rgba(premul: np.ndarray) -> Image.Image:
    """(H, W, 4) float premultiplied in [0, 1] -> straight-alpha RGBA image."""
    a = premul[..., 3:4]
    rgb = np.where(a > 1e-3, premul[..., :3] / np.maximum(a, 1e-3), 0.0)
    out = np.concatenate([np.clip(rgb, 0, 1), np.clip(a, 0, 1)], axis=-1)
    return Image.fromarray(np.round(out * 255).astype(np.uint8), "RGBA")


def _sharpen_alpha(alpha: np.ndarray, scale: float) -> np.ndarray:
    """Steepen the alpha ramp that upscaling smeared over ~`scale` pixels."""
    if scale <= 1.5:
        return alpha
    gain = min(scale, 8.0) ** 0.5
    x = np.clip((alpha - 0.5) * gain + 0.5, 0.0, 1.0)
    out: np.ndarray = x * x * (3.0 - 2.0 * x)
    return out


def upscale(image: Image.Image, width: int, height: int) -> Image.Image:
    """Straight RGBA at native size -> straight RGBA of exactly `width` x `height`."""
    side = min(width, height)
    if image.size == (width, height):
        return image
    scale = side / image.width
    big = image.convert("RGBa").resize((side, side), Image.Resampling.LANCZOS)
    if scale > 1.5:
        radius = min(0.6 * scale, 6.0)
        big = big.filter(ImageFilter.UnsharpMask(radius=radius, percent=60, threshold=2))
    arr = np.asarray(big, dtype=np.float32) / 255.0  # premultiplied
    alpha = arr[..., 3]
    new_alpha = _sharpen_alpha(alpha, scale)
    ratio = np.where(alpha > 1e-3, new_alpha / np.maximum(alpha, 1e-3), 0.0)[..., None]
    arr = np.concatenate(
        [np.clip(arr[..., :3] * ratio, 0, new_alpha[..., None]), new_alpha[..., None]], axis=-1
    )
    square = to_straight_rgba(arr)
    if (side, side) == (width, height):
        return square
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(square, ((width - side) // 2, (height - side) // 2))
    return canvas
