"""The sampling extensions (`steps`, `guidance_scale`, `negative_prompt`, `scheduler`): each
honoured by the engines that can, refused with a 400 naming it by the others."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import RunningServer, running_server

from limner.engines.diffusers.engine import DiffusersEngine
from limner.engines.embedded import EmbeddedEngine
from limner.engines.fake import FakeEngine
from limner.testing.tiny_pipeline import build_tiny_sd

Serve = Callable[..., RunningServer]


def draw(server: RunningServer, model: str, **fields: Any) -> np.ndarray:
    from PIL import Image

    response = httpx.post(server.v1 + "/images/generations", timeout=120,
                          json={"prompt": "a red fox", "model": model, "seed": 7,
                                "size": "256x256", "quality": "low", **fields})
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def refused(server: RunningServer, model: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "a red fox", "model": model, **fields})
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_steps_override_the_quality(serve: Serve) -> None:
    engine = FakeEngine()
    server = serve(engines={"fake": engine})
    before = engine.steps_run
    draw(server, "fake", steps=3)
    assert engine.steps_run - before == 3
    error = refused(server, "fake", steps=65)
    assert (error["param"], error["code"]) == ("steps", "integer_above_max_value")
    error = refused(server, "fake", steps=0)
    assert (error["param"], error["code"]) == ("steps", "invalid_value")


@pytest.mark.parametrize(("field", "value"), [("negative_prompt", "blue"),
                                              ("guidance_scale", 5.0),
                                              ("scheduler", "euler")])
def test_an_engine_without_a_control_refuses_it_by_name(serve: Serve, field: str,
                                                        value: object) -> None:
    server = serve(engines={"fake": FakeEngine()})
    error = refused(server, "fake", **{field: value})
    assert (error["param"], error["code"]) == (field, "unsupported_parameter")
    assert "not supported by the engine that draws 'fake'" in error["message"]


@pytest.mark.parametrize(("fields", "param"), [
    ({"scheduler": "bogus"}, "scheduler"),
    ({"guidance_scale": 31}, "guidance_scale"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"guidance_scale": "5"}, "guidance_scale"),
    ({"negative_prompt": 5}, "negative_prompt"),
    ({"negative_prompt": "a\x00b"}, "negative_prompt"),
])
def test_out_of_range_values_are_400s(serve: Serve, fields: dict[str, Any], param: str) -> None:
    server = serve(engines={"fake": FakeEngine()})
    assert refused(server, "fake", **fields)["param"] == param


def test_the_embedded_model_takes_guidance(serve: Serve) -> None:
    server = serve(engines={"emoji": EmbeddedEngine(threads=1)})
    plain = draw(server, "emoji")
    assert np.array_equal(plain, draw(server, "emoji", guidance_scale=3.0))  # its default
    assert not np.array_equal(plain, draw(server, "emoji", guidance_scale=8.0))
    assert refused(server, "emoji", negative_prompt="blue")["param"] == "negative_prompt"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = build_tiny_sd(tmp_path_factory.mktemp("tiny"))
    engine = DiffusersEngine(str(folder), name="tiny", dtype="float32", threads=1)
    with running_server(tmp_path_factory.mktemp("data"), {"tiny": engine}) as server:
        yield server


def test_diffusers_takes_every_control(tiny: RunningServer) -> None:
    plain = draw(tiny, "tiny")
    guided = draw(tiny, "tiny", guidance_scale=5.0)
    assert not np.array_equal(plain, guided)
    negative = draw(tiny, "tiny", guidance_scale=5.0, negative_prompt="blue water")
    assert not np.array_equal(guided, negative)
    assert np.array_equal(negative, draw(tiny, "tiny", guidance_scale=5.0,
                                         negative_prompt="blue water"))
    assert not np.array_equal(draw(tiny, "tiny", steps=3), draw(tiny, "tiny", steps=4))
    assert not np.array_equal(plain, draw(tiny, "tiny", scheduler="ddim"))
    assert np.array_equal(plain, draw(tiny, "tiny")), "the pipeline's own sampler is back"
    assert refused(tiny, "tiny", steps=101)["code"] == "integer_above_max_value"


def test_the_cli_takes_the_controls_as_flags(tiny: RunningServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from limner.cli import main

    result = CliRunner().invoke(main, [
        "images", "generate", "--base-url", tiny.v1, "--prompt", "a fox", "--model", "tiny",
        "--size", "256x256", "--steps", "2", "--guidance-scale", "4.5", "--negative-prompt",
        "rain", "--scheduler", "euler_a", "-o", str(tmp_path / "fox")])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "fox.png").exists()
