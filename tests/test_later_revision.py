"""The later revision of the Images API (CONTRACT §11) through the newest official SDK: the new
model names and qualities, `safety_identifier`, `complexity`, and `gif` and `svg` output."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from conftest import RunningServer, images_of, running_server
from PIL import Image

from limner.engines.fake import FakeEngine

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("later")) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)


def frames_of(data: bytes) -> Any:
    """The decoded GIF, typed loosely: Pillow's stubs do not know `n_frames`."""
    gif: Any = Image.open(io.BytesIO(data))
    return gif


def decode(b64: str | None) -> bytes:
    assert b64 is not None
    return base64.b64decode(b64)


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict)
    return body


# Models and qualities -----------------------------------------------------------------------
NEW_NAMES = ["gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
             "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08",
             "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"]


def test_the_new_names_are_listed_and_the_retired_ones_carry_their_date(
        client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(NEW_NAMES) <= set(models)
    assert models["gpt-image-1"].shutdown_date == "2026-10-23"
    assert models["dall-e-3"].shutdown_date == "2026-05-12"
    assert models["gpt-image-2.5-flare"].shutdown_date is None


@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_xhigh_and_max_on_the_2_5_models_take_more_steps(
        client: openai.OpenAI, server: RunningServer, quality: str) -> None:
    engine = server.engines["fake"]
    assert isinstance(engine, FakeEngine)
    before = engine.steps_run
    response = client.images.generate(prompt="otter", model="gpt-image-2.5-sunburst",
                                      quality=quality,  # type: ignore[call-overload]
                                      size="1536x864")
    assert response.quality == quality and response.size == "1536x864"
    image = Image.open(io.BytesIO(decode(images_of(response)[0].b64_json)))
    assert image.size == (1536, 864)
    assert engine.steps_run - before == {"xhigh": 12, "max": 16}[quality]


def test_xhigh_and_free_sizes_are_refused_where_the_spec_does_not_give_them(
        client: openai.OpenAI) -> None:
    error = error_of(lambda: client.images.generate(prompt="x", model="gpt-image-2.6-flare",
                                                    quality="xhigh"))
    assert (error["param"], error["code"]) == ("quality", "invalid_value")
    error = error_of(lambda: client.images.generate(prompt="x", model="gpt-image-2.6-flare",
                                                    size="1536x864"))
    assert error["param"] == "size"


def test_complexity_moves_the_work_one_level(client: openai.OpenAI,
                                             server: RunningServer) -> None:
    engine = server.engines["fake"]
    assert isinstance(engine, FakeEngine)
    steps = {}
    for complexity in ("low", "medium", "high"):
        before = engine.steps_run
        client.images.generate(prompt="otter", model="gpt-image-2.5-flare", quality="medium",
                               complexity=complexity)
        steps[complexity] = engine.steps_run - before
    assert steps == {"low": 2, "medium": 4, "high": 8}
    error = error_of(lambda: client.images.generate(
        prompt="x", model="gpt-image-2.5-flare", complexity="extreme"))  # type: ignore[call-overload]
    assert (error["param"], error["code"]) == ("complexity", "invalid_value")
    error = error_of(lambda: client.images.generate(prompt="x", model="dall-e-3",
                                                    complexity="low"))
    assert (error["param"], error["code"]) == ("complexity", "unsupported_parameter")


# safety_identifier ----------------------------------------------------------------------------
def test_the_safety_identifier_is_echoed_and_wins_over_user(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-2.5-flare",
                                      user="old", safety_identifier="hash-1")
    assert response.safety_identifier == "hash-1"
    assert client.images.generate(prompt="otter", model="gpt-image-2.5-flare",
                                  user="old").safety_identifier == "old"
    assert client.images.generate(prompt="otter",
                                  model="gpt-image-2.5-flare").safety_identifier is None
    events = list(client.images.generate(prompt="otter", model="gpt-image-2.5-flare",
                                         stream=True, safety_identifier="hash-2"))
    completed = events[-1]
    assert completed.type == "image_generation.completed"
    assert completed.safety_identifier == "hash-2"


# GIF -------------------------------------------------------------------------------------------
def test_gif_is_an_animation_with_the_frames_and_delays_asked(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-2.5-flare",
                                      output_format="gif", frame_count=5,
                                      frame_duration_ms=123, size="1024x1024")
    assert response.output_format == "gif"
    gif = frames_of(decode(images_of(response)[0].b64_json))
    assert (gif.format, gif.size, gif.n_frames) == ("GIF", (1024, 1024), 5)
    delays, areas = [], []
    for index in range(gif.n_frames):
        gif.seek(index)
        delays.append(gif.info["duration"])
        small = np.asarray(gif.convert("RGB").resize((64, 64)))
        areas.append(int((small != 255).any(axis=2).sum()))
    assert delays == [120] * 5  # rounded to 10 ms
    assert areas == sorted(areas) and areas[0] < areas[-1], "the disc grows as it is drawn"


def test_gif_defaults_to_nine_frames(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-1",
                                      output_format="gif", size="1024x1024")
    gif = frames_of(decode(images_of(response)[0].b64_json))
    assert gif.n_frames == 9 and gif.info["duration"] == 200


EXCLUSIONS = [
    ("gif", {"stream": True}, "stream"),
    ("gif", {"partial_images": 2}, "partial_images"),
    ("gif", {"output_compression": 50}, "output_compression"),
    ("gif", {"frame_count": 1}, "frame_count"),
    ("gif", {"frame_count": 17}, "frame_count"),
    ("gif", {"frame_duration_ms": 0}, "frame_duration_ms"),
    ("gif", {"background": "transparent"}, "background"),
    ("svg", {"n": 2}, "n"),
    ("svg", {"stream": True}, "stream"),
    ("svg", {"partial_images": 1}, "partial_images"),
    ("svg", {"output_compression": 80}, "output_compression"),
    ("svg", {"svg": {}}, "svg.model"),
    ("svg", {"svg": {"model": "a", "extra": 1}}, "svg.extra"),
]


@pytest.mark.parametrize(("fmt", "fields", "param"), EXCLUSIONS)
def test_the_spec_exclusions_of_gif_and_svg_name_the_field(
        server: RunningServer, fmt: str, fields: dict[str, Any], param: str) -> None:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "x", "model": "gpt-image-2.5-flare",
                                "output_format": fmt, **fields})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_gif_fields_need_gif(server: RunningServer) -> None:
    for field in ("frame_count", "frame_duration_ms"):
        response = httpx.post(server.v1 + "/images/generations", timeout=30,
                              json={"prompt": "x", "model": "gpt-image-2.5-flare", field: 4})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field


