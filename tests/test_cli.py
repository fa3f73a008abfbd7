"""The `limner` command end to end against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


# images edit and images create-variation -----------------------------------------------------
RED, BLUE = (200, 30, 30), (30, 30, 200)


def picture(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (256, 256),
            mode: str = "RGB") -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def test_edit_with_a_mask_writes_the_image(server: RunningServer, tmp_path: Path) -> None:
    image = picture(tmp_path / "room.png", RED)
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (64, 64, 192, 192))  # the middle is redrawn, the rest is kept
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "edited.png"
    code, stdout, stderr = run("images", "edit", "--base-url", server.v1, "--image", str(image),
                               "--mask", str(tmp_path / "mask.png"), "--prompt", "a cat",
                               "--model", "gpt-image-1", "--size", "1024x1024",
                               "--input-fidelity", "high", "--seed", "7", "-o", str(out))
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["size"] == "1024x1024" and len(payload["data"]) == 1
    assert payload["data"][0]["b64_json"] == f"<written to {out}>"
    edited = Image.open(out)
    assert edited.format == "PNG" and edited.size == (1024, 1024)
    rgb = edited.convert("RGB")
    assert rgb.getpixel((5, 5)) == RED  # outside the mask: the input's own pixels
    assert rgb.getpixel((512, 512)) != RED  # the disc drawn inside it
    assert f"wrote {out}" in stderr


def test_edit_with_two_images(server: RunningServer, tmp_path: Path) -> None:
    first = picture(tmp_path / "a.png", RED)
    second = picture(tmp_path / "b.jpg", BLUE)
    code, stdout, stderr = run("images", "edit", "--base-url", server.v1, "--image", str(first),
                               "--image", str(second), "--prompt", "both together", "--model",
                               "gpt-image-1", "--size", "1536x1024", "--output-format", "webp",
                               "-o", str(tmp_path / "pair"))
    assert code == 0, stderr
    assert json.loads(stdout)["output_format"] == "webp"
    edited = Image.open(tmp_path / "pair.webp")
    assert edited.format == "WEBP" and edited.size == (1536, 1024)
    # Laid out side by side: the first on the left, the second on the right.
    left, right = edited.convert("RGB").getpixel((5, 5)), edited.convert("RGB").getpixel((1530, 5))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > left[2] + 100 and right[2] > right[0] + 100


def test_edit_multipart_is_what_the_sdk_sends(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Several images go as `image[]` parts, each with its name and type; every flag given
    (and only those) as a string field."""
    import httpx

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"created": 1, "data": []})

    real_client = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kwargs: real_client(
        transport=httpx.MockTransport(answer), **kwargs))
    first, second = picture(tmp_path / "a.png", RED), picture(tmp_path / "b.jpeg", BLUE)
    (tmp_path / "m.bin").write_bytes(b"\0")
    code, _, stderr = run("images", "edit", "--base-url", "http://x/v1", "--image", str(first),
                          "--image", str(second), "--mask", str(tmp_path / "m.bin"),
                          "--prompt", "p", "--n", "2", "--guidance-scale", "3.5",
                          "--svg-model", "s1")
    assert code == 0, stderr
    request = sent[0]
    assert str(request.url) == "http://x/v1/images/edits"
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.read().decode("latin-1")
    for part in ('name="image[]"; filename="a.png"\r\nContent-Type: image/png',
                 'name="image[]"; filename="b.jpeg"\r\nContent-Type: image/jpeg',
                 'name="mask"; filename="m.bin"\r\nContent-Type: application/octet-stream',
                 'name="prompt"\r\n\r\np\r\n', 'name="n"\r\n\r\n2\r\n',
                 'name="guidance_scale"\r\n\r\n3.5\r\n', 'name="svg[model]"\r\n\r\ns1\r\n'):
        assert part in body
    assert body.count("Content-Disposition") == 7  # nothing the user did not give


def test_streamed_edit_prints_events_and_writes_the_final_image(server: RunningServer,
                                                               tmp_path: Path) -> None:
    image = picture(tmp_path / "room.png", RED)
    out = tmp_path / "s.png"
    code, stdout, stderr = run("images", "edit", "--base-url", server.v1, "--image", str(image),
                               "--prompt", "a cat", "--model", "gpt-image-1", "--stream",
                               "--partial-images", "2", "--format", "jsonl", "-o", str(out))
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [e["type"] for e in events] == ["image_edit.partial_image"] * 2 + [
        "image_edit.completed"]
    assert events[-1]["b64_json"].endswith("base64 chars>")
    final = Image.open(out)
    assert final.format == "PNG" and final.size == (1024, 1024)
    assert f"wrote {out}" in stderr


