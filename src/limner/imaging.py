"""From an engine's picture to the bytes the client asked for: exact size, background,
and encoding (png, jpeg, webp) with Pillow."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageFilter

OPAQUE_BACKDROP = (255, 255, 255)
SVG_TRACE_SIDE = 512
Background = Literal["opaque", "alpha", "key_out"]
"""How a picture gets its background: on white, with the alpha the engine drew, or with the
plain backdrop an RGB engine was asked for keyed out."""


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to exactly `width` x `height`.

    A picture with the target's aspect ratio (within 2 %) is resized directly. Otherwise an
    RGBA picture is fitted inside and padded with transparency (an emoji stays whole), and an
    RGB picture is scaled to cover and centre-cropped.
    """
    if image.size == (width, height):
        return image
    src_w, src_h = image.size
    src_ratio, dst_ratio = src_w / src_h, width / height
    if abs(src_ratio / dst_ratio - 1) <= 0.02:
        return _resize(image, width, height)
    if image.mode == "RGBA":
        scale = min(width / src_w, height / src_h)
        inner = _resize(image, max(1, round(src_w * scale)), max(1, round(src_h * scale)))
        canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    scale = max(width / src_w, height / src_h)
    covered = _resize(image, max(width, round(src_w * scale)), max(height, round(src_h * scale)))
    left, top = (covered.width - width) // 2, (covered.height - height) // 2
    return covered.crop((left, top, left + width, top + height))


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.mode != "RGBA":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    # Resample premultiplied colour so transparent pixels do not bleed dark fringes.
    premultiplied = image.convert("RGBa")
    return premultiplied.resize((width, height), Image.Resampling.LANCZOS).convert("RGBA")


def apply_background(image: Image.Image, background: Background) -> Image.Image:
    """`opaque` -> RGB on a white backdrop; `alpha` -> RGBA as the engine drew it; `key_out`
    -> RGBA with the plain backdrop the engine was asked for keyed out (`key_out_backdrop`).
    """
    if background == "alpha":
        return image.convert("RGBA")
    if background == "key_out":
        return key_out_backdrop(image.convert("RGB"))
    if image.mode == "RGBA":
        backdrop = Image.new("RGB", image.size, OPAQUE_BACKDROP)
        backdrop.paste(image, mask=image.getchannel("A"))
        return backdrop
    return image.convert("RGB")


def key_out_backdrop(image: Image.Image, inner: float = 0.06, outer: float = 0.16) -> Image.Image:
    """Background removal for models that draw no alpha.

    The backdrop colour is the median of the border pixels (the engine is asked to draw on a
    plain backdrop). A pixel's alpha rises smoothly from 0 to 1 as its colour distance from the
    backdrop goes from `inner` to `outer` (soft edges), and the backdrop colour is removed from
    the edge pixels' colour so no halo remains.
    """
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    backdrop = np.median(border, axis=0)
    distance = np.sqrt(((rgb - backdrop) ** 2).sum(axis=-1) / 3.0)
    alpha = np.clip((distance - inner) / (outer - inner), 0.0, 1.0)
    alpha = alpha * alpha * (3.0 - 2.0 * alpha)
    safe = np.maximum(alpha, 1e-3)[..., None]
    colour = np.clip((rgb - backdrop * (1.0 - alpha[..., None])) / safe, 0.0, 1.0)
    rgba = np.concatenate([colour, alpha[..., None]], axis=-1)
    return Image.fromarray((rgba * 255.0 + 0.5).astype(np.uint8), "RGBA")


def encode(image: Image.Image, output_format: str, compression: int = 100) -> bytes:
    """Encode as png, jpeg, webp or svg (one frame; `encode_gif` animates).

    `compression` (0-100) is the encoder quality for jpeg and webp: 100 is the best (webp 100
    is lossless); png is always lossless and ignores it, as the OpenAI spec says.
    """
    buffer = io.BytesIO()
    if output_format == "png":
        # zlib's run-length strategy: LZ77's longer matches find little in filtered image
        # rows, so it is faster at about the same size (`benchmarks/encode_speed.py`).
        image.save(buffer, format="PNG", compress_level=4, compress_type=zlib.Z_RLE)
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=max(1, min(compression, 100)))
    elif output_format == "svg":
        return trace_svg(image)
    elif output_format == "webp":
        if compression >= 100:
            # The fastest lossless effort: several times faster than a higher one, a little
            # larger, about PNG's size or less (`benchmarks/encode_speed.py`).
            image.save(buffer, format="WEBP", lossless=True, quality=25, method=0)
        else:
            image.save(buffer, format="WEBP", quality=max(1, compression), method=4)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


