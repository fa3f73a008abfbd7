"""LoRA adapters as a client meets them: a real server built from its config, serving a tiny
random-weight Stable Diffusion folder (as `save_pretrained` writes it) with adapters in
`DATA_DIR/loras/`, asked through the official `openai` SDK's `extra_body`. Pixels change with
an adapter and not at scale 0, two adapters in flight each draw their own, an unknown name
and another family's LoRA are 400s naming `lora`, a static adapter and an OpenAI name that
carries one draw it for unmodified clients, and `/v1/models` lists what each model takes.
Unloading the model gives its memory back."""

from __future__ import annotations

import base64
import gc
import io
import shutil
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from conftest import RunningServer
from PIL import Image

from limner.config import EngineConfig
from limner.testing.families import build_family
from limner.testing.loras import make_lora

pytestmark = pytest.mark.slow
TINY = {"dtype": "float32", "native_size": 64, "threads": 1,
        "steps": {"low": 2, "medium": 2, "high": 2}}
"""Every draw 64 px in 2 steps, on the plain torch path in float32."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora-server")
    sd15, sdxl = build_family("sd15", root), build_family("sdxl", root)
    return {"sd15": sd15, "ink": make_lora(sd15, root / "ink", 1),
            "paper": make_lora(sd15, root / "paper", 2),
            "xl-style": make_lora(sdxl, root / "xl-style", 3)}


@pytest.fixture
def server(serve: Callable[..., RunningServer], models: dict[str, Path],
           tmp_path: Path) -> RunningServer:
    data = tmp_path / "data"
    for name in ("ink", "paper", "xl-style"):
        shutil.copytree(models[name], data / "loras" / name)
    sd15 = str(models["sd15"])
    return serve(data_dir=data, tables=(
        EngineConfig("sd15", "diffusers", sd15, {**TINY, "request_loras": True}),
        EngineConfig("sd15-ink", "diffusers", sd15,
                     {**TINY, "backend": "torch", "loras": [{"name": "ink"}]}),
    ), models={"dall-e-3": {"engine": "sd15", "lora": [{"name": "paper"}]}})


def client_for(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="anything", max_retries=0, timeout=300)


def draw(server: RunningServer, lora: Any = None, model: str = "sd15") -> np.ndarray:
    extra: dict[str, Any] = {"seed": 7}
    if lora is not None:
        extra["lora"] = lora
    result = client_for(server).images.generate(model=model, prompt="a red fox", size="1024x1024",
                                                 response_format="b64_json",
                                                 extra_body=extra)
    assert result.data and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert (image.format, image.mode) == ("PNG", "RGB")
    return np.asarray(image, dtype=np.int16)


def refusal(server: RunningServer, lora: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        draw(server, lora)
    body: dict[str, Any] = caught.value.response.json()  # the whole envelope, as sent
    return body


def test_an_adapter_changes_the_pixels_and_scale_zero_does_not(server: RunningServer) -> None:
    base = draw(server)
    ink = draw(server, [{"name": "ink", "scale": 1.0}])
    assert np.abs(ink - base).mean() > 1
    assert np.array_equal(draw(server, [{"name": "ink", "scale": 0}]), base)
    assert np.array_equal(draw(server, {"name": "ink"}), ink)  # one object, scale 1
    half = draw(server, [{"name": "ink", "scale": 0.5}])
    assert not np.array_equal(half, ink) and not np.array_equal(half, base)
    assert np.array_equal(draw(server), base)  # and back: no adapter left active


def test_two_adapters_in_flight_each_draw_their_own(server: RunningServer) -> None:
    alone = {name: draw(server, [{"name": name}]) for name in ("ink", "paper")}
    assert not np.array_equal(alone["ink"], alone["paper"])
    with ThreadPoolExecutor(4) as pool:
        names = ["ink", "paper", "ink", "paper"]
        drawn = list(pool.map(lambda name: draw(server, [{"name": name}]), names))
    for name, image in zip(names, drawn, strict=True):
        assert np.array_equal(image, alone[name]), name


def test_an_unknown_adapter_is_a_400_naming_lora(server: RunningServer) -> None:
    assert refusal(server, [{"name": "nope"}]) == {"error": {
        "message": "Invalid 'lora': the server has no adapter named 'nope'. Offered: ink, "
                   "paper, xl-style.",
        "type": "invalid_request_error", "param": "lora", "code": "lora_not_found"}}


def test_another_familys_adapter_is_a_400_not_a_crash(server: RunningServer) -> None:
    error = refusal(server, [{"name": "xl-style"}])["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "lora", "lora_mismatch", "invalid_request_error")
    assert error["message"].startswith(
        "Invalid 'lora': the adapter 'xl-style' does not fit the model 'sd15': ")
    assert draw(server).shape == (1024, 1024, 3)  # the model still draws


def test_static_adapters_and_names_that_carry_them(server: RunningServer) -> None:
    ink, paper = draw(server, [{"name": "ink"}]), draw(server, [{"name": "paper"}])
    fused = draw(server, model="sd15-ink")  # merged into the weights at load
    assert np.abs(fused - ink).mean() < 1.5 and np.abs(fused - draw(server)).mean() > 1
    assert np.array_equal(draw(server, model="dall-e-3"), paper)  # an OpenAI name's style
    # The request's own adapter adds to the name's: naming it again sets its scale.
    assert np.array_equal(draw(server, [{"name": "paper", "scale": 0}], model="dall-e-3"),
                          draw(server))
    with pytest.raises(openai.BadRequestError) as caught:
        draw(server, [{"name": "paper"}], model="sd15-ink")
    assert caught.value.code == "unsupported_parameter"


def test_models_list_what_each_takes(server: RunningServer) -> None:
    listed = {entry["id"]: entry for entry in
              httpx.get(server.v1 + "/models").json()["data"]}
    assert listed["sd15"]["adapters"] == ["ink", "paper"]  # not the SDXL one
    assert listed["sd15-ink"]["adapters"] == []
    assert listed["dall-e-3"]["lora"] == [{"name": "paper", "scale": 1.0}]


def test_unloading_gives_the_memory_back(server: RunningServer) -> None:
    draw(server)
    engine = server.app.state.limner.schedulers["sd15"].engine
    assert engine.memory()["cpu"] > 1_000_000
    pipe = weakref.ref(engine.pipe)
    answer = httpx.post(server.v1 + "/models/sd15/unload", timeout=60)
    assert answer.status_code == 200, answer.text
    gc.collect()
    assert (engine.memory(), pipe()) == ({}, None)
    assert httpx.get(server.v1 + "/models/sd15").json()["status"] == "unloaded"
    assert draw(server).shape == (1024, 1024, 3)  # and loads again when asked
