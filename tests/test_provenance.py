"""Content credentials as a client and a checker meet them: a real server signs every answer
(generate in each format, edit, stream, url), the C2PA library validates the manifest and
its assertions name the model, the official SDK's `content_provenance_checks.create` reads
them back (`valid`, `trusted` with a trust list, `invalid` once pixels change, `not_present`
for a plain picture or no picture), and `provenance = "none"` leaves pictures bare."""

from __future__ import annotations

import base64
import io
import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import c2pa
import httpx
import openai
import pytest
from conftest import RunningServer
from PIL import Image

from limner.config import EngineConfig
from limner.engines.fake import FakeEngine
from limner.provenance.checking import mime_of
from limner.provenance.signing import ASSERTION, TRAINED

Serve = Callable[..., RunningServer]
Format = Literal["png", "jpeg", "webp", "gif", "svg"]


def client_for(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)


def manifest_of(data: bytes) -> tuple[str, dict[str, Any]]:
    """The validation state and the active manifest, as the C2PA library reads them."""
    mime = mime_of(data)
    assert mime is not None
    with c2pa.Reader(mime, io.BytesIO(data)) as reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state() or ""
    manifest: dict[str, Any] = store["manifests"][store["active_manifest"]]
    return state, manifest


def assertion(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a["data"] for a in manifest["assertions"]
                                 if a["label"] == label)
    return found


def check(server: RunningServer, data: bytes, name: str = "picture") -> dict[str, Any]:
    answer = client_for(server).content_provenance_checks.create(file=(name, data))
    assert answer.object == "content_provenance_check" and answer.created_at > 0
    (result,) = answer.results
    dumped: dict[str, Any] = result.model_dump()
    return dumped


def generated(server: RunningServer, **fields: Any) -> bytes:
    answer = client_for(server).images.generate(prompt="a red lighthouse", **fields)
    assert answer.data and answer.data[0].b64_json
    return base64.b64decode(answer.data[0].b64_json)


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp", "gif", "svg"])
def test_every_format_carries_a_manifest_naming_the_model(serve: Serve,
                                                          output_format: str) -> None:
    server = serve()
    data = generated(server, model="gpt-image-1", output_format=output_format, size="1024x1024")
    state, manifest = manifest_of(data)
    assert state == "Valid"
    (action,) = assertion(manifest, "c2pa.actions.v2")["actions"]
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", TRAINED)
    ours = assertion(manifest, ASSERTION)
    assert (ours["model"], ours["engine_model"], ours["endpoint"]) == (
        "gpt-image-1", "fake", "generations")
    assert "prompt" not in ours  # prompts can be private: off unless the operator says
    result = check(server, data)
    assert result["generated_at"] == ours["generated_at"]
    assert {k: v for k, v in result.items() if k != "generated_at"} == {
        "type": "c2pa", "outcome": "detected", "validation_state": "valid",
        "issuer": "limner", "model": "gpt-image-1", "reason": None}
    if output_format != "svg":
        picture = Image.open(io.BytesIO(data))
        assert picture.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP",
                                  "gif": "GIF"}[output_format]
        assert picture.size == (1024, 1024)


def test_changed_pixels_read_invalid_and_a_plain_picture_not_present(serve: Serve) -> None:
    server = serve()
    data = bytearray(generated(server, model="gpt-image-1"))
    at = data.find(b"IDAT") + 40
    data[at] ^= 0xFF
    result = check(server, bytes(data))
    assert (result["outcome"], result["validation_state"]) == ("not_detected", "invalid")
    assert "hash" in result["reason"].lower()
    plain = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(plain, "PNG")
    for given in (plain.getvalue(), b"not a picture at all", b""):
        assert check(server, given) == {
            "type": "c2pa", "outcome": "not_detected", "validation_state": "not_present",
            "issuer": None, "model": None, "generated_at": None, "reason": None}


