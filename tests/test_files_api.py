"""The Files API subset (`/v1/files`) over real HTTP, driven by the official `openai` package."""

from __future__ import annotations

import http.client
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from conftest import RunningServer, images_of, stream_until_answered
from openai.types import FilePurpose
from PIL import Image

from limner.config import load_settings
from limner.errors import NotFound

Serve = Callable[..., RunningServer]
FILE_ID = re.compile(r"file-[0-9a-f]{32}")
MB = 1024 * 1024


def png_bytes(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


def client_for(server: RunningServer, api_key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=api_key, max_retries=0)


def stored(server: RunningServer) -> list[str]:
    """Every name in the file store's directory, temporaries included."""
    root = server.settings.data_dir / "files"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def raw_get(server: RunningServer, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would normalise `..`)."""
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def not_found_body(file_id: str) -> dict[str, object]:
    return {"error": {"message": f"No such File object: {file_id}",
                      "type": "invalid_request_error", "param": "id", "code": None}}


def test_create_retrieve_and_download_with_the_sdk(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    png = png_bytes()
    created = client.files.create(file=("otter.png", png, "image/png"), purpose="vision")
    assert FILE_ID.fullmatch(created.id)
    assert (created.object, created.bytes, created.filename, created.purpose) == (
        "file", len(png), "otter.png", "vision")
    assert created.status == "processed" and created.expires_at is None
    assert created.created_at == int(server.clock())
    assert client.files.retrieve(created.id) == created
    raw = httpx.get(f"{server.v1}/files/{created.id}").json()
    assert raw == {"id": created.id, "object": "file", "bytes": len(png),
                   "created_at": created.created_at, "filename": "otter.png",
                   "purpose": "vision", "status": "processed", "expires_at": None}
    assert client.files.content(created.id).read() == png
    download = httpx.get(f"{server.base_url}/files/{created.id}/content")  # no /v1 as well
    assert download.status_code == 200 and download.content == png
    assert download.headers["content-type"] == "image/png"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert stored(server) == [f"{created.id}.data", f"{created.id}.json"]
    # The same bytes for the routes that take a file id, e.g. an image edit.
    assert server.app.state.limner.files.get_bytes(created.id) == png


def test_upload_with_a_file_object_and_expires_after(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    path = tmp_path / "notes.bin"
    path.write_bytes(b"\x00\x01 not an image")
    with path.open("rb") as handle:
        created = client_for(server).files.create(
            file=handle, purpose="user_data",
            expires_after={"anchor": "created_at", "seconds": 3600})
    assert (created.filename, created.bytes, created.expires_at) == ("notes.bin", 15, None)
    download = httpx.get(f"{server.v1}/files/{created.id}/content")
    assert download.content == b"\x00\x01 not an image"
    assert download.headers["content-type"] == "application/octet-stream"


def test_list_filters_orders_and_pages(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    uploads: list[tuple[str, FilePurpose]] = [("red", "vision"), ("green", "user_data"),
                                              ("blue", "vision")]
    ids = [client.files.create(file=(f"{i}.png", png_bytes(color), "image/png"),
                               purpose=purpose).id
           for i, (color, purpose) in enumerate(uploads)]
    newest_first = [f.id for f in client.files.list()]
    assert newest_first == ids[::-1]
    assert [f.id for f in client.files.list(order="asc")] == ids
    assert [f.id for f in client.files.list(purpose="vision", order="asc")] == [ids[0], ids[2]]
    assert [f.id for f in client.files.list(purpose="batch")] == []
    # The SDK follows `has_more` with `after=<last_id>`, one file a page.
    assert [f.id for f in client.files.list(limit=1, order="asc")] == ids
    page = httpx.get(f"{server.v1}/files", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [f["id"] for f in page["data"]] == [ids[2], ids[1]]
    assert (page["first_id"], page["last_id"]) == (ids[2], ids[1])
    empty = httpx.get(f"{server.v1}/files", params={"purpose": "evals"}).json()
    assert empty == {"object": "list", "data": [], "has_more": False, "first_id": None,
                     "last_id": None}
    for params, param, code in [({"limit": "0"}, "limit", "integer_below_min_value"),
                                ({"limit": "10001"}, "limit", "integer_above_max_value"),
                                ({"limit": "ten"}, "limit", "invalid_type"),
                                ({"order": "sideways"}, "order", "invalid_value"),
                                ({"after": "file-" + "0" * 32}, "after", "invalid_value")]:
        response = httpx.get(f"{server.v1}/files", params=params)
        assert response.status_code == 400, params
        assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (
            param, code)


def test_delete_then_404_with_the_exact_body(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    created = client.files.create(file=("a.png", png_bytes(), "image/png"), purpose="vision")
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert stored(server) == []
    for method, path in [("GET", f"/files/{created.id}"), ("GET", f"/files/{created.id}/content"),
                         ("DELETE", f"/files/{created.id}")]:
        response = httpx.request(method, server.v1 + path)
        assert response.status_code == 404, path
        assert response.json() == not_found_body(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(NotFound) as caught:
        server.app.state.limner.files.get_bytes(created.id)
    assert caught.value.status == 404


def test_bad_uploads_are_400_with_the_exact_body(serve: Serve) -> None:
    server = serve()
    url = server.v1 + "/files"
    png = png_bytes()
    bad_purpose = httpx.post(url, files={"file": ("a.png", png)}, data={"purpose": "pictures"})
    assert bad_purpose.status_code == 400
    assert bad_purpose.json() == {"error": {
        "message": "Invalid value: 'pictures'. Supported values are: 'assistants', 'batch', "
                   "'fine-tune', 'vision', 'user_data', and 'evals'.",
        "type": "invalid_request_error", "param": "purpose", "code": "invalid_value"}}
    no_purpose = httpx.post(url, files={"file": ("a.png", png)})
    assert no_purpose.status_code == 400
    assert no_purpose.json() == {"error": {
        "message": "Missing required parameter: 'purpose'.", "type": "invalid_request_error",
        "param": "purpose", "code": "missing_required_parameter"}}
    cases = [
        ({"data": {"purpose": "vision"}, "files": {"other": ("a", b"x")}}, "other",
         "unknown_parameter"),
        ({"files": {"purpose": (None, "vision"), "file": (None, "not a file")}}, "file",
         "invalid_type"),
        ({"json": {"purpose": "vision"}}, None, "invalid_content_type"),
        ({"content": b"\x00garbage", "headers": {
            "content-type": "multipart/form-data; boundary=xyz"}}, None, "invalid_multipart"),
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, None,
         "invalid_multipart"),
        ({"files": [("file", ("a", b"1")), ("file", ("b", b"2"))],
          "data": {"purpose": "vision"}}, None, "invalid_multipart"),
    ]
    for kwargs, param, code in cases:
        response = httpx.post(url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 400, (kwargs, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["param"], error["code"]) == (param, code), response.text
    assert stored(server) == []


def test_over_the_limit_is_413_and_leaves_nothing(serve: Serve) -> None:
    server = serve(max_upload_bytes=1000)
    client = client_for(server)
    exactly = client.files.create(file=("a.bin", b"a" * 1000), purpose="user_data")
    assert exactly.bytes == 1000
    client.files.delete(exactly.id)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("b.bin", b"b" * 1001), purpose="user_data")
    assert caught.value.status_code == 413
    too_large = {"error": {"message": "The file is larger than the limit of 1000 bytes.",
                           "type": "invalid_request_error", "param": "file",
                           "code": "file_too_large"}}
    assert caught.value.response.json() == too_large
    declared = httpx.post(server.v1 + "/files", files={"file": ("c.bin", b"c" * (2 * MB))},
                          data={"purpose": "user_data"})
    assert declared.status_code == 413 and declared.json() == too_large
    assert stored(server) == []


def test_streamed_upload_is_refused_while_it_is_read(serve: Serve) -> None:
    """Chunked (no content-length): the server counts the body and answers 413 long before
    50 MB went over the wire, keeping none of it."""
    server = serve(max_upload_bytes=1000)
    head = (b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n')
    status, sent = stream_until_answered(
        server.base_url, "/v1/files", "Content-Type: multipart/form-data; boundary=xyz\r\n", head)
    assert status.startswith("HTTP/1.1 413") and sent < 10 * MB, (status, sent)
    assert stored(server) == []
    assert client_for(server).files.list().data == []


def test_ids_that_name_other_paths_are_404(serve: Serve) -> None:
    server = serve()
    secret = (server.settings.data_dir / "signing.key").read_bytes()
    for attempt in ["..", "%2e%2e", "signing.key", "..%2Fsigning.key", "%2E%2E%2F..%2Fetc%2Fpasswd",
                    "file-..%2F..%2Fsigning.key", "file-" + "A" * 32, "file-" + "0" * 31,
                    "file-" + "0" * 32 + "%00"]:
        for suffix in ("", "/content"):
            status, body = raw_get(server, f"/v1/files/{attempt}{suffix}")
            assert status == 404, (attempt, suffix, body[:200])
            assert secret not in body and b"root:" not in body
            assert b'"error"' in body
    assert httpx.get(server.v1 + "/files/signing.key").json() == not_found_body("signing.key")
    # Well-formed names planted as links to files outside the store are not followed.
    root = server.settings.data_dir / "files"
    root.mkdir()
    linked = "file-" + "1" * 32
    os.symlink(server.settings.data_dir / "signing.key", root / f"{linked}.json")
    assert httpx.get(f"{server.v1}/files/{linked}").json() == not_found_body(linked)
    assert httpx.get(f"{server.v1}/files/{linked}/content").status_code == 404


def test_api_keys_apply_and_signed_image_urls_still_work(serve: Serve) -> None:
    server = serve(api_keys=("sk-files",))
    assert httpx.get(server.v1 + "/files").status_code == 401
    assert httpx.post(server.v1 + "/files", files={"file": ("a", b"1")},
                      data={"purpose": "vision"}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "sk-wrong").files.list()
    client = client_for(server, "sk-files")
    created = client.files.create(file=("a.png", png_bytes(), "image/png"), purpose="vision")
    assert client.files.retrieve(created.id).id == created.id
    assert httpx.get(f"{server.v1}/files/{created.id}/content").status_code == 401
    # `/v1/files/images/content` is the signed-image route's, not the content of file `images`.
    unsigned = httpx.get(server.v1 + "/files/images/content")
    assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "invalid_signature"
    url = images_of(client.images.generate(prompt="otter", size="256x256"))[0].url
    assert url is not None and "/v1/files/images/" in url
    download = httpx.get(url)
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"


def test_max_upload_bytes_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "limner.toml"
    config.write_text("max_upload_bytes = 2048\n")
    assert load_settings(config, environ={}).max_upload_bytes == 2048
    assert load_settings(config, environ={"LIMNER_MAX_UPLOAD_BYTES": "4096"}
                         ).max_upload_bytes == 4096
