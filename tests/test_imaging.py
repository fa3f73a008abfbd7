"""Imaging: exact sizes, backgrounds with real alpha, encoders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from limner import imaging


def disc(mode: str = "RGBA", size: int = 64) -> Image.Image:
    background = (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255)
    image = Image.new(mode, (size, size), background)
    fill = (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30)
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=fill)
    return image


@pytest.mark.parametrize("size", [(1024, 1024), (1536, 1024), (1024, 1536), (256, 256)])
def test_fit_to_size_is_exact(size: tuple[int, int]) -> None:
    for mode in ("RGBA", "RGB"):
        assert imaging.fit_to_size(disc(mode), *size).size == size


def test_wide_rgba_is_padded_not_stretched() -> None:
    wide = imaging.fit_to_size(disc(), 1536, 1024)
    alpha = wide.getchannel("A")
    assert alpha.getpixel((10, 512)) == 0 and alpha.getpixel((768, 512)) == 255


def test_opaque_has_no_alpha_and_transparent_keeps_it() -> None:
    assert imaging.apply_background(disc(), "opaque").mode == "RGB"
    kept = imaging.apply_background(disc(), "alpha")
    assert kept.mode == "RGBA" and kept.getchannel("A").getextrema() == (0, 255)


def test_key_out_backdrop_of_an_rgb_picture() -> None:
    keyed = imaging.apply_background(disc("RGB"), "key_out")
    assert keyed.mode == "RGBA"
    corner = keyed.getpixel((2, 2))
    assert isinstance(corner, tuple) and corner[3] == 0
    assert keyed.getpixel((32, 32)) == (200, 30, 30, 255)


@pytest.mark.parametrize(("fmt", "pil", "mode"), [("png", "PNG", "RGBA"), ("webp", "WEBP", "RGBA"),
                                                  ("jpeg", "JPEG", "RGB")])
def test_encode(fmt: str, pil: str, mode: str) -> None:
    data = imaging.finish(disc(), 512, 512, "opaque" if fmt == "jpeg" else "alpha",
                          output_format=fmt, compression=80)
    image = Image.open(io.BytesIO(data))
    assert image.format == pil and image.size == (512, 512) and image.mode == mode


def test_webp_100_is_lossless() -> None:
    source = imaging.fit_to_size(disc(), 256, 256)
    decoded = Image.open(io.BytesIO(imaging.encode(source, "webp", 100))).convert("RGBA")
    assert decoded.tobytes() == source.tobytes()


def test_compression_shrinks_jpeg() -> None:
    big = imaging.fit_to_size(disc("RGB"), 512, 512)
    assert len(imaging.encode(big, "jpeg", 5)) < len(imaging.encode(big, "jpeg", 100))


def test_stream_events_stay_under_the_go_clients_line_limit() -> None:
    from limner.errors import GenerationFailed
    from limner.service import MAX_EVENT_B64, _stream_b64

    assert _stream_b64(b"abc") == "YWJj"
    with pytest.raises(GenerationFailed, match="too large for one stream event"):
        _stream_b64(b"\0" * (MAX_EVENT_B64 // 4 * 3 + 3))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_is_lossless_and_as_small_as_zlibs_default(mode: str) -> None:
    """PNG runs zlib's run-length strategy (faster); it must lose nothing, and on generated
    art (the embedded model's contact sheet) cost few more bytes than the default strategy
    (this crop: 2.0% more in RGB, 1.4% in RGBA)."""
    sheet = Path(__file__).resolve().parents[1] / "docs" / "contact-sheet.png"
    with Image.open(sheet) as opened:
        source = opened.convert(mode).crop((0, 0, 512, 512))
    data = imaging.encode(source, "png")
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode and decoded.tobytes() == source.tobytes()
    default = io.BytesIO()
    source.save(default, format="PNG", compress_level=4)
    assert len(data) <= 1.04 * len(default.getvalue())


def test_lossless_webp_is_lossless_and_smaller_than_png() -> None:
    """webp at output_compression 100 takes libwebp's fastest lossless effort; it must still
    lose nothing, and on generated art stay smaller than PNG (on smooth photographs the two
    come out about equal)."""
    sheet = Path(__file__).resolve().parents[1] / "docs" / "contact-sheet.png"
    with Image.open(sheet) as opened:
        source = opened.convert("RGBA").crop((0, 0, 512, 512))
    data = imaging.encode(source, "webp", 100)
    assert Image.open(io.BytesIO(data)).convert("RGBA").tobytes() == source.tobytes()
    assert len(data) < len(imaging.encode(source, "png"))
