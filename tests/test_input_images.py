"""Hostile uploads: every mode and every broken file ends as RGBA or as a 400 naming its field."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from limner.errors import InvalidRequest
from limner.input_images import Upload, decode, mask_from, sniff, starting_picture

FORMATS = ("png", "webp", "jpeg")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("image", "fmt", "alpha"), [
    (Image.new("CMYK", (20, 10), (0, 255, 0, 0)), "JPEG", False),
    (Image.new("L", (20, 10), 128), "PNG", False),
    (Image.new("LA", (20, 10), (128, 0)), "PNG", True),
    (Image.new("RGB", (20, 10), (9, 9, 9)), "WEBP", False),
])
def test_every_mode_becomes_rgba(image: Image.Image, fmt: str, alpha: bool) -> None:
    decoded = decode(Upload("image", encoded(image, fmt)), FORMATS, 10**8)
    assert decoded.image.mode == "RGBA"
    assert decoded.image.size == (20, 10)
    assert decoded.has_alpha is alpha
    assert decoded.original_mode == image.mode


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    deep = Image.new("I;16", (8, 8), 32768)
    decoded = decode(Upload("image", encoded(deep, "PNG")), FORMATS, 10**8)
    red, green, blue, alpha = decoded.image.getpixel((0, 0))  # type: ignore[misc]
    assert 120 <= red <= 135 and red == green == blue and alpha == 255


def test_palette_with_transparency_keeps_it() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 1), 1)
    decoded = decode(Upload("image", encoded(palette, "PNG", transparency=0)), FORMATS, 10**8)
    assert decoded.has_alpha
    assert decoded.image.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert decoded.image.getpixel((1, 1)) == (0, 255, 0, 255)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    decoded = decode(Upload("image", encoded(wide, "JPEG", exif=exif)), FORMATS, 10**8)
    assert decoded.image.size == (20, 40)


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGBA", (8, 8), colour) for colour in ("red", "blue")]
    data = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    decoded = decode(Upload("image", data), FORMATS, 10**8)
    assert decoded.image.getpixel((0, 0)) == (255, 0, 0, 255)


def test_truncated_file_is_a_400_naming_the_field() -> None:
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(InvalidRequest) as caught:
        decode(Upload("mask", data[: len(data) // 2]), FORMATS, 10**8)
    assert caught.value.param == "mask"
    assert caught.value.code == "invalid_image"


def test_decompression_bomb_is_refused_unread() -> None:
    # A valid PNG header that declares 100,000 x 100,000 pixels, with almost no data.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    data = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))
    with pytest.raises(InvalidRequest) as caught:
        decode(Upload("image", data), FORMATS, 10**8)
    assert caught.value.code in ("image_too_large", "invalid_image")
    assert caught.value.param == "image"


def test_type_is_judged_by_content_not_by_declared_type() -> None:
    png = encoded(Image.new("RGB", (4, 4)), "PNG")
    assert sniff(png) == "png"
    assert decode(Upload("image", png, "text/plain"), FORMATS, 10**8).format == "png"
    with pytest.raises(InvalidRequest) as caught:
        decode(Upload("image", b"GIF89a....", "image/gif"), FORMATS, 10**8)
    assert str(caught.value) == ("Invalid file 'image': unsupported mimetype ('image/gif'). "
                                 "Supported file formats are 'image/jpeg', 'image/png', and "
                                 "'image/webp'.")


def test_size_limit_is_exclusive() -> None:
    png = encoded(Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(InvalidRequest) as caught:
        decode(Upload("image", png), FORMATS, len(png))
    assert caught.value.code == "image_too_large"


def test_mask_is_where_alpha_is_zero() -> None:
    mask_png = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    mask_png.putpixel((2, 2), (0, 0, 0, 0))
    mask_png.putpixel((3, 3), (0, 0, 0, 1))  # not fully transparent: kept
    mask = mask_from(decode(Upload("mask", encoded(mask_png, "PNG")), ("png",), 10**8))
    assert mask.mode == "L"
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((3, 3)) == 0
    assert mask.getpixel((0, 0)) == 0


def test_several_pictures_are_laid_out_as_a_grid() -> None:
    red, blue = Image.new("RGBA", (10, 10), "red"), Image.new("RGBA", (10, 10), "blue")
    start, where = starting_picture([red, blue], Image.new("L", (10, 10), 255), 200, 100)
    assert start.size == (200, 100)
    assert start.getpixel((10, 50)) == (255, 0, 0, 255)
    assert start.getpixel((190, 50)) == (0, 0, 255, 255)
    assert where is not None
    assert where.getpixel((10, 50)) == 255  # the mask is the first picture's
    assert where.getpixel((190, 50)) == 0
