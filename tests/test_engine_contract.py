"""The `Engine` contract (engines/base.py), which every engine passes: the fake one, the
embedded model and a tiny random-weight diffusers pipeline. One list of `n` images per
request in seed order, the same seeds the same pictures, every step reported in order,
previews of every image, and a stop before the decode when a step callback cancels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from limner.engines.base import Engine
from limner.jobs import GenerationCancelled, GenerationParams, StepUpdate
from limner.testing.tiny_pipeline import build_tiny_sd


def fake(tmp: Path) -> Engine:
    from limner.engines.fake import FakeEngine

    return FakeEngine()


def embedded(tmp: Path) -> Engine:
    from limner.engines.embedded import EmbeddedEngine

    return EmbeddedEngine(threads=1)


def diffusers(tmp: Path) -> Engine:
    from limner.engines.diffusers.engine import DiffusersEngine

    return DiffusersEngine(str(build_tiny_sd(tmp)), dtype="float32", threads=1)


@pytest.fixture(scope="module", params=[fake, embedded, diffusers],
                ids=["fake", "embedded", "diffusers"])
def engine(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    make: Callable[[Path], Engine] = request.param
    built = make(tmp_path_factory.mktemp("engine"))
    built.load()
    yield built
    built.close()


def params(n: int, seed: int, steps: int | None = None, size: int = 256) -> GenerationParams:
    return GenerationParams(prompt="a red fox", width=size, height=size,
                            seeds=tuple(range(seed, seed + n)), quality="low", steps=steps)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"))


def test_it_is_an_engine_that_describes_itself(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    info = engine.info
    assert info.name and info.native_width > 0 and info.native_height > 0
    assert info.max_batch_images >= 1


def test_one_list_of_n_images_per_request_in_seed_order(engine: Engine) -> None:
    drawn = engine.generate([params(2, 10), params(1, 20)])
    assert [len(images) for images in drawn] == [2, 1]
    modes = {"RGBA"} if engine.info.draws_alpha else {"RGB", "RGBA"}
    for image in (image for images in drawn for image in images):
        assert isinstance(image, Image.Image) and image.mode in modes
        assert image.width > 0 and image.height > 0
    again = engine.generate([params(1, 11)])[0][0]
    assert np.array_equal(pixels(drawn[0][1]), pixels(again)), "image 1 is seed + 1's"
    assert not np.array_equal(pixels(drawn[0][0]), pixels(drawn[0][1]))


def test_every_step_is_reported_in_order_with_previews(engine: Engine) -> None:
    updates: list[tuple[int, int]] = []
    previews: list[list[list[Image.Image]]] = []

    def on_step(update: StepUpdate) -> None:
        updates.append((update.step, update.total))
        previews.append(update.preview())

    engine.generate([params(2, 0, steps=2), params(1, 5, steps=2)], on_step)
    assert updates == [(1, 2), (2, 2)]
    for preview in previews:
        assert [len(images) for images in preview] == [2, 1]
        assert all(isinstance(image, Image.Image) for images in preview for image in images)


def test_a_cancelling_step_callback_stops_the_batch(engine: Engine) -> None:
    steps: list[int] = []

    def cancel(update: StepUpdate) -> None:
        steps.append(update.step)
        raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        engine.generate([params(1, 0, steps=3)], cancel)
    assert steps == [1]
