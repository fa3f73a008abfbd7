"""Out of the box: `limner serve` with no model argument serves the embedded model."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
from conftest import free_port, images_of, wait_until_healthy
from PIL import Image

pytestmark = pytest.mark.slow  # a real `limner serve` process loading the model


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_default_serve_draws_with_the_embedded_model(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LIMNER_DATA_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "limner", "serve", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, polls=3600)
        client = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)

        opaque = client.images.generate(prompt="a cute baby sea otter", model="gpt-image-1",
                                        quality="low", extra_body={"seed": 1})
        image = decode(images_of(opaque)[0].b64_json)
        assert (image.format, image.size, image.mode) == ("PNG", (1024, 1024), "RGB")
        pixels = np.asarray(image, dtype=np.float32)
        assert pixels.std() > 10, "the picture is flat: nothing was drawn"

        clear = client.images.generate(prompt="a red heart", model="gpt-image-1.5",
                                       size="1536x1024", background="transparent",
                                       output_format="webp", quality="low")
        picture = decode(images_of(clear)[0].b64_json)
        assert picture.format == "WEBP" and picture.size == (1536, 1024)
        alpha = np.asarray(picture.convert("RGBA"))[..., 3]
        assert alpha.min() == 0 and alpha.max() == 255

        events = list(client.images.generate(prompt="pizza", model="gpt-image-1", stream=True,
                                             partial_images=2, quality="medium"))
        assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
            "image_generation.completed"]
        assert decode(events[0].b64_json).size == (1024, 1024)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
