"""`limner serve` as a real process: starts, answers the SDK, exits 0 on SIGTERM."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from conftest import free_port, images_of, wait_until_healthy
from PIL import Image

from limner.testing.tiny_pipeline import build_tiny_sd

pytestmark = pytest.mark.slow  # a real `limner serve` process


def test_serve_a_diffusers_folder_with_keys(tmp_path: Path) -> None:
    model = build_tiny_sd(tmp_path)
    port = free_port()
    env = {**os.environ, "LIMNER_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "limner", "serve", "--port", str(port), "--model", str(model),
         "--api-key", "sk-1", "--threads", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, polls=2400)
        client = openai.OpenAI(base_url=base + "/v1", api_key="sk-1", max_retries=0)
        response = client.images.generate(prompt="a fox", model="dall-e-3",
                                          response_format="b64_json")
        b64 = images_of(response)[0].b64_json
        assert b64 is not None
        image = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert image.size == (1024, 1024)
        assert httpx.get(base + "/v1/models").status_code == 401
        assert httpx.get(base + "/").status_code == 200, "the playground needs no key"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        log = process.stderr.read().decode()
        assert "reachable from this machine only" in log
        assert f"playground: {base}/" in log
        secret = tmp_path / "data" / "signing.key"
        assert secret.stat().st_mode & 0o777 == 0o600
    finally:
        if process.poll() is None:
            process.kill()
