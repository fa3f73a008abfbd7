"""POST /v1/images/generations over real HTTP, driven by the official `openai` package."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import openai
import pytest
from conftest import RunningServer, images_of
from conftest import decoded as decode
from PIL import Image

Serve = Callable[..., RunningServer]



@pytest.fixture
def server(serve: Serve) -> RunningServer:
    return serve()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="anything", max_retries=0)


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


# Successful generations ---------------------------------------------------------------------
def test_bare_prompt_is_dall_e_2_with_a_url(client: openai.OpenAI, server: RunningServer) -> None:
    response = client.images.generate(prompt="a cute baby sea otter")
    assert len(images_of(response)) == 1
    item = images_of(response)[0]
    assert item.b64_json is None and item.revised_prompt is None
    assert item.url is not None and item.url.startswith(server.base_url + "/v1/files/images/")
    assert response.usage is None and response.size is None and response.quality is None
    download = httpx.get(item.url)
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(download.content))
    assert image.format == "PNG" and image.size == (1024, 1024) and image.mode == "RGB"


def test_gpt_image_1_defaults(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-1")
    image = decode(images_of(response)[0].b64_json)
    assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")
    assert images_of(response)[0].url is None
    assert (response.size, response.quality, response.background, response.output_format) == (
        "1024x1024", "medium", "opaque", "png")
    usage = response.usage
    assert usage is not None
    assert usage.output_tokens == 32 * 33  # medium: (1024/32) * (1024/32 + 1)
    assert usage.input_tokens == usage.input_tokens_details.text_tokens == 1
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("webp", "WEBP"),
                                                  ("jpeg", "JPEG")])
def test_output_formats_and_sizes(client: openai.OpenAI, fmt: str, pil_format: str) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-1", size="1536x1024",
                                      output_format=fmt, quality="low")  # type: ignore[call-overload]
    image = decode(images_of(response)[0].b64_json)
    assert image.format == pil_format and image.size == (1536, 1024) and image.mode == "RGB"
    assert response.output_format == fmt and response.size == "1536x1024"
    assert response.usage is not None and response.usage.output_tokens == 16 * 25


def test_jpeg_compression_changes_the_bytes(client: openai.OpenAI) -> None:
    sizes = []
    for compression in (10, 95):
        response = client.images.generate(prompt="otter", model="gpt-image-1",
                                          output_format="jpeg", output_compression=compression,
                                          extra_body={"seed": 3})
        b64 = images_of(response)[0].b64_json
        assert b64 is not None
        sizes.append(len(base64.b64decode(b64)))
    assert sizes[0] < sizes[1]


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background_has_real_alpha(client: openai.OpenAI, fmt: str) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-1", background="transparent",
                                      output_format=fmt)  # type: ignore[call-overload]
    image = decode(images_of(response)[0].b64_json)
    assert image.mode == "RGBA"
    alpha = image.getchannel("A")
    low, high = alpha.getextrema()
    assert low == 0 and high == 255
    assert response.background == "transparent"


def test_gpt_image_2_free_size(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-2", size="1536x864")
    image = decode(images_of(response)[0].b64_json)
    assert image.size == (1536, 864)
    assert response.size == "1536x864"


def test_n_images_differ_and_seed_reproduces(client: openai.OpenAI) -> None:
    first = client.images.generate(prompt="otter", model="gpt-image-1", n=3, quality="low",
                                   extra_body={"seed": 42})
    again = client.images.generate(prompt="otter", model="gpt-image-1", n=3, quality="low",
                                   extra_body={"seed": 42})
    pixels = [decode(d.b64_json).tobytes() for d in images_of(first)]
    assert len(set(pixels)) == 3
    assert pixels == [decode(d.b64_json).tobytes() for d in images_of(again)]


def test_dall_e_3_revised_prompt_and_b64(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="dall-e-3", size="1792x1024",
                                      response_format="b64_json", style="natural", quality="hd")
    assert images_of(response)[0].revised_prompt == "otter"
    assert decode(images_of(response)[0].b64_json).size == (1792, 1024)
    assert response.usage is None


def test_url_works_for_gpt_models_as_an_extension(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="otter", model="gpt-image-1", response_format="url",
                                      output_format="webp")
    url = images_of(response)[0].url
    assert url is not None and images_of(response)[0].b64_json is None
    download = httpx.get(url)
    assert download.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(download.content)).format == "WEBP"


def test_nulls_are_omitted_fields(server: RunningServer) -> None:
    body = {"prompt": "otter", "model": None, "n": None, "size": None, "quality": None,
            "response_format": None, "style": None, "background": None, "stream": None}
    response = httpx.post(server.v1 + "/images/generations", json=body, timeout=30)
    assert response.status_code == 200
    assert "url" in response.json()["data"][0]


def test_path_without_v1_is_served(server: RunningServer) -> None:
    response = httpx.post(server.base_url + "/images/generations",
                          json={"prompt": "otter", "model": "gpt-image-1"}, timeout=30)
    assert response.status_code == 200
    assert decode(response.json()["data"][0]["b64_json"]).size == (1024, 1024)


async def test_async_client(server: RunningServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.v1, api_key="k", max_retries=0)
    response = await client.images.generate(prompt="otter", model="gpt-image-1-mini",
                                            size="1024x1536")
    assert decode(images_of(response)[0].b64_json).size == (1024, 1536)
    await client.close()


# Errors: exact bodies -----------------------------------------------------------------------
def post(server: RunningServer, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(server.v1 + "/images/generations", json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"prompt": "x", "model": "gpt-image-1", "response_format": "b64_json", "bogus": 1}, 400,
     {"message": "Unknown parameter: 'bogus'.", "type": "invalid_request_error",
      "param": "bogus", "code": "unknown_parameter"}),
    ({"model": "gpt-image-1"}, 400,
     {"message": "Missing required parameter: 'prompt'.", "type": "invalid_request_error",
      "param": "prompt", "code": "missing_required_parameter"}),
    ({"prompt": "x", "n": "2"}, 400,
     {"message": "Invalid type for 'n': expected an integer, but got a string instead.",
      "type": "invalid_request_error", "param": "n", "code": "invalid_type"}),
    ({"prompt": "x", "n": 2.0}, 400,
     {"message": "Invalid type for 'n': expected an integer, but got a decimal number instead.",
      "type": "invalid_request_error", "param": "n", "code": "invalid_type"}),
    ({"prompt": "x", "n": 11}, 400,
     {"message": "Invalid 'n': integer above maximum value. Expected a value <= 10, but got 11 "
                 "instead.", "type": "invalid_request_error", "param": "n",
      "code": "integer_above_max_value"}),
    ({"prompt": "x", "n": 0}, 400,
     {"message": "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 "
                 "instead.", "type": "invalid_request_error", "param": "n",
      "code": "integer_below_min_value"}),
    ({"prompt": "x", "model": "dall-e-3", "n": 2}, 400,
     {"message": "Invalid 'n': integer above maximum value. Expected a value <= 1, but got 2 "
                 "instead.", "type": "invalid_request_error", "param": "n",
      "code": "integer_above_max_value"}),
    ({"prompt": "x" * 1001}, 400,
     {"message": "Invalid 'prompt': string too long. Expected a string with maximum length "
                 "1000, but got a string with length 1001 instead.",
      "type": "invalid_request_error", "param": "prompt", "code": "string_above_max_length"}),
    ({"prompt": "x", "model": "no-such-model"}, 404,
     {"message": "The model `no-such-model` does not exist or you do not have access to it.",
      "type": "invalid_request_error", "param": None, "code": "model_not_found"}),
    ({"prompt": "x", "model": "gpt-image-2", "background": "transparent"}, 400,
     {"message": "Transparent background is not supported for this model.",
      "type": "invalid_request_error", "param": "background", "code": "invalid_value"}),
    ({"prompt": "x", "model": "gpt-image-1", "size": "1254x836"}, 400,
     {"message": "Invalid value: '1254x836'. Supported values are: '1024x1024', '1024x1536', "
                 "'1536x1024', and 'auto'.", "type": "invalid_request_error", "param": "size",
      "code": "invalid_value"}),
    ({"prompt": "x", "model": "gpt-image-2", "size": "1792x936"}, 400,
     {"message": "Invalid size '1792x936'. Width and height must both be divisible by 16.",
      "type": "invalid_request_error", "param": "size", "code": "invalid_size"}),
    ({"prompt": "x", "model": "dall-e-3", "size": "512x512"}, 400,
     {"message": "Invalid value: '512x512'. Supported values are: '1024x1024', '1792x1024', "
                 "and '1024x1792'.", "type": "invalid_request_error", "param": "size",
      "code": "invalid_size"}),
    ({"prompt": "x", "model": "gpt-image-1", "quality": "hd"}, 400,
     {"message": "Invalid value: 'hd'. Supported values are: 'low', 'medium', 'high', and "
                 "'auto'.", "type": "invalid_request_error", "param": "quality",
      "code": "invalid_value"}),
    ({"prompt": "x", "model": "gpt-image-1", "style": "vivid"}, 400,
     {"message": "Unsupported parameter: 'style' is not supported with the model "
                 "'gpt-image-1'.", "type": "invalid_request_error", "param": "style",
      "code": "unsupported_parameter"}),
    ({"prompt": "x", "model": "dall-e-2", "stream": True}, 400,
     {"message": "Unsupported parameter: 'stream' is not supported with the model 'dall-e-2'.",
      "type": "invalid_request_error", "param": "stream", "code": "unsupported_parameter"}),
    ({"prompt": "x", "model": "gpt-image-1", "background": "transparent",
      "output_format": "jpeg"}, 400,
     {"message": "Transparent background requires output_format 'png' or 'webp'; 'jpeg' has no "
                 "alpha channel.", "type": "invalid_request_error", "param": "background",
      "code": "invalid_value"}),
    ({"prompt": "x", "model": "gpt-image-1", "output_compression": 101}, 400,
     {"message": "Invalid 'output_compression': integer above maximum value. Expected a value "
                 "<= 100, but got 101 instead.", "type": "invalid_request_error",
      "param": "output_compression", "code": "integer_above_max_value"}),
    ({"prompt": "x", "model": "gpt-image-1", "partial_images": 4, "stream": True}, 400,
     {"message": "Invalid 'partial_images': expected an integer between 0 and 3, but got 4 "
                 "instead.", "type": "invalid_request_error", "param": "partial_images",
      "code": "invalid_value"}),
    ({"prompt": "an otter\u0000", "model": "gpt-image-1"}, 400,
     {"message": "Invalid 'prompt': it contains control characters (such as NUL); only "
                 "printable text, tabs and newlines are accepted.",
      "type": "invalid_request_error", "param": "prompt", "code": "invalid_value"}),
    ({"prompt": "x", "user": "u" * 513}, 400,
     {"message": "Invalid 'user': string too long. Expected a string with maximum length 512, "
                 "but got a string with length 513 instead.", "type": "invalid_request_error",
      "param": "user", "code": "string_above_max_length"}),
    ({"prompt": "x", "n": True}, 400,
     {"message": "Invalid type for 'n': expected an integer, but got a boolean instead.",
      "type": "invalid_request_error", "param": "n", "code": "invalid_type"}),
    ({"prompt": "x", "model": "gpt-image-1", "output_format": "bmp"}, 400,
     {"message": "Invalid value: 'bmp'. Supported values are: 'png', 'jpeg', 'webp', 'gif', "
                 "and 'svg'.",
      "type": "invalid_request_error", "param": "output_format", "code": "invalid_value"}),
])
def test_error_bodies(server: RunningServer, body: object, status: int,
                      expected: dict[str, object]) -> None:
    response = post(server, body)
    assert response.status_code == status
    assert error_of(response) == expected
    assert response.headers["x-request-id"].startswith("req_")


def test_emoji_and_right_to_left_prompts_are_fine(server: RunningServer) -> None:
    for prompt in ("🦦 otter", "قطة لطيفة", "a cat\twith\nnewlines"):
        response = post(server, {"prompt": prompt, "model": "gpt-image-1"})
        assert response.status_code == 200, response.text


def test_gpt_only_parameter_selects_a_gpt_model(server: RunningServer) -> None:
    response = post(server, {"prompt": "x", "output_format": "webp"})
    assert response.status_code == 200
    body = response.json()
    assert body["output_format"] == "webp" and "usage" in body
    assert decode(body["data"][0]["b64_json"]).format == "WEBP"


def test_dall_e_2_rejects_gpt_parameters(server: RunningServer) -> None:
    response = post(server, {"prompt": "x", "model": "dall-e-2", "background": "opaque"})
    assert response.status_code == 400
    assert error_of(response)["param"] == "background"
    assert error_of(response)["code"] == "unsupported_parameter"


@pytest.mark.parametrize(("size", "ok"), [("2880x2880", True), ("1024x576", False),
                                          ("3840x1280", True), ("4096x1024", False),
                                          ("1024x3072", True), ("1024x3088", False),
                                          ("1024x1024x3", False), (" 1024x1024", False)])
def test_gpt_image_2_size_rules(server: RunningServer, size: str, ok: bool) -> None:
    if ok:
        # Validation only: the fake engine draws 64 px and imaging scales; keep it cheap.
        response = post(server, {"prompt": "x", "model": "gpt-image-2", "size": size,
                                 "output_format": "jpeg", "output_compression": 10})
        assert response.status_code == 200, response.text
        width, height = map(int, size.split("x"))
        assert decode(response.json()["data"][0]["b64_json"]).size == (width, height)
    else:
        response = post(server, {"prompt": "x", "model": "gpt-image-2", "size": size})
        assert response.status_code == 400
        assert error_of(response)["param"] == "size"


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="x", model="gpt-image-1", n=20)
    assert caught.value.code == "integer_above_max_value"
    assert caught.value.param == "n"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="dall-e-9")


@pytest.mark.parametrize(("raw", "content_type", "status", "code"), [
    (b"", "application/json", 400, "invalid_json"),
    (b"{not json", "application/json", 400, "invalid_json"),
    (b"[1, 2]", "application/json", 400, "invalid_json"),
    (b'{"prompt": "a", "prompt": "b"}', "application/json", 400, "invalid_json"),
    (b'{"prompt": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    (b'{"prompt": "x"}', "text/plain", 415, "unsupported_content_type"),
    (b'{"prompt": "' + b"x" * 2_000_000 + b'"}', "application/json", 413, "request_too_large"),
])
def test_malformed_bodies(server: RunningServer, raw: bytes, content_type: str, status: int,
                          code: str) -> None:
    response = httpx.post(server.v1 + "/images/generations", content=raw,
                          headers={"content-type": content_type}, timeout=30)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert httpx.get(server.base_url + "/healthz").status_code == 200


def test_unknown_route_is_an_envelope(server: RunningServer) -> None:
    response = httpx.get(server.v1 + "/nothing-here")
    assert response.status_code == 404
    assert error_of(response) == {"message": "Invalid URL (GET /v1/nothing-here)",
                                  "type": "invalid_request_error", "param": None, "code": None}


# Moderation ---------------------------------------------------------------------------------
def test_moderation_blocks_and_low_is_less_strict(server: RunningServer) -> None:
    blocked = post(server, {"prompt": "a gory dismembered body", "model": "gpt-image-1"})
    assert blocked.status_code == 400
    error = error_of(blocked)
    assert error["code"] == "moderation_blocked"
    assert error["type"] == "image_generation_user_error" and error["param"] is None
    assert error["moderation_details"] == {"moderation_stage": "input",
                                           "categories": ["violence/graphic"]}
    assert "safety_violations=[violence/graphic]" in str(error["message"])
    allowed = post(server, {"prompt": "a gory dismembered body", "model": "gpt-image-1",
                            "moderation": "low"})
    assert allowed.status_code == 200
    dalle = post(server, {"prompt": "a gory dismembered body"})
    assert error_of(dalle)["code"] == "content_policy_violation"


def test_moderation_can_be_switched_off(serve: Callable[..., RunningServer]) -> None:
    server = serve(moderation=False)
    assert post(server, {"prompt": "gory", "model": "gpt-image-1"}).status_code == 200


# Models, health, auth -----------------------------------------------------------------------
def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    for name in ("dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5",
                 "gpt-image-2", "gpt-image-2-2026-04-21", "chatgpt-image-latest", "fake"):
        assert name in ids
    model = client.models.retrieve("gpt-image-2")
    assert model.id == "gpt-image-2" and model.object == "model" and model.owned_by == "limner"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_auth(serve: Callable[..., RunningServer]) -> None:
    server = serve(api_keys=("sk-right", "sk-other"))
    good = openai.OpenAI(base_url=server.v1, api_key="sk-other", max_retries=0)
    assert good.images.generate(prompt="x", model="gpt-image-1").data
    bad = openai.OpenAI(base_url=server.v1, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.images.generate(prompt="x")
    assert caught.value.code == "invalid_api_key"
    missing = httpx.get(server.v1 + "/models")
    assert missing.status_code == 401
    assert error_of(missing)["code"] == "invalid_api_key"
    assert "sk-wrong" not in caught.value.message
    assert httpx.get(server.base_url + "/healthz").status_code == 200


def test_healthz_reports_the_default_model(server: RunningServer) -> None:
    body = httpx.get(server.base_url + "/healthz").json()
    assert body["status"] == "ok" and body["default_model"] == "fake"


# Signed URLs --------------------------------------------------------------------------------
def test_signed_urls_tamper_and_expiry(client: openai.OpenAI, server: RunningServer) -> None:
    url = images_of(client.images.generate(prompt="otter"))[0].url
    assert url is not None
    assert httpx.get(url).status_code == 200
    path, query = url.split("?")
    params = dict(pair.split("=") for pair in query.split("&"))
    forged_sig = params["signature"][:-1] + ("0" if params["signature"][-1] != "0" else "1")
    tampered = httpx.get(f"{path}?expires={params['expires']}&signature={forged_sig}")
    assert tampered.status_code == 403
    assert error_of(tampered)["code"] == "invalid_signature"
    later = int(params["expires"]) + 3600
    extended = httpx.get(f"{path}?expires={later}&signature={params['signature']}")
    assert extended.status_code == 403
    other_name = path.rsplit("/", 1)[0] + "/img_" + "A" * 32 + ".png"
    assert httpx.get(f"{other_name}?{query}").status_code == 403
    assert httpx.get(path).status_code == 403
    server.clock.advance(3601)
    expired = httpx.get(url)
    assert expired.status_code == 410
    assert error_of(expired)["code"] == "expired"
    store = server.app.state.limner.delivery.store
    assert store.sweep() == 1
    assert list(store.root.iterdir()) == []


def test_public_base_url(serve: Callable[..., RunningServer]) -> None:
    server = serve(public_base_url="https://images.example.com/")
    response = post(server, {"prompt": "x"})
    assert response.json()["data"][0]["url"].startswith(
        "https://images.example.com/v1/files/images/img_")


# Streaming ----------------------------------------------------------------------------------
def test_stream_with_partial_images(client: openai.OpenAI) -> None:
    stream = client.images.generate(prompt="otter", model="gpt-image-1", stream=True,
                                    partial_images=2, size="1024x1536", output_format="webp")
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image", "image_generation.partial_image",
                     "image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    for event in events:
        image = decode(event.b64_json)
        assert image.format == "WEBP" and image.size == (1024, 1536)
        assert event.size == "1024x1536" and event.output_format == "webp"
    completed = events[-1]
    assert completed.usage.output_tokens == 48 * 33 + 200  # type: ignore[union-attr]


def test_stream_partials_are_intermediate_states(client: openai.OpenAI) -> None:
    events = list(client.images.generate(prompt="otter", model="gpt-image-1", stream=True,
                                         partial_images=1, quality="high",
                                         background="transparent"))
    partial, final = decode(events[0].b64_json), decode(events[-1].b64_json)
    assert partial.mode == final.mode == "RGBA"
    # The fake engine's disc grows with each step: the partial covers fewer pixels.
    def covered(image: Image.Image) -> int:
        return int((np.asarray(image.getchannel("A")) > 128).sum())
    assert covered(partial) < covered(final)


def test_stream_zero_partials_is_one_event(server: RunningServer) -> None:
    with httpx.stream("POST", server.v1 + "/images/generations", timeout=30,
                      json={"prompt": "x", "model": "gpt-image-1", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    blocks = [b for b in raw.split("\n\n") if b and not b.startswith(":")]
    assert len(blocks) == 1 and raw.endswith("\n\n")
    event_line, data_line = blocks[0].split("\n")
    assert event_line == "event: image_generation.completed"
    payload = json.loads(data_line.removeprefix("data: "))
    assert "error" not in payload
    assert set(payload) == {"type", "b64_json", "created_at", "size", "quality", "background",
                            "output_format", "usage"}
    assert set(payload["usage"]) == {"input_tokens", "output_tokens", "total_tokens",
                                     "input_tokens_details"}


def test_stream_with_n_greater_than_one(client: openai.OpenAI) -> None:
    events = list(client.images.generate(prompt="otter", model="gpt-image-1", stream=True,
                                         n=2, partial_images=1))
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 2
    assert kinds[-2:] == ["image_generation.completed", "image_generation.completed"]
    assert decode(events[-1].b64_json).tobytes() != decode(events[-2].b64_json).tobytes()


def test_invalid_stream_request_is_plain_json(server: RunningServer) -> None:
    response = post(server, {"prompt": "x", "model": "gpt-image-1", "stream": True,
                             "size": "7x7"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")


async def test_async_stream(server: RunningServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.v1, api_key="k", max_retries=0)
    stream = await client.images.generate(prompt="otter", model="gpt-image-1.5", stream=True,
                                          partial_images=3)
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "image_generation.completed"
    assert 1 <= kinds.count("image_generation.partial_image") <= 3
    await client.close()
