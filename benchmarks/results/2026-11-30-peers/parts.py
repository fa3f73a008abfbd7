"""Per-part seconds of one image: limner's OpenVINO path, limner's torch engine (`torch`,
added 2026-12-01 for `../2026-12-01-avx2-emulated/`) or optimum-intel with the tiny decoder,
on the peers run's random SD-Turbo and caches (a one-off check, kept to rerun it).

    python parts.py limner|torch auto|f32            # limner's environment
    PYTHONPATH=SITE python parts.py optimum auto|f32   # optimum-intel's folder first

Six images at 512x512, 1 step, a new prompt each; the medians of the last five are printed
for the text encoder, the UNet, the decoder and the whole image.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2]  # benchmarks/, for `peers`
ROOT = Path("/tmp/limner-int8")
sys.path.insert(0, str(BENCHMARKS))


def main() -> None:
    import torch

    who, precision = sys.argv[1], sys.argv[2]
    times: dict[str, list[float]] = {}

    def timed(name: str, call: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                times.setdefault(name, []).append(time.perf_counter() - started)
        return wrapper

    if who in ("limner", "torch"):
        from limner.engines.diffusers import DiffusersEngine
        from limner.engines.diffusers.presets import PRESETS
        from limner.jobs import GenerationParams

        options = {**PRESETS["sd-turbo"].engine_options(), "cache_dir": str(ROOT / "cache"),
                   "backend": "openvino" if who == "limner" else "torch",
                   "dtype": "float32" if precision == "f32" else "auto"}
        engine = DiffusersEngine(str(ROOT / "sd-turbo"), threads=2,
                                 tiny_decoder=str(ROOT / "taesd"), **options)
        engine.load()
        pipe = engine.pipe
        pipe.vae.decode = timed("decoder", pipe.vae.decode)

        def draw(i: int) -> None:
            engine.generate([GenerationParams(
                prompt=f"a photo of a red fox in the snow, take {i}", seeds=(i,), width=512,
                height=512, quality="low")])
    else:
        import peers
        from optimum.intel import OVStableDiffusionPipeline

        config = {"INFERENCE_NUM_THREADS": "2"}
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        pipe = OVStableDiffusionPipeline.from_pretrained(
            str(ROOT / "optimum/sd-turbo/pipeline"), compile=False, ov_config=config)
        peers._tiny_decoder_into(pipe, ROOT / "optimum/sd-turbo/taesd")
        pipe.reshape(batch_size=-1, height=512, width=512, num_images_per_prompt=1)
        pipe.compile()
        pipe.set_progress_bar_config(disable=True)
        pipe.vae_decoder.forward = timed("decoder", pipe.vae_decoder.forward)

        def draw(i: int) -> None:
            pipe(f"a photo of a red fox in the snow, take {i}", num_inference_steps=1,
                 guidance_scale=0.0, height=512, width=512,
                 generator=torch.Generator().manual_seed(i))
    pipe.text_encoder.forward = timed("text encoder", pipe.text_encoder.forward)
    pipe.unet.forward = timed("UNet", pipe.unet.forward)
    for i in range(6):
        started = time.perf_counter()
        draw(i)
        times.setdefault("image", []).append(time.perf_counter() - started)
    print(who, precision, json.dumps({name: round(statistics.median(values[1:]), 3)
                                      for name, values in times.items()}))


if __name__ == "__main__":
    main()
