"""The embedded engine with the real shipped weights: sizes, alpha, seeds, steps, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from limner.engines.base import Engine
from limner.engines.embedded import EmbeddedEngine
from limner.jobs import GenerationCancelled, GenerationParams, StepUpdate


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    eng = EmbeddedEngine(threads=1)
    eng.load()
    return eng


def params(prompt: str = "a slice of pizza", seeds: tuple[int, ...] = (1,), **kw: object
           ) -> GenerationParams:
    base: dict[str, object] = {"width": 64, "height": 64, "quality": "low"}
    base.update(kw)
    return GenerationParams(prompt=prompt, seeds=seeds, **base)  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_protocol_and_info(engine: EmbeddedEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.info.draws_alpha
    assert (engine.info.native_width, engine.info.native_height) == (64, 64)


@pytest.mark.parametrize("size", [(64, 64), (256, 256), (1024, 1024), (1536, 864)])
def test_sizes_modes_alpha(engine: EmbeddedEngine, size: tuple[int, int]) -> None:
    out = engine.generate([params(width=size[0], height=size[1], seeds=(3, 4))])
    assert len(out) == 1 and len(out[0]) == 2
    for image in out[0]:
        assert image.mode == "RGBA"
        assert image.size == size
        alpha = pixels(image)[..., 3]
        assert alpha.min() == 0, "an emoji has a transparent background"
        assert alpha.max() == 255, "and an opaque body"


def test_seeds(engine: EmbeddedEngine) -> None:
    a = engine.generate([params(seeds=(7, 8))])[0]
    again = engine.generate([params(seeds=(7, 8))])[0]
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a, again, strict=True)), \
        "same seed, same batch: the same image, bit for bit"
    b = engine.generate([params(seeds=(7,))])[0]
    # In another batch the kernels may sum in another order: at most one level apart.
    assert np.abs(pixels(a[0]) - pixels(b[0])).max() <= 1, "same seed, same image"
    assert np.abs(pixels(a[0]) - pixels(a[1])).mean() > 1.0, "n images of a request differ"


def test_batch_of_requests(engine: EmbeddedEngine) -> None:
    out = engine.generate([params("a red heart", seeds=(1,)),
                           params("a rocket", seeds=(2, 3), width=128, height=96)])
    assert [len(x) for x in out] == [1, 2]
    assert out[1][0].size == (128, 96)


def test_steps_and_previews(engine: EmbeddedEngine) -> None:
    updates: list[StepUpdate] = []
    engine.generate([params(seeds=(1, 2), quality="medium"), params("a cat", seeds=(5,))],
                    updates.append)
    assert [u.step for u in updates] == list(range(1, len(updates) + 1))
    assert len(updates) == engine.steps["medium"]
    assert all(u.total == len(updates) for u in updates)
    preview = updates[0].preview()
    assert [len(x) for x in preview] == [2, 1]
    assert all(isinstance(im, Image.Image) and im.mode == "RGBA" for x in preview for im in x)
    final = updates[-1].preview()
    assert final[0][0].size == (64, 64)


def test_cancel_stops_at_once(engine: EmbeddedEngine) -> None:
    calls: list[int] = []

    def cancel(update: StepUpdate) -> None:
        calls.append(update.step)
        if update.step == 2:
            raise GenerationCancelled

    with pytest.raises(GenerationCancelled):
        engine.generate([params(quality="high")], cancel)
    assert calls == [1, 2]


def test_explicit_steps_and_style(engine: EmbeddedEngine) -> None:
    steps: list[int] = []
    engine.generate([params(steps=3, style="twemoji")], lambda u: steps.append(u.step))
    assert steps == [1, 2, 3]


def test_does_not_touch_global_threads_at_import() -> None:
    before = torch.get_num_threads()
    import importlib

    import limner.engines.embedded.engine as mod

    importlib.reload(mod)
    assert torch.get_num_threads() == before


def test_guidance_only_above_its_time(engine: EmbeddedEngine) -> None:
    """Guided steps run the net on a doubled batch; steps at t <= guidance_above do not, and
    with no guided step at all the picture is exactly the unguided one."""
    from limner.engines.embedded.net import EmojiUNet
    from limner.engines.embedded.sampler import sample, timesteps

    net = engine._net
    assert isinstance(net, EmojiUNet)
    batches: list[int] = []
    hook = net.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    txt, style = torch.randn(2, 384), torch.tensor([0, 1])
    noise, ref = torch.randn(2, 4, 64, 64), torch.zeros(2, 4, 64, 64)
    try:
        sample(net, txt, style, noise, steps=8, cfg=3.0, guidance_above=0.3, x_ref=ref, t0=0.6)
        guided = int((timesteps(0.6, 8)[:-1] > 0.3).sum())
        assert batches == [4] * guided + [2] * (8 - guided) and 0 < guided < 8
        never = sample(net, txt, style, noise, steps=4, cfg=3.0, guidance_above=1.0,
                       x_ref=ref, t0=0.6)
        plain = sample(net, txt, style, noise, steps=4, cfg=1.0, x_ref=ref, t0=0.6)
    finally:
        hook.remove()
    assert torch.equal(never, plain)


def test_edit_holds_the_kept_region_and_redraws_the_masked_one(engine: EmbeddedEngine) -> None:
    start = Image.new("RGBA", (256, 256), (30, 60, 200, 255))
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    steps: list[tuple[int, int]] = []
    [[picture]] = engine.generate(
        [params("a red apple", init_image=start, mask=mask, strength=1.0, width=256,
                height=256)],
        lambda update: steps.append((update.step, update.total)))
    assert (picture.size, picture.mode) == ((256, 256), "RGBA")
    assert steps[-1][0] == steps[-1][1]
    drawn = pixels(picture).astype(float)
    kept = np.abs(drawn[8:40, 8:40, :3] - (30, 60, 200)).mean()
    redrawn = np.abs(drawn[100:156, 100:156, :3] - (30, 60, 200)).mean()
    assert kept < 8 < redrawn


def test_redraw_and_variation_start_from_the_picture(engine: EmbeddedEngine) -> None:
    start = Image.new("RGBA", (128, 96), (200, 40, 40, 255))
    low = engine.generate([params("a red apple", init_image=start, strength=0.3, width=128,
                                  height=96)])[0][0]
    variation = engine.generate([params("", init_image=start, strength=0.6, width=128,
                                        height=96, seeds=(1, 2))])[0]
    assert low.size == (128, 96)
    near = np.abs(pixels(low).astype(float)[..., :3] - (200, 40, 40)).mean()
    assert near < 40  # a light redraw stays close to the start
    assert [v.size for v in variation] == [(128, 96)] * 2
    assert not np.array_equal(pixels(variation[0]), pixels(variation[1]))
