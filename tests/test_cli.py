"""The `limner` command end to end against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RunningServer
from PIL import Image

from limner.cli import main

Serve = Callable[..., RunningServer]


@pytest.fixture
def server(serve: Serve) -> RunningServer:
    return serve()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_generate_prints_json_and_writes_numbered_files(server: RunningServer,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "otter.png"
    code, stdout, stderr = run("images", "generate", "--base-url", server.v1, "--prompt",
                               "otter", "--model", "gpt-image-1", "--n", "2", "--size",
                               "1536x1024", "--background", "transparent", "-o", str(out))
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["size"] == "1536x1024" and len(payload["data"]) == 2
    for i in (1, 2):
        image = Image.open(tmp_path / f"otter-{i}.png")
        assert image.size == (1536, 1024) and image.mode == "RGBA"
    assert "wrote" in stderr


def test_global_flags_anywhere(server: RunningServer, tmp_path: Path) -> None:
    code, stdout, _ = run("--base-url", server.v1, "--format", "jsonl", "images", "generate",
                          "--prompt", "otter", "--response-format", "b64_json",
                          "--output-format", "jpeg", "--model", "gpt-image-1")
    assert code == 0
    assert len(stdout.strip().splitlines()) == 1
    assert json.loads(stdout)["output_format"] == "jpeg"


def test_url_responses_are_downloaded(server: RunningServer, tmp_path: Path) -> None:
    code, _, stderr = run("images", "generate", "--base-url", server.v1, "--prompt", "otter",
                          "--size", "512x512", "-o", str(tmp_path / "fox"))
    assert code == 0, stderr
    image = Image.open(tmp_path / "fox.png")
    assert image.size == (512, 512)


def test_stream_with_progress(server: RunningServer, tmp_path: Path) -> None:
    code, stdout, stderr = run("images", "generate", "--base-url", server.v1, "--prompt",
                               "otter", "--model", "gpt-image-1", "--stream", "--format", "jsonl",
                               "--partial-images", "2", "-o", str(tmp_path / "s.webp"),
                               "--output-format", "webp")
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [e["type"] for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"]
    assert Image.open(tmp_path / "s.webp").format == "WEBP"


def test_errors_print_the_error_object_and_exit_1(server: RunningServer) -> None:
    code, stdout, stderr = run("images", "generate", "--base-url", server.v1, "--prompt", "x",
                               "--model", "dall-e-3", "--n", "2")
    assert code == 1
    assert json.loads(stdout)["code"] == "integer_above_max_value"
    assert "400 Bad Request" in stderr


def test_unreachable_server(tmp_path: Path) -> None:
    code, _, stderr = run("images", "generate", "--base-url", "http://127.0.0.1:9/v1",
                          "--prompt", "x")
    assert code == 1 and "could not reach" in stderr


def test_models_command(server: RunningServer) -> None:
    code, stdout, stderr = run("models", "--base-url", server.v1)
    assert code == 0
    assert "gpt-image-2" in [m["id"] for m in json.loads(stdout)["data"]]
    assert "MODEL_CARD.md" in stderr


def test_module_entry_point_help() -> None:
    out = subprocess.run([sys.executable, "-m", "limner", "serve", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--api-key" in out.stdout and "127.0.0.1" in out.stdout


def test_the_later_revision_flags_write_gif_and_svg_files(server: RunningServer,
                                                         tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET
    from typing import Any

    code, stdout, stderr = run(
        "images", "generate", "--base-url", server.v1, "--prompt", "otter", "--model",
        "gpt-image-2.5-flare", "--output-format", "gif", "--frame-count", "3",
        "--frame-duration-ms", "150", "--complexity", "high", "--safety-identifier", "h1",
        "--size", "1024x1024", "-o", str(tmp_path / "otter"))
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["safety_identifier"] == "h1" and payload["output_format"] == "gif"
    gif: Any = Image.open(tmp_path / "otter.gif")
    assert (gif.n_frames, gif.info["duration"]) == (3, 150)
    code, stdout, stderr = run(
        "images", "generate", "--base-url", server.v1, "--prompt", "otter", "--model",
        "gpt-image-2.5-flare", "--output-format", "svg", "--svg-model", "author-1",
        "--size", "1024x1024", "-o", str(tmp_path / "otter"))
    assert code == 0, stderr
    assert json.loads(stdout)["svg_usage"]["model"] == "author-1"
    root = ET.parse(tmp_path / "otter.svg").getroot()
    assert root.get("viewBox") and root.get("width") == "1024"
