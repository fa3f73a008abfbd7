"""json_body: an answer's JSON bytes with its base64 spliced in, byte for byte pydantic's."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import BaseModel

from limner.protocol.events import ImageGenCompletedEvent, ImageGenPartialImageEvent
from limner.protocol.images import (
    Image,
    ImageGenUsage,
    ImagesResponse,
    ImagesUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from limner.protocol.json_body import json_body

PNG = base64.b64encode(bytes(range(256)) * 300).decode()
TRICKY = 'a "b64_json":"" prompt, \\ quoted, ü, \u2028, \x01'
USAGE = ImagesUsage(input_tokens=5, total_tokens=277, output_tokens=272,
                    input_tokens_details=InputTokensDetails(text_tokens=5, image_tokens=0))


def responses() -> list[BaseModel]:
    gpt_usage = ImageGenUsage(**USAGE.model_dump(), output_tokens_details=OutputTokensDetails(
        image_tokens=272, text_tokens=0))
    return [
        ImagesResponse(created=1, data=[Image(b64_json=PNG)]),
        ImagesResponse(created=2, data=[Image(b64_json=PNG, revised_prompt=TRICKY),
                                        Image(b64_json="QUJD", revised_prompt=TRICKY),
                                        Image(b64_json="")],
                       background="opaque", output_format="png", size="1024x1024",
                       quality="low", usage=gpt_usage),
        ImagesResponse(created=3, data=[Image(url="http://127.0.0.1/x?sig=1")]),
        ImagesResponse(created=4, data=[]),
        ImageGenPartialImageEvent(b64_json=PNG, created_at=5, size="1024x1024",
                                  quality="low", background="auto", output_format="png",
                                  partial_image_index=0),
        ImageGenCompletedEvent(b64_json=PNG, created_at=6, size="1024x1024", quality="low",
                               background="auto", output_format="png", usage=USAGE),
        USAGE,
    ]


@pytest.mark.parametrize("index", range(len(responses())))
@pytest.mark.parametrize("exclude_none", [True, False])
def test_the_same_bytes_as_pydantic(index: int, exclude_none: bool) -> None:
    model = responses()[index]
    body = json_body(model, exclude_none=exclude_none)
    assert body == model.model_dump_json(exclude_none=exclude_none).encode()
    assert isinstance(body, bytes)
    decoded = json.loads(body)
    if isinstance(model, ImagesResponse) and model.data and model.data[0].b64_json:
        assert base64.b64decode(decoded["data"][0]["b64_json"]) == base64.b64decode(PNG)


def test_the_model_itself_is_left_as_it_was() -> None:
    response = ImagesResponse(created=1, data=[Image(b64_json=PNG, revised_prompt="x")])
    json_body(response)
    assert response.data[0].b64_json == PNG and response.data[0].revised_prompt == "x"


@pytest.mark.parametrize("payload", ['QU"JD', "QU\\JD", "QUJDü"])
def test_a_payload_that_is_not_base64_is_escaped_by_pydantic(payload: str) -> None:
    for model in (ImagesResponse(created=1, data=[Image(b64_json=payload)]),
                  ImageGenPartialImageEvent(b64_json=payload, created_at=5, size="auto",
                                            quality="low", background="auto",
                                            output_format="png", partial_image_index=0)):
        body = json_body(model, exclude_none=True)
        assert body == model.model_dump_json(exclude_none=True).encode()
        assert json.loads(body)["data" if isinstance(model, ImagesResponse) else "b64_json"]
