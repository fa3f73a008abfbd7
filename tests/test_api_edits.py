"""`/v1/images/edits` and `/v1/images/variations` through the official `openai` client, against
a real server whose fake engine draws a disc over the starting picture."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from conftest import RunningServer, decoded, images_of
from PIL import Image, ImageChops, ImageDraw

SIDE = 1024
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
"""The SDK marks `create_variation` deprecated (dall-e-2 is retired upstream)."""


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise(width: int = SIDE, height: int = SIDE) -> Image.Image:
    """A picture where every pixel differs, so a kept pixel is a kept pixel."""
    return Image.effect_noise((width, height), 80).convert("RGB")


def centre_mask(width: int = SIDE, height: int = SIDE, hole: int = 256) -> Image.Image:
    """Opaque everywhere but a transparent square in the middle: redraw only there."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    left, top = (width - hole) // 2, (height - hole) // 2
    ImageDraw.Draw(mask).rectangle((left, top, left + hole - 1, top + hole - 1),
                                   fill=(0, 0, 0, 0))
    return mask



@pytest.fixture
def server(serve: Callable[..., RunningServer]) -> RunningServer:
    return serve()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)


def error_of(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict)
    return caught.value.status_code, body


def test_masked_edit_keeps_every_pixel_outside_the_mask(client: openai.OpenAI) -> None:
    source = noise()
    result = client.images.edit(model="gpt-image-1", prompt="a red hat",
                                image=("in.png", png(source), "image/png"),
                                mask=("mask.png", png(centre_mask()), "image/png"))
    picture = decoded(images_of(result)[0].b64_json)
    assert (picture.format, picture.size, picture.mode) == ("PNG", (SIDE, SIDE), "RGB")
    assert (result.size, result.output_format, result.background) == ("1024x1024", "png",
                                                                      "opaque")
    # Outside the hole: the input's own pixels, exactly. Inside: the drawn disc.
    outside = (0, 0, SIDE, 380)
    assert ImageChops.difference(picture.crop(outside), source.crop(outside)).getbbox() is None
    inside = (448, 448, 576, 576)
    changed = ImageChops.difference(picture.crop(inside), source.crop(inside))
    assert changed.getbbox() == (0, 0, 128, 128)
    assert result.usage is not None
    details = result.usage.input_tokens_details
    assert details.image_tokens == 272  # one 1024x1024 input at input_fidelity low
    assert result.usage.input_tokens == details.text_tokens + details.image_tokens


def test_edit_of_raw_bytes_and_of_a_list(client: openai.OpenAI) -> None:
    red, blue = png(Image.new("RGB", (300, 300), "red")), png(Image.new("RGB", (300, 300),
                                                                        "blue"))
    single = client.images.edit(model="gpt-image-1", prompt="p", image=red, size="1024x1536")
    assert decoded(images_of(single)[0].b64_json).size == (1024, 1536)
    both = client.images.edit(model="gpt-image-1", prompt="p", image=[red, blue],
                              output_format="webp", n=2, input_fidelity="high")
    assert len(images_of(both)) == 2 and both.size == "1024x1024"
    webp = decoded(images_of(both)[0].b64_json)
    assert webp.format == "WEBP"
    picture = webp.convert("RGB")
    # The two pictures laid out side by side are the start: red left, blue right.
    assert picture.getpixel((20, 20)) == (255, 0, 0)
    assert picture.getpixel((SIDE - 20, 20)) == (0, 0, 255)
    assert both.usage is not None
    # Two 300x300 inputs at input_fidelity high: 10 x (10 + 1) tokens each (32-pixel cells).
    assert both.usage.input_tokens_details.image_tokens == 2 * 110


def test_auto_size_follows_the_input_shape(client: openai.OpenAI) -> None:
    wide = png(Image.new("RGB", (600, 400), "green"))
    result = client.images.edit(model="gpt-image-1", prompt="p", image=wide)
    assert result.size == "1536x1024"
    assert decoded(images_of(result)[0].b64_json).size == (1536, 1024)