def test_variation_writes_numbered_files(server: RunningServer, tmp_path: Path) -> None:
    image = picture(tmp_path / "otter.png", RED, mode="RGBA")
    code, stdout, stderr = run("images", "create-variation", "--base-url", server.v1, "--image",
                               str(image), "--n", "2", "--size", "256x256", "-o",
                               str(tmp_path / "v.png"))
    assert code == 0, stderr
    assert len(json.loads(stdout)["data"]) == 2
    for i in (1, 2):
        variation = Image.open(tmp_path / f"v-{i}.png")
        assert variation.format == "PNG" and variation.size == (256, 256)


def test_edit_of_a_text_file_prints_the_error_object(server: RunningServer,
                                                    tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    code, stdout, stderr = run("images", "edit", "--base-url", server.v1, "--image", str(notes),
                               "--prompt", "a cat")
    assert code == 1
    error = json.loads(stdout)
    assert error["message"] == (
        "Invalid file 'image': unsupported mimetype ('text/plain'). Supported file formats "
        "are 'image/jpeg', 'image/png', and 'image/webp'.")
    assert error["param"] == "image" and "400 Bad Request" in stderr


def test_responses_create_then_a_follow_up_edit(server: RunningServer, tmp_path: Path) -> None:
    first_out, second_out = tmp_path / "fox.png", tmp_path / "night.webp"
    code, stdout, stderr = run("responses", "create", "--base-url", server.v1, "--input",
                               "a fox", "--size", "1536x1024", "-o", str(first_out))
    assert code == 0, stderr
    first = json.loads(stdout)
    assert first["output"][0]["result"] == f"<written to {first_out}>"
    assert Image.open(first_out).size == (1536, 1024)
    code, stdout, stderr = run("responses", "create", "--base-url", server.v1, "--input",
                               "now at night", "--previous", first["id"], "--stream",
                               "--output-format", "webp", "-o", str(second_out))
    assert code == 0, stderr
    assert json.loads(stdout)["output"][0]["action"] == "edit"
    assert "response.image_generation_call.completed" in stderr
    assert Image.open(second_out).format == "WEBP"


def test_batches_create_get_list_and_results(server: RunningServer, tmp_path: Path) -> None:
    lines = [{"custom_id": "two/otters", "method": "POST", "url": "/v1/images/generations",
              "body": {"prompt": "otter", "model": "gpt-image-1", "size": "1536x1024",
                       "n": 2, "output_format": "webp"}},
             {"custom_id": "bad", "method": "POST", "url": "/v1/images/generations",
              "body": {"prompt": "otter", "size": "7x7"}}]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, stdout, stderr = run("batches", "create", "--base-url", server.v1, "--file",
                               str(requests), "--metadata", "project=otters")
    assert code == 0, stderr
    created = json.loads(stdout)
    assert (created["object"], created["status"], created["metadata"]) == (
        "batch", "validating", {"project": "otters"})
    batch: dict[str, object] = {}
    for _ in range(600):  # a bound on the wait, not a speed check
        code, stdout, stderr = run("batches", "get", created["id"], "--base-url", server.v1)
        assert code == 0, stderr
        batch = json.loads(stdout)
        if batch["status"] == "completed":
            break
        time.sleep(0.05)
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    code, stdout, _ = run("batches", "list", "--base-url", server.v1, "--format", "jsonl")
    assert [b["id"] for b in json.loads(stdout)["data"]] == [created["id"]]
    out = tmp_path / "results"
    code, _, stderr = run("batches", "results", created["id"], "--base-url", server.v1,
                          "-o", str(out))
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "errors.jsonl", "output.jsonl", "two_otters-1.webp", "two_otters-2.webp"]
    assert Image.open(out / "two_otters-1.webp").size == (1536, 1024)
    error = json.loads((out / "errors.jsonl").read_text())
    assert (error["custom_id"], error["response"]["status_code"]) == ("bad", 400)
    code, stdout, _ = run("batches", "cancel", created["id"], "--base-url", server.v1)
    assert code == 1 and json.loads(stdout)["code"] == "batch_not_cancellable"
