"""Request targets and connections as real clients and proxies send them, over raw sockets:
repeated slashes, absolute-form targets, Host headers that would steer a redirect, request
ids on every refusal, and a client that half-closes its socket after sending."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Callable

import pytest
from conftest import RunningServer
from PIL import Image

from limner.engines.fake import FakeEngine

Serve = Callable[..., RunningServer]
BODY = json.dumps({"prompt": "a fox", "size": "256x256", "response_format": "b64_json"})


def port_of(server: RunningServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def exchange(server: RunningServer, head: bytes, body: bytes = b"", *,
             half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Sends one request and reads until the server closes; the final answer's status,
    headers (lower-cased) and body. Interim 1xx answers are skipped, as clients do."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=30) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    while data.startswith(b"HTTP/1.1 1"):
        data = data.split(b"\r\n\r\n", 1)[1]
    raw_head, _, content = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, content


def post(target: bytes, host: bytes = b"127.0.0.1") -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: " + host +
            b"\r\nContent-Type: application/json\r\nContent-Length: " +
            str(len(BODY)).encode() + b"\r\n")


def image_of(content: bytes) -> Image.Image:
    answer = json.loads(content)
    return Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"])))


@pytest.mark.parametrize("target", [b"/v1//images/generations", b"//v1/images/generations",
                                    b"/v1///images//generations"])
def test_repeated_slashes_are_merged_and_answered(serve: Serve, target: bytes) -> None:
    server = serve()
    status, headers, content = exchange(server, post(target), BODY.encode())
    assert status == 200, content
    assert image_of(content).size == (256, 256)
    assert headers["x-request-id"].startswith("req_")


def test_an_absolute_target_naming_this_server_is_served(serve: Serve) -> None:
    server = serve()
    target = f"http://127.0.0.1:{port_of(server)}/v1/images/generations".encode()
    status, _, content = exchange(server, post(target, b"elsewhere.example"), BODY.encode())
    assert status == 200, content
    assert image_of(content).size == (256, 256)
    status, _, content = exchange(server, b"GET " + f"http://localhost:{port_of(server)}"
                                  .encode() + b"//v1/models HTTP/1.1\r\nHost: x\r\n")
    assert status == 200 and json.loads(content)["object"] == "list"


@pytest.mark.parametrize("target", [b"http://evil.example/v1/images/generations",
                                    b"http://127.0.0.1:1/v1/images/generations",
                                    b"https://127.0.0.1:bad/v1/images/generations"])
def test_an_absolute_target_naming_another_host_is_refused(serve: Serve, target: bytes) -> None:
    server = serve()
    status, headers, content = exchange(server, post(target), BODY.encode())
    authority = target.split(b"/")[2].decode()
    assert (status, json.loads(content)) == (421, {"error": {
        "message": f"The request target names the host '{authority}', which is not this "
                   "server; it serves its own paths only and is not a proxy.",
        "type": "invalid_request_error", "param": None, "code": "misdirected_request"}})
    assert headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("path", ["/v1/files/images/?expires=1&signature=x", "/v1/models/",
                                  "/v1/images/generations/", "/playground", "/healthz/",
                                  "/v1/batches/", "/v1/responses/"])
def test_no_answer_is_a_redirect_built_from_the_host_header(serve: Serve, path: str) -> None:
    server = serve()
    for method in (b"GET", b"POST"):
        status, headers, content = exchange(
            server, method + b" " + path.encode() + b" HTTP/1.1\r\nHost: evil.example\r\n"
            b"Content-Length: 0\r\n")
        assert not 300 <= status < 400, (method, path, status, headers)
        assert "location" not in headers
        assert "evil" not in json.dumps(headers) + content.decode("latin-1")


def test_every_refusal_carries_a_request_id(serve: Serve) -> None:
    server = serve(api_keys=["sk-right"])
    heads = {
        "malformed query": b"GET /v1/models?a=\xff HTTP/1.1\r\nHost: a\r\n",
        "not HTTP": b"GARBAGE\r\n",
        "no key": b"GET /v1/models HTTP/1.1\r\nHost: a\r\n",
        "unknown path": b"GET /v2/nothing HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
                        b"sk-right\r\n",
        "bad JSON": b"POST /v1/images/generations HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
                    b"sk-right\r\nContent-Type: application/json\r\nContent-Length: 1\r\n",
        "another host": b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: a\r\n",
    }
    for name, head in heads.items():
        status, headers, content = exchange(server, head, b"{" if name == "bad JSON" else b"")
        assert 400 <= status < 500, name
        assert headers.get("x-request-id", "").startswith("req_"), (name, headers)
        assert set(json.loads(content)["error"]) == {"message", "type", "param", "code"}


def test_a_half_closed_client_still_gets_its_answer(serve: Serve) -> None:
    engine = FakeEngine(step_s=0.1)
    server = serve({"fake": engine})
    status, _, content = exchange(server, post(b"/v1/images/generations"), BODY.encode(),
                                  half_close=True)
    assert status == 200, content
    assert image_of(content).size == (256, 256)


def test_a_client_gone_for_good_is_still_cancelled(serve: Serve) -> None:
    engine = FakeEngine(step_s=0.2)
    server = serve({"fake": engine})
    body = json.dumps({"prompt": "x", "model": "gpt-image-1", "quality": "high"}).encode()
    head = (b"POST /v1/images/generations HTTP/1.1\r\nHost: a\r\nContent-Type: "
            b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=30) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)
    time.sleep(2.0)  # uncancelled, all 8 steps (1.6 s) would have run
    assert 0 < engine.steps_run < 4


def test_open_webui_with_a_base_url_typed_with_a_trailing_slash(serve: Serve) -> None:
    """Open WebUI's generation request as it sends it for `IMAGES_OPENAI_API_BASE_URL =
    http://host:port/v1/` (`clients-2026-12.md` §1): the path joined unnormalised, its body,
    an empty Bearer key; it reads `b64_json`."""
    server = serve()
    body = json.dumps({"model": "dall-e-2", "prompt": "a lighthouse", "n": 1,
                       "size": "512x512", "response_format": "b64_json"}).encode()
    head = (b"POST /v1//images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer \r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n")
    status, headers, content = exchange(server, head, body)
    assert (status, headers["content-type"]) == (200, "application/json")
    image = image_of(content)
    assert (image.size, image.format) == ((512, 512), "PNG")
