"""The GPU training run, rehearsed on the CPU with the very command the GPU machine runs.

A lent GPU machine gives minutes, so its script must not be debugged there: this drives
`training/gpu_train.sh` on a tiny pack in the real format (base pictures from the shipped
reference sheets, packed extras, int8 caption vectors), then resumes from what it wrote.
"""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from limner.engines.embedded.assets import ASSETS, load_unet

ROOT = Path(__file__).resolve().parent.parent


def tiny_pack(folder: Path) -> None:
    """Four base pictures (style, concept) found in the shipped sheets, two packed extras."""
    folder.mkdir()
    bases = [(0, 0), (1, 0), (2, 1), (0, 3)]
    extras = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 4), dtype=np.uint8)
    (folder / "extra.xz").write_bytes(lzma.compress(extras.tobytes()))
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((7, 384)).astype(np.float32)
    scales = np.abs(vectors).max(axis=1) / 127
    np.savez_compressed(
        folder / "meta.npz",
        style=np.array([s for s, _ in bases] + [0, 1]),
        concept=np.array([c for _, c in bases] + [0, 3]),
        tone=np.array([0, 0, 0, 0, 2, 4]), group=np.array([1, 1, 2, 1, 1, 1]),
        extra_index=np.array([-1, -1, -1, -1, 0, 1]),
        caption_vectors=np.round(vectors / scales[:, None]).astype(np.int8),
        caption_scales=scales.astype(np.float32),
        caption_offsets=np.array([0, 2, 3, 4, 5]),  # concepts 0..3
        tone_caption=np.array([-1, -1, -1, -1, 5, 6]),
        sample_vectors=rng.standard_normal((2, 384)).astype(np.float16))
    (folder / "captions.json").write_text(json.dumps(
        {"captions": [f"caption {i}" for i in range(7)], "samples": ["one", "two"]}))


def train(out: Path, pack: Path, minutes: str, init: str = "") -> list[dict[str, object]]:
    env = {**os.environ, "OUT": str(out), "PACK": str(pack), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "training/gpu_train.sh"), minutes, init, "--batch", "4",
         "--ckpt-min", "0.01", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def metadata(folder: Path) -> dict[str, str]:
    with safe_open(str(folder / "unet.safetensors"), framework="pt") as f:
        return dict(f.metadata() or {})


@pytest.mark.skipif(not (ASSETS / "refs_noto.png").exists(), reason="no shipped sheets")
def test_the_run_writes_shippable_weights_samples_and_a_log_then_resumes(
        tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    tiny_pack(pack)
    first = train(tmp_path / "first", pack, "0.03")
    start, end = first[0], first[-1]
    assert start["event"] == "start" and start["pictures"] == 6 and start["captions"] == 7
    assert start["device"] == "cpu" and start["init"] is None and start["compiled"] is False
    assert any(e.get("event") == "checkpoint" for e in first), "no checkpoint before the end"
    assert end["event"] == "end" and isinstance(end["step"], int) and end["step"] > 0
    assert end["seen"] == 4 * end["step"]
    meta = metadata(tmp_path / "first")
    assert meta["step"] == str(end["step"]) and meta["trainer"] == "gpu_train.py"
    net = load_unet(tmp_path / "first")  # the shipped loader reads it as it is
    assert net.cfg.patch == 4
    with Image.open(tmp_path / "first/samples.png") as sheet:
        assert sheet.size == (2 * 64, 3 * 64) and sheet.mode == "RGB"  # prompts x styles
    assert (tmp_path / "first/train.log").read_text().count('"event": "end"') == 1

    second = train(tmp_path / "second", pack, "0.01", str(tmp_path / "first"))
    assert second[0]["from_step"] == end["step"]
    assert int(str(second[-1]["step"])) > end["step"]
    assert int(metadata(tmp_path / "second")["images_seen"]) == second[-1]["seen"]