def test_streaming_edit_sends_image_edit_events(client: openai.OpenAI) -> None:
    stream = client.images.edit(model="gpt-image-1", prompt="p", stream=True,
                                partial_images=2, image=png(noise(256, 256)),
                                mask=png(centre_mask(256, 256, 64)), size="1024x1024")
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + [
        "image_edit.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events[:2]] == [0, 1]
    final = events[-1]
    assert decoded(final.b64_json).size == (SIDE, SIDE)
    assert final.type == "image_edit.completed" and final.usage.input_tokens_details


def test_json_edit_with_a_data_url_and_a_file_id(client: openai.OpenAI,
                                                 server: RunningServer) -> None:
    source = png(noise(512, 512))
    mask = png(centre_mask(512, 512, 128))
    uploaded = client.files.create(file=("in.png", source, "image/png"), purpose="vision")
    data_url = "data:image/png;base64," + base64.b64encode(mask).decode()
    body = {"model": "gpt-image-1", "prompt": "p", "size": "1024x1024",
            "images": [{"file_id": uploaded.id}], "mask": {"image_url": data_url}}
    with server.http() as http:
        response = http.post("/v1/images/edits", json=body)
    assert response.status_code == 200, response.text
    picture = decoded(response.json()["data"][0]["b64_json"])
    assert picture.size == (SIDE, SIDE)
    corner = Image.open(io.BytesIO(source)).convert("RGB").resize((SIDE, SIDE),
                                                                 Image.Resampling.LANCZOS)
    assert picture.getpixel((5, 5)) == corner.getpixel((5, 5))


def test_dall_e_2_edit_uses_the_pictures_own_transparency(client: openai.OpenAI) -> None:
    source = noise(256, 256).convert("RGBA")
    ImageDraw.Draw(source).rectangle((96, 96, 159, 159), fill=(0, 0, 0, 0))
    result = client.images.edit(model="dall-e-2", prompt="p", image=png(source),
                                size="256x256", response_format="b64_json")
    picture = decoded(images_of(result)[0].b64_json).convert("RGBA")
    assert picture.size == (256, 256) and result.usage is None
    assert picture.getpixel((10, 10)) == source.getpixel((10, 10))
    assert picture.getchannel("A").getpixel((128, 128)) == 255  # the hole is drawn over


def test_variations_are_new_pictures_each(client: openai.OpenAI, server: RunningServer) -> None:
    result = client.images.create_variation(image=png(noise(256, 256)), n=2, size="512x512",
                                            response_format="b64_json")
    first, second = (decoded(d.b64_json) for d in images_of(result))
    assert first.size == second.size == (512, 512)
    assert ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox()
    by_url = client.images.create_variation(image=png(noise(256, 256)), size="256x256")
    url = images_of(by_url)[0].url
    assert url is not None and url.startswith(server.base_url)
    assert Image.open(io.BytesIO(httpx.get(url).content)).size == (256, 256)


def test_edit_errors_have_the_live_apis_bodies(client: openai.OpenAI) -> None:
    rgb = png(Image.new("RGB", (64, 64), "red"))
    cases: list[tuple[Callable[[], Any], str, str | None]] = [
        (lambda: client.images.edit(prompt="p", image=("a.txt", b"hello", "text/plain")),
         "Invalid file 'image': unsupported mimetype ('text/plain'). Supported file formats "
         "are 'image/jpeg', 'image/png', and 'image/webp'.", "image"),
        (lambda: client.images.edit(model="dall-e-2", prompt="p", image=rgb),
         "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.", "image"),
        (lambda: client.images.edit(model="dall-e-2", prompt="p",
                                    image=("a.jpg", png(Image.new("RGB", (8, 8))),
                                           "image/jpeg"), mask=rgb),
         "Invalid 'mask': the mask must have the same dimensions as the image (8x8), but it "
         "is 64x64.", "mask"),
        (lambda: client.images.edit(model="dall-e-3", prompt="p", image=rgb),
         "Invalid value: 'dall-e-3'. Image edits are supported with 'dall-e-2' and the GPT "
         "image models; 'dall-e-3' has none.", "model"),
        (lambda: client.images.edit(model="gpt-image-2", prompt="p", image=rgb,
                                    input_fidelity="high"),
         "Unsupported parameter: 'input_fidelity' is not supported with the model "
         "'gpt-image-2'.", "input_fidelity"),
        (lambda: client.images.edit(model="gpt-image-1", prompt="p", image=[rgb] * 17),
         "Invalid 'image': expected at most 16 images, but got 17.", "image"),
        (lambda: client.images.edit(model="gpt-image-1", prompt="p", image=rgb, n=0),
         "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 "
         "instead.", "n"),
        (lambda: client.images.edit(model="gpt-image-1", prompt="p", image=rgb,
                                    output_format="gif", mask=rgb),
         "Invalid 'mask': output_format 'gif' does not support masks.", "mask"),
        (lambda: client.images.create_variation(image=rgb, model="gpt-image-1"),
         "Invalid value: 'gpt-image-1'. Image variations are only supported with "
         "'dall-e-2'.", "model"),
        (lambda: client.images.create_variation(image=png(Image.new("RGB", (64, 32)))),
         "Invalid input image - image must be square, got 64x32.", "image"),
    ]
    for call, message, param in cases:
        status, body = error_of(call)
        assert status == 400
        assert body["message"] == message
        assert body["param"] == param and body["type"] == "invalid_request_error"


def test_multipart_field_errors(server: RunningServer) -> None:
    image = ("a.png", png(Image.new("RGB", (8, 8))), "image/png")
    with server.http() as http:
        as_string = http.post("/v1/images/edits", data={"prompt": "p", "image": "x.png"})
        bad_n = http.post("/v1/images/edits", data={"prompt": "p", "n": "two"},
                          files={"image": image})
        unknown = http.post("/v1/images/edits", data={"prompt": "p", "colour": "red"},
                            files={"image": image})
        json_dall_e = http.post("/v1/images/edits", json={
            "model": "dall-e-2", "prompt": "p", "images": [{"image_url": "data:,"}]})
        fetched = http.post("/v1/images/edits", json={
            "prompt": "p", "images": [{"image_url": "http://169.254.169.254/latest"}]})
        no_images = http.post("/v1/images/edits", json={"prompt": "p", "images": []})
        plain = http.post("/v1/images/variations", content=b"x",
                          headers={"content-type": "text/plain"})
    assert as_string.status_code == 400
    assert as_string.json()["error"]["message"] == (
        "Invalid type for 'image': expected one of an array of files or file, but got a "
        "string instead.")
    assert bad_n.status_code == 400 and bad_n.json()["error"]["param"] == "n"
    assert bad_n.json()["error"]["code"] == "invalid_type"
    assert unknown.json()["error"] == {"message": "Unknown parameter: 'colour'.",
                                       "type": "invalid_request_error", "param": "colour",
                                       "code": "unknown_parameter"}
    assert json_dall_e.json()["error"]["message"] == (
        "JSON edits support GPT image models only; DALL-E edits require multipart.")
    assert fetched.status_code == 400
    assert fetched.json()["error"]["code"] == "image_url_not_allowed"
    assert fetched.json()["error"]["param"] == "images[0].image_url"
    assert no_images.json()["error"]["message"] == "Missing required parameter: 'images'."
    assert plain.status_code == 415


def test_an_upload_over_the_limit_is_refused_while_read(serve: Callable[..., RunningServer]
                                                         ) -> None:
    server = serve(max_upload_bytes=100_000)
    big = png(noise(512, 512))
    assert len(big) > 100_000
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    status, body = error_of(lambda: client.images.edit(prompt="p", image=big))
    assert status == 413 and body["code"] == "request_too_large"


def test_later_revision_fields_on_edits(client: openai.OpenAI, server: RunningServer) -> None:
    source = png(noise(256, 256))
    result = client.images.edit(model="gpt-image-2.5-flare", prompt="p", image=source,
                                quality="xhigh", complexity="high", safety_identifier="u-7",
                                output_format="gif", frame_count=3, size="1024x1024")
    animation = decoded(images_of(result)[0].b64_json)
    assert (animation.format, getattr(animation, "n_frames", 1)) == ("GIF", 3)
    assert (result.quality, result.safety_identifier) == ("xhigh", "u-7")
    svg = client.images.edit(model="gpt-image-2.5-flare", prompt="p", image=source,
                             output_format="svg")
    text = base64.b64decode(images_of(svg)[0].b64_json or "")
    assert text.startswith(b"<?xml") and b"<path" in text and svg.svg_usage is not None
    # markup: drawn over the first picture to guide the edit (2.5 models, never with a mask)
    markup = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    ImageDraw.Draw(markup).rectangle((0, 0, 40, 40), fill=(0, 255, 0, 255))
    with server.http() as http:
        marked = http.post("/v1/images/edits", data={
            "model": "gpt-image-2.5-flare", "prompt": "p", "size": "1024x1024"},
            files={"image": ("a.png", source), "markup": ("m.png", png(markup))})
        with_mask = http.post("/v1/images/edits", data={"model": "gpt-image-2.5-flare",
                                                        "prompt": "p"},
                              files={"image": ("a.png", source), "markup": ("m.png", png(markup)),
                                     "mask": ("k.png", png(centre_mask(256, 256, 64)))})
        old_model = http.post("/v1/images/edits", data={"model": "gpt-image-1", "prompt": "p"},
                              files={"image": ("a.png", source),
                                     "markup": ("m.png", png(markup))})
    assert marked.status_code == 200, marked.text
    picture = decoded(marked.json()["data"][0]["b64_json"]).convert("RGB")
    assert picture.getpixel((10, 10)) == (0, 255, 0)
    assert with_mask.json()["error"]["message"] == (
        "Invalid 'markup': it cannot be combined with 'mask'.")
    assert old_model.json()["error"]["code"] == "unsupported_parameter"
