"""Bad input beyond the schema (issue 4, item 2), over real HTTP.

Complements test_api_images.py (`test_error_bodies`, `test_malformed_bodies`): each case here
must be a 4xx envelope naming the param where there is one, and the server must stay healthy.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import RunningServer, running_server, stream_until_answered

Serve = Callable[..., RunningServer]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module: the cases are independent and the server must survive all."""
    with running_server(tmp_path_factory.mktemp("bad-input")) as running:
        yield running


def envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, response.text[:300]
    assert set(body["error"]) == {"message", "type", "param", "code"}, response.text[:300]
    assert response.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


def healthy(server: RunningServer) -> None:
    assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200
    ok = httpx.post(server.v1 + "/images/generations", timeout=30,
                    json={"prompt": "still here", "model": "gpt-image-1", "quality": "low"})
    assert ok.status_code == 200, ok.text


def post_raw(server: RunningServer, raw: bytes,
             content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(server.v1 + "/images/generations", content=raw, headers=headers,
                      timeout=30)


# Size limits ----------------------------------------------------------------------------------
def _status_line(sock: socket.socket) -> str:
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _open(server: RunningServer, headers: str) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"POST /v1/images/generations HTTP/1.1\r\nHost: {host}\r\n"
                  f"Content-Type: application/json\r\n{headers}\r\n").encode())
    return sock


def test_50_mb_streamed_body_is_refused_without_reading_it_all(server: RunningServer) -> None:
    """Chunked (no content-length): the server counts and answers 413 at the 1 MiB limit,
    while the client is still sending, long before 50 MB went over the wire."""
    status, sent = stream_until_answered(server.base_url, "/v1/images/generations",
                                         "Content-Type: application/json\r\n", b'{"prompt": "')
    assert status, "the whole 50 MB body was accepted without an answer"
    assert sent < 10 * MB, sent
    assert status.startswith("HTTP/1.1 413"), (status, sent)
    healthy(server)


def test_50_mb_declared_length_is_refused_up_front(server: RunningServer) -> None:
    sock = _open(server, f"Content-Length: {50 * MB}\r\n")
    try:
        sock.sendall(b'{"prompt": "')
        assert _status_line(sock).startswith("HTTP/1.1 413")
    finally:
        sock.close()
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          content=b'{"prompt": "' + b"x" * (2 * MB) + b'"}',
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert envelope(response)["code"] == "request_too_large"
    healthy(server)


# Malformed JSON -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "code"), [
    (b'{"prompt": "x", "user": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "invalid_json"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "invalid_json"),
    (b'{"prompt": "\xc0\xaf"}', "invalid_json"),  # overlong encoding of '/'
    (b'{"prompt": "\xed\xa0\x80"}', "invalid_json"),  # UTF-8-encoded surrogate
    (b'\xef\xbb\xbf{"prompt": "x"}', "invalid_json"),  # byte-order mark
    (b'{"prompt": "x"}\x00', "invalid_json"),
    (b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", "invalid_json"),  # > int digit limit
])
def test_malformed_json(server: RunningServer, raw: bytes, code: str) -> None:
    if len(raw) > MB:
        response = post_raw(server, raw)
        assert response.status_code == 413
    else:
        response = post_raw(server, raw)
        assert response.status_code == 400, response.text[:300]
        assert envelope(response)["code"] == code
    healthy(server)


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"prompt": "\\ud800 otter", "model": "gpt-image-1"}', "prompt"),
    (b'{"prompt": "x", "user": "\\udfff"}', "user"),
    (b'{"prompt": "x", "model": "gpt-image-2.5-flare", "output_format": "svg", '
     b'"svg": {"model": "\\ud800"}}', "svg"),
])
def test_unpaired_surrogate_escapes(server: RunningServer, raw: bytes, param: str) -> None:
    response = post_raw(server, raw)
    assert response.status_code == 400, response.text[:300]
    assert envelope(response)["param"] == param
    healthy(server)


def test_unpaired_surrogate_in_a_key(server: RunningServer) -> None:
    response = post_raw(server, b'{"prompt": "x", "\\ud800": 1}')
    assert response.status_code == 400, response.text[:300]
    assert envelope(response)["code"] == "invalid_json"
    healthy(server)


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"prompt": "x", "n": 1, "n": 2}', "n"),
    (b'{"prompt": "x", "size": "1024x1024", "size": "256x256"}', "size"),
])
def test_duplicate_keys_name_the_key(server: RunningServer, raw: bytes, param: str) -> None:
    response = post_raw(server, raw)
    assert response.status_code == 400
    error = envelope(response)
    assert error["code"] == "invalid_json" and error["param"] == param


