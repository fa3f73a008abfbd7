"""Seeds as the README documents them: image `i` of a request with `seed` is the picture a lone
request with `seed + i` draws, on every engine, through the real server."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import RunningServer
from PIL import Image

from limner.engines.base import Engine
from limner.engines.diffusers import DiffusersEngine
from limner.engines.embedded import EmbeddedEngine
from limner.engines.fake import FakeEngine
from limner.testing.tiny_pipeline import build_tiny_sd


def pictures(server: RunningServer, model: str, n: int, seed: int) -> list[np.ndarray]:
    body = {"prompt": "a red fox in the snow", "model": model, "n": n, "seed": seed,
            "size": "256x256", "quality": "low"}
    response = httpx.post(server.v1 + "/images/generations", json=body, timeout=300)
    assert response.status_code == 200, response.text
    decoded = []
    for item in response.json()["data"]:
        image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert (image.format, image.size) == ("PNG", (256, 256))
        decoded.append(np.asarray(image.convert("RGBA")))
    return decoded


def fake() -> Engine:
    return FakeEngine()


def embedded() -> Engine:
    engine: Engine = EmbeddedEngine(threads=1)
    return engine


def diffusers(tmp_path: Path) -> Engine:
    engine: Engine = DiffusersEngine(str(build_tiny_sd(tmp_path)), dtype="float32", threads=1)
    return engine


@pytest.mark.parametrize("make", [fake, embedded, diffusers], ids=["fake", "embedded",
                                                                    "diffusers"])
def test_image_i_of_n_is_the_lone_request_with_seed_plus_i(
        make: Callable[..., Engine], serve: Callable[..., RunningServer],
        tmp_path: Path) -> None:
    engine = make(tmp_path) if make is diffusers else make()
    server = serve(engines={"local": engine})
    three = pictures(server, "local", 3, 500)
    assert len(three) == 3
    assert not np.array_equal(three[0], three[1]), "different seeds draw different pictures"
    for i, picture in enumerate(three):
        lone = pictures(server, "local", 1, 500 + i)[0]
        assert np.array_equal(picture, lone), f"image {i} of n=3 differs from seed {500 + i}"