def test_an_edit_names_its_credentialed_picture_as_its_ingredient(serve: Serve) -> None:
    server = serve()
    source = generated(server, model="gpt-image-1", size="1024x1024")
    answer = client_for(server).images.edit(model="gpt-image-1", prompt="at night",
                                            image=("lighthouse.png", source))
    assert answer.data and answer.data[0].b64_json
    state, manifest = manifest_of(base64.b64decode(answer.data[0].b64_json))
    assert state == "Valid"
    actions = [a["action"] for a in assertion(manifest, "c2pa.actions.v2")["actions"]]
    assert actions == ["c2pa.opened", "c2pa.edited"]
    assert len(manifest["ingredients"]) == 1
    assert manifest["ingredients"][0]["relationship"] == "parentOf"
    assert assertion(manifest, ASSERTION)["endpoint"] == "edits"
    # A picture without credentials is no ingredient: the edit is a creation of its own.
    plain = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 30, 30)).save(plain, "PNG")
    answer = client_for(server).images.edit(model="gpt-image-1", prompt="at night",
                                            image=("plain.png", plain.getvalue()))
    assert answer.data and answer.data[0].b64_json
    _, manifest = manifest_of(base64.b64decode(answer.data[0].b64_json))
    assert [a["action"] for a in assertion(manifest, "c2pa.actions.v2")["actions"]] == [
        "c2pa.created", "c2pa.edited"]
    assert not manifest.get("ingredients")


def test_streams_and_urls_carry_it_and_previews_do_not(serve: Serve) -> None:
    server = serve(engines={"fake": FakeEngine(step_s=0.02)})
    stream = client_for(server).images.generate(model="gpt-image-1", prompt="a boat",
                                                stream=True, partial_images=2)
    events = list(stream)
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    (done,) = [e for e in events if e.type == "image_generation.completed"]
    assert partials and all(check(server, base64.b64decode(e.b64_json))["validation_state"]
                            == "not_present" for e in partials)
    assert check(server, base64.b64decode(done.b64_json))["validation_state"] == "valid"
    answer = client_for(server).images.generate(model="dall-e-3", prompt="a boat")
    assert answer.data and answer.data[0].url
    fetched = httpx.get(answer.data[0].url, timeout=30).content
    assert check(server, fetched)["model"] == "dall-e-3"


def test_the_servers_own_key_is_private_and_a_trust_list_makes_it_trusted(
        serve: Serve, tmp_path: Path) -> None:
    server = serve(data_dir=tmp_path / "data", provenance_organization="Acme News")
    folder = tmp_path / "data" / "c2pa"
    assert stat.S_IMODE((folder / "signer-key.pem").stat().st_mode) == 0o600
    data = generated(server, model="gpt-image-1")
    assert check(server, data)["issuer"] == "Acme News"
    _, manifest = manifest_of(data)
    assert assertion(manifest, ASSERTION)["organization"] == "Acme News"
    trusting = serve(data_dir=tmp_path / "data",
                     provenance_trust=str(folder / "local-ca.pem"))
    assert check(trusting, data)["validation_state"] == "trusted"
    # From a terminal, no server needed.
    command = [sys.executable, "-m", "limner", "provenance", "check"]
    (tmp_path / "p.png").write_bytes(data)
    read = subprocess.run([*command, str(tmp_path / "p.png"), "--trust",
                           str(folder / "local-ca.pem")], capture_output=True, text=True,
                          check=True)
    assert json.loads(read.stdout)["validation_state"] == "trusted"


def test_provenance_none_leaves_pictures_bare_per_server_or_engine(serve: Serve) -> None:
    bare = serve(provenance="none")
    assert check(bare, generated(bare, model="gpt-image-1"))["validation_state"] == \
        "not_present"
    mixed = serve({"fake": FakeEngine(), "quiet": FakeEngine(name="quiet")},
                  tables=(EngineConfig("quiet", "fake", provenance="none"),),
                  models={"gpt-image-1": "quiet"})
    assert check(mixed, generated(mixed, model="gpt-image-1"))["validation_state"] == \
        "not_present"
    assert check(mixed, generated(mixed, model="fake"))["validation_state"] == "valid"


