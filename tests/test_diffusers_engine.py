"""DiffusersEngine on a tiny random-weight Stable Diffusion pipeline saved to a temp folder."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import torch
from conftest import RunningServer
from PIL import Image
from tiny_pipeline import build_tiny_sd

from limner.engines.base import Engine, EngineError
from limner.engines.diffusers import DiffusersEngine
from limner.jobs import GenerationCancelled, GenerationParams, StepUpdate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("pipelines"))


@pytest.fixture(scope="module")
def engine(tiny_sd: Path) -> DiffusersEngine:
    engine = DiffusersEngine(str(tiny_sd), dtype="float32", threads=1)
    engine.load()
    return engine


def request(n: int = 1, seed: int = 0, width: int = 64, height: int = 64) -> GenerationParams:
    return GenerationParams(prompt="a red fox", width=width, height=height,
                            seeds=tuple(range(seed, seed + n)), quality="high")


def test_it_is_an_engine(engine: DiffusersEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.info.native_width == 64 and not engine.info.draws_alpha


def test_generate_batch_with_steps_and_previews(engine: DiffusersEngine) -> None:
    updates: list[tuple[int, int, list[list[Image.Image]]]] = []

    def on_step(update: StepUpdate) -> None:
        updates.append((update.step, update.total, update.preview()))

    out = engine.generate([request(n=2), request(n=1, seed=7)], on_step)
    assert [len(images) for images in out] == [2, 1]
    assert all(im.mode == "RGB" and im.size == (64, 64) for images in out for im in images)
    assert [(s, t) for s, t, _ in updates] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [len(p) for p in updates[0][2]] == [2, 1]
    assert out[0][0].tobytes() != out[0][1].tobytes()


def test_seeds_reproduce(engine: DiffusersEngine) -> None:
    first = engine.generate([request(seed=5)])[0][0]
    again = engine.generate([request(seed=5)])[0][0]
    assert first.tobytes() == again.tobytes()


def test_cancel_skips_the_rest(engine: DiffusersEngine) -> None:
    steps: list[int] = []

    def on_step(update: StepUpdate) -> None:
        steps.append(update.step)
        if update.step == 2:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate([request()], on_step)
    assert steps == [1, 2]


def test_aspect_ratio_is_kept_on_the_draw_grid(engine: DiffusersEngine) -> None:
    out = engine.generate([request(width=1536, height=1024)])[0][0]
    assert out.size == (64, 64) or out.size[0] > out.size[1]


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="could not load"):
        DiffusersEngine(str(tmp_path / "nothing-here"), dtype="float32").load()


def test_served_end_to_end(serve: Callable[..., RunningServer], tiny_sd: Path) -> None:
    engine = DiffusersEngine(str(tiny_sd), name="tiny-sd", dtype="float32", threads=1)
    server = serve(engines={"tiny-sd": engine})
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    response = client.images.generate(prompt="a fox", model="gpt-image-1", size="1024x1536",
                                      background="transparent", quality="low")
    assert response.data[0].b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json)))
    assert image.size == (1024, 1536) and image.mode == "RGBA"
    events = list(client.images.generate(prompt="a fox", model="tiny-sd", stream=True,
                                         partial_images=2, quality="high"))
    assert [e.type for e in events].count("image_generation.partial_image") == 2
