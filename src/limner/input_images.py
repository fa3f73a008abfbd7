"""Uploaded pictures -> safe RGBA images: hostile until proven otherwise.

An upload is judged by its bytes (the SDK sends raw bytes and `BytesIO` as
`application/octet-stream`), refused before decoding when its header promises more pixels
than `MAX_PIXELS` (a decompression bomb), and decoded fully inside a `try`, so a truncated
or corrupt file is a 400 naming the field, never a 500. Animated files give their first
frame, EXIF orientation is applied, and every mode (CMYK, 16-bit, palette, greyscale) ends
as 8-bit RGBA.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from limner.errors import InvalidRequest

MAX_PIXELS = 50_000_000
"""The most pixels an input may declare (about 7000 x 7000); more is refused unread."""
MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",)}
MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Upload:
    """One input file as it arrived: multipart part, data URL, file id or fetched URL."""

    param: str
    """The field it came in (`image`, `mask`), for the 400 that names it."""
    data: bytes
    content_type: str = "application/octet-stream"


def sniff(data: bytes) -> str | None:
    """The format by magic bytes: png, jpeg, webp, or None."""
    for name, prefixes in MAGIC.items():
        if data.startswith(prefixes):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def unsupported_mimetype(param: str, upload: Upload, formats: tuple[str, ...]) -> InvalidRequest:
    """OpenAI's own wording: the declared type when it says something, else what we sniffed."""
    declared = upload.content_type.split(";")[0].strip() or "application/octet-stream"
    allowed = sorted(f"'{MIMETYPES[f]}'" for f in formats)
    listed = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + f", and {allowed[-1]}"
    return InvalidRequest(
        f"Invalid file '{param}': unsupported mimetype ('{declared}'). Supported file formats "
        f"are {listed}.", param=param, code="invalid_image_format")


@dataclass(frozen=True)
class InputImage:
    image: Image.Image
    """8-bit RGBA, upright."""
    format: str
    original_mode: str
    """The mode as uploaded (`RGB`, `RGBA`, `LA`, `L`, `P`, ...): dall-e-2's rule reads it."""
    has_alpha: bool
    """Whether the file carries transparency (an alpha channel or a transparent palette)."""


def decode(upload: Upload, formats: tuple[str, ...], max_bytes: int) -> InputImage:
    """Decodes one upload, or raises the 400 that names its field."""
    param = upload.param
    if len(upload.data) >= max_bytes:
        raise InvalidRequest(
            f"Invalid file '{param}': the file is {len(upload.data):,} bytes; it must be "
            f"smaller than {max_bytes:,} bytes.", param=param, code="image_too_large")
    kind = sniff(upload.data)
    if kind is None or kind not in formats:
        raise unsupported_mimetype(param, upload, formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(upload.data), formats=[kind.upper()])
            if opened.width * opened.height > MAX_PIXELS:
                raise InvalidRequest(
                    f"Invalid file '{param}': {opened.width}x{opened.height} is more than "
                    f"the {MAX_PIXELS:,} pixels an input may have.", param=param,
                    code="image_too_large")
            opened.seek(0)  # an animation gives its first frame
            opened.load()
            mode = opened.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in opened.info)
            upright = ImageOps.exif_transpose(opened)
            rgba = _to_rgba(upright)
    except InvalidRequest:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        raise InvalidRequest(
            f"Invalid file '{param}': the image could not be decoded (it may be truncated or "
            "corrupt).", param=param, code="invalid_image") from exc
    return InputImage(rgba, kind, mode, has_alpha)


def _to_rgba(image: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGBA. 16-bit and 32-bit greyscale are scaled down to 8 bits, not
    clipped, so a 16-bit PNG does not come out white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        high = 65535 if image.mode.startswith("I;16") else max(1, image.getextrema()[1])
        image = image.point(lambda v: v * 255 / high).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image.convert("RGBA")


def mask_from(image: InputImage) -> Image.Image:
    """OpenAI's rule: fully transparent pixels (alpha 0) are redrawn. Mode `L`, 255 there."""
    alpha = image.image.getchannel("A")
    return alpha.point(lambda a: 255 if a == 0 else 0)


def starting_picture(images: list[Image.Image], mask: Image.Image | None, width: int,
                     height: int) -> tuple[Image.Image, Image.Image | None]:
    """The edit's starting picture at exactly `width` x `height`, and its mask there.

    One image is scaled to cover the size and centre-cropped (its aspect kept); several are
    laid out as a grid, as square as it gets, each covering its cell. The mask (made for the
    first image) goes through the first image's own scaling and crop; the other cells are
    kept.
    """
    columns = 1
    while columns * columns < len(images):
        columns += 1
    rows = -(-len(images) // columns)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    where: Image.Image | None = None
    if mask is not None:
        where = Image.new("L", (width, height), 0)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        left, top = column * width // columns, row * height // rows
        right, bottom = (column + 1) * width // columns, (row + 1) * height // rows
        canvas.paste(cover(image, right - left, bottom - top), (left, top))
        if index == 0 and mask is not None and where is not None:
            where.paste(cover(mask, right - left, bottom - top), (left, top))
    return canvas, where


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scaled to cover `width` x `height` and centre-cropped; a mask stays two-valued."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if image.mode == "L":
        scaled = image.resize(size, Image.Resampling.NEAREST)
    else:  # premultiplied, so transparent pixels do not bleed dark fringes
        scaled = image.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return scaled.crop((left, top, left + width, top + height))