# Content types --------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "content_type"), [
    (b"prompt=x", "application/x-www-form-urlencoded"),
    (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--b--\r\n',
     "multipart/form-data; boundary=b"),
    (b'{"prompt": "x"}', None),
    (b'{"prompt": "x"}', "text/html"),
])
def test_wrong_content_types(server: RunningServer, raw: bytes, content_type: str | None) -> None:
    response = post_raw(server, raw, content_type)
    assert response.status_code == 415
    assert envelope(response)["code"] == "unsupported_content_type"
    healthy(server)


# Prompts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["a\x01b", "a\x1b[31mred", "a\x7fb", "a\x0bb", "\x00"])
def test_control_characters_in_the_prompt(server: RunningServer, prompt: str) -> None:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": prompt, "model": "gpt-image-1"})
    assert response.status_code == 400
    assert envelope(response)["param"] == "prompt"


@pytest.mark.parametrize("prompt", [
    "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🇯🇵",  # ZWJ sequences, flags
    "שלום עולם",  # Hebrew
    "مرحبا \u202ebackwards\u202c text",  # RTL with an explicit override
    "e\u0301\u0301\u0301 combining marks",
    "𝕱𝖗𝖆𝖐𝖙𝖚𝖗 and 中文 and 日本語",
])
def test_emoji_and_right_to_left_prompts(server: RunningServer, prompt: str) -> None:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": prompt, "model": "gpt-image-1", "quality": "low"})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["data"][0]["b64_json"]


# Types and values -----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "param", "code"), [
    ({"prompt": "x", "model": "gpt-image-1", "output_compression": "50"}, "output_compression",
     "invalid_type"),
    ({"prompt": "x", "seed": "1"}, "seed", "invalid_type"),
    ({"prompt": "x", "model": "gpt-image-1", "stream": "true"}, "stream", "invalid_type"),
    ({"prompt": "x", "model": "gpt-image-1", "partial_images": "1"}, "partial_images",
     "invalid_type"),
    ({"prompt": 123}, "prompt", "invalid_type"),
    ({"prompt": ["x"]}, "prompt", "invalid_type"),
    ({"prompt": "x", "n": 1.5}, "n", "invalid_type"),
    ({"prompt": "x", "n": 1e3}, "n", "invalid_type"),
    ({"prompt": "x", "n": -1}, "n", "integer_below_min_value"),
    ({"prompt": "x", "user": "u" * 900_000}, "user", None),
    ({"prompt": "x", "user": 12345}, "user", "invalid_type"),
])
def test_wrong_types_and_values(server: RunningServer, body: dict[str, object], param: str,
                                code: str | None) -> None:
    response = httpx.post(server.v1 + "/images/generations", json=body, timeout=30)
    assert response.status_code == 400, response.text[:300]
    error = envelope(response)
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("raw", [
    b'{"prompt": "x", "n": NaN}', b'{"prompt": "x", "n": Infinity}',
    b'{"prompt": "x", "n": -Infinity}', b'{"prompt": "x", "n": 1e400}',
])
def test_non_finite_numbers(server: RunningServer, raw: bytes) -> None:
    response = post_raw(server, raw)
    assert response.status_code == 400
    assert envelope(response)["param"] == "n"


SIZES = ["-1024x1024", "1024x-1024", "1024x1024x3", " 1024x1024", "1024x1024 ", "1024x1024\n",
         "1024X1024", "0x0", "+1024x1024", "1_024x1024", "١٠٢٤x1024", "1024*1024", "x"]


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-2"])
def test_bad_sizes_for_every_model(server: RunningServer, model: str) -> None:
    for size in SIZES:
        response = httpx.post(server.v1 + "/images/generations", timeout=30,
                              json={"prompt": "x", "model": model, "size": size})
        assert response.status_code == 400, (model, size, response.text[:200])
        assert envelope(response)["param"] == "size", (model, size)
    healthy(server)


# Empty strings are values, not omissions -------------------------------------------------------
@pytest.mark.parametrize(("field", "code"), [
    ("size", "invalid_value"), ("quality", "invalid_value"), ("output_format", "invalid_value"),
    ("background", "invalid_value"), ("moderation", "invalid_value"),
    ("response_format", "invalid_value"), ("model", "string_below_min_length"),
    ("style", "invalid_value"),
])
def test_an_empty_string_is_refused_where_it_is_no_valid_value(
        server: RunningServer, field: str, code: str) -> None:
    model = {"style": "dall-e-3", "model": None}.get(field, "gpt-image-1")
    body: dict[str, object] = {"prompt": "x", field: ""}
    if model is not None:
        body.setdefault("model", model)
    response = httpx.post(server.v1 + "/images/generations", json=body, timeout=30)
    assert response.status_code == 400, response.text[:300]
    error = envelope(response)
    assert (error["param"], error["code"]) == (field, code)