# SVG -------------------------------------------------------------------------------------------
def test_svg_is_a_vector_image_with_paths_and_the_viewbox(client: openai.OpenAI) -> None:
    # A fixed seed: the fake engine's disc takes a random colour, and one near the
    # background's traces into the same single path (it failed CI once).
    response = client.images.generate(prompt="otter", model="gpt-image-2.5-flare",
                                      output_format="svg", size="1536x1024",
                                      svg={"model": "my-author", "reasoning": {"effort": "low"}},
                                      extra_body={"seed": 1})
    assert response.output_format == "svg"
    root = ET.fromstring(decode(images_of(response)[0].b64_json))
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("1536", "1024")
    view_box = [float(v) for v in (root.get("viewBox") or "").split()]
    assert view_box[:2] == [0, 0] and abs(view_box[2] / view_box[3] - 1.5) < 0.01
    assert len(root.findall(f"{SVG}path")) >= 2
    usage = response.svg_usage
    assert usage is not None and usage.model == "my-author" and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_svg_options_need_svg(server: RunningServer) -> None:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "x", "model": "gpt-image-2.5-flare",
                                "svg": {"model": "a"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "svg"


@pytest.mark.parametrize(("fmt", "media_type"), [("gif", "image/gif"),
                                                 ("svg", "image/svg+xml")])
def test_gif_and_svg_as_urls(server: RunningServer, fmt: str, media_type: str) -> None:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "x", "model": "gpt-image-2.5-flare",
                                "output_format": fmt, "response_format": "url",
                                "size": "1024x1024"})
    assert response.status_code == 200, response.text
    download = httpx.get(response.json()["data"][0]["url"])
    assert download.status_code == 200
    assert download.headers["content-type"].startswith(media_type)
    assert download.headers["x-content-type-options"] == "nosniff"
    if fmt == "svg":
        assert "default-src 'none'" in download.headers["content-security-policy"]
        ET.fromstring(download.content)
    else:
        assert frames_of(download.content).n_frames == 9