def test_prompts_are_written_only_when_the_operator_says(serve: Serve) -> None:
    server = serve(provenance_prompt=True)
    _, manifest = manifest_of(generated(server, model="gpt-image-1"))
    assert assertion(manifest, ASSERTION)["prompt"] == "a red lighthouse"


def test_a_check_without_a_file_is_a_400_naming_it(serve: Serve) -> None:
    server = serve()
    answer = httpx.post(server.v1 + "/content_provenance_checks", files={"note": (None, "x")},
                        timeout=30)
    assert answer.status_code == 400
    assert answer.json() == {"error": {
        "message": "Missing required parameter: 'file'.", "type": "invalid_request_error",
        "param": "file", "code": "missing_required_parameter"}}


def test_the_watermark_survives_a_jpeg_at_75_and_a_half_size_resize(serve: Serve) -> None:
    server = serve(watermark=True)
    data = generated(server, model="gpt-image-1", size="1024x1024")
    answer = client_for(server).content_provenance_checks.create(file=("p.png", data))
    c2pa_result, ours = (r.model_dump() for r in answer.results)
    assert (c2pa_result["type"], c2pa_result["validation_state"]) == ("c2pa", "valid")
    assert (ours["type"], ours["outcome"], ours["model"]) == (
        "limner_watermark", "detected", "gpt-image-1")
    record = server.settings.data_dir / "watermarks" / ours["id"][:2] / f"{ours['id']}.json"
    assert json.loads(record.read_text())["model"] == "gpt-image-1"
    picture = Image.open(io.BytesIO(data)).convert("RGB").resize((512, 512),
                                                                 Image.Resampling.LANCZOS)
    reencoded = io.BytesIO()
    picture.save(reencoded, "JPEG", quality=75)
    after = httpx.post(server.v1 + "/content_provenance_checks",
                       files={"file": ("p.jpg", reencoded.getvalue())}, timeout=30).json()
    stripped, kept = after["results"]
    assert stripped["validation_state"] == "not_present"  # the metadata went with the re-encode
    assert (kept["outcome"], kept["id"], kept["model"]) == ("detected", ours["id"],
                                                            "gpt-image-1")
    plain = io.BytesIO()
    Image.new("RGB", (512, 512), (120, 60, 30)).save(plain, "PNG")
    assert check_all(server, plain.getvalue())[1] == {
        "type": "limner_watermark", "outcome": "not_detected", "id": None, "model": None,
        "generated_at": None}


def check_all(server: RunningServer, data: bytes) -> list[dict[str, Any]]:
    answer = httpx.post(server.v1 + "/content_provenance_checks",
                        files={"file": ("f", data)}, timeout=30)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp", "gif", "svg"])
def test_edits_and_streams_carry_it_in_each_format(serve: Serve, output_format: Format) -> None:
    server = serve()
    plain = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 30, 30)).save(plain, "PNG")
    answer = client_for(server).images.edit(model="gpt-image-1", prompt="at night",
                                            image=("plain.png", plain.getvalue()),
                                            output_format=output_format)
    assert answer.data and answer.data[0].b64_json
    result = check(server, base64.b64decode(answer.data[0].b64_json))
    assert (result["validation_state"], result["model"]) == ("valid", "gpt-image-1")
    if output_format in ("gif", "svg"):
        return  # answered whole: neither format streams
    stream = client_for(server).images.generate(
        model="gpt-image-1", prompt="a boat", stream=True,
        output_format=output_format)
    (done,) = [e for e in stream if e.type == "image_generation.completed"]
    assert check(server, base64.b64decode(done.b64_json))["validation_state"] == "valid"