Keep = tuple[Image.Image, Image.Image]
"""An edit's starting picture (RGBA) and mask (`L`, 255 where redrawn), at the final size."""


def finish(image: Image.Image, width: int, height: int, background: Background,
           output_format: str, compression: int, keep: Keep | None = None,
           mark: Callable[[Image.Image], Image.Image] | None = None) -> bytes:
    """The whole imaging step: exact size, background, an edit's kept pixels, a watermark
    (`mark`, on the final pixels), encoding."""
    picture = apply_background(fit_to_size(image, width, height), background)
    if keep is not None:
        picture = keep_unmasked(picture, *keep)
    if mark is not None:
        picture = mark(picture)
    return encode(picture, output_format, compression)


def keep_unmasked(picture: Image.Image, start: Image.Image, mask: Image.Image) -> Image.Image:
    """The edit's answer: the input's own pixels wherever the mask keeps them, exactly, and
    the drawn picture where it is redrawn, blended over a seam a little inside the mask's
    edge so no hard line shows."""
    radius = max(1, round(min(mask.size) / 128))
    blurred = mask.filter(ImageFilter.GaussianBlur(radius))
    seam = blurred.point(lambda v: 0 if v <= 128 else min(255, (v - 128) * 255 // 120))
    weight = ImageChops.darker(seam, mask)  # never beyond the mask: kept pixels stay exact
    if picture.mode == "RGBA":
        return Image.composite(picture, start, weight)
    backdrop = Image.new("RGB", start.size, OPAQUE_BACKDROP)
    backdrop.paste(start, mask=start.getchannel("A"))
    return Image.composite(picture, backdrop, weight)


def trace_svg(image: Image.Image) -> bytes:
    """A vector image: the raster traced into filled paths by vtracer (colour, stacked shapes).

    The picture is traced at most `SVG_TRACE_SIDE` pixels on its long side and drawn at the
    asked size through its `viewBox`: tracing the full size finds more anti-aliasing than
    shapes, for several times the bytes. Flat art, as the embedded model draws, becomes a few
    dozen paths.
    """
    import vtracer

    width, height = image.size
    scale = min(1.0, SVG_TRACE_SIDE / max(width, height))
    traced = image if scale == 1.0 else image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    traced.save(buffer, format="PNG", compress_level=1)
    svg: str = vtracer.convert_raw_image_to_svg(
        buffer.getvalue(), img_format="png", colormode="color", hierarchical="stacked",
        mode="spline", filter_speckle=8, color_precision=5, layer_difference=24,
        path_precision=1)
    tw, th = traced.size
    svg = svg.replace(f'width="{tw}" height="{th}"',
                      f'width="{width}" height="{height}" viewBox="0 0 {tw} {th}"', 1)
    return svg.encode("utf-8")


def encode_gif(frames: list[Image.Image], duration_ms: int) -> bytes:
    """An animated GIF that loops, each frame shown `duration_ms` (a multiple of 10 ms, which
    is what GIF's delays can hold). Frames are RGB: GIF's one-bit alpha is not offered."""
    first, *rest = [frame.convert("RGB") for frame in frames]
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=duration_ms,
               loop=0, optimize=False, disposal=1)
    return buffer.getvalue()


def finish_animation(frames: list[Image.Image], width: int, height: int,
                     background: Background, duration_ms: int) -> bytes:
    """`finish` for a GIF: every frame at the exact size and background, then animated.
    (A GIF edit has no mask, so nothing is kept.)"""
    return encode_gif([apply_background(fit_to_size(frame, width, height), background)
                       for frame in frames], duration_ms)
