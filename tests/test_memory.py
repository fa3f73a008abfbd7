"""The GPU memory estimate reads the weight files' headers: the count is exact, and a load
that cannot fit is refused naming the options that would make it fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from limner.engines.base import EngineError
from limner.engines.diffusers import memory
from limner.testing.tiny_pipeline import build_tiny_sd


def test_parameter_count_matches_the_loaded_pipeline(tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    folder = build_tiny_sd(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        folder, dtype=torch.float32)
    loaded = sum(p.numel() for name in ("unet", "vae", "text_encoder")
                 for p in getattr(pipe, name).state_dict().values())
    assert memory.parameter_count(folder) == loaded
    assert memory.needed_bytes(folder, 2) == int(loaded * 2 * memory.WORKING_MARGIN)


def test_a_model_too_large_is_refused_with_the_way_out() -> None:
    memory.check_fits("flux-dev", 30 * 2**30, 40 * 2**30, 80 * 2**30)
    with pytest.raises(EngineError) as caught:
        memory.check_fits("flux-dev", 38 * 2**30, 20 * 2**30, 24 * 2**30)
    assert str(caught.value) == (
        'flux-dev needs about 38.0 GiB on the GPU in this dtype, and 20.0 of its 24.0 GiB are '
        'free: set offload = "model" (each component on the GPU only while it runs) or '
        'offload = "sequential" (layer by layer, slowest) in its engine table')
