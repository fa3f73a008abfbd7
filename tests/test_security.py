"""Security over real HTTP (issue 4, item 5): path traversal through the file route, replayed
signatures, API keys kept out of logs, `x-request-id` on every response, `user` audited."""

from __future__ import annotations

import http.client
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import RunningServer

from limner.engines.fake import FakeEngine

Serve = Callable[..., RunningServer]
GEN = "/v1/images/generations"


def raw_get(server: RunningServer, target: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the request target sent byte for byte (httpx would normalise `..`)."""
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def new_url(server: RunningServer) -> str:
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "an otter", "model": "dall-e-2", "size": "256x256"})
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url


def signed(server: RunningServer, name: str) -> str:
    """A query string carrying a *valid* signature for `name`, as if an attacker had one."""
    delivery = server.app.state.limner.delivery
    expires = int(server.clock()) + 600
    signature = delivery.signer.sign(f"{delivery.route}/{name}", expires)
    return f"expires={expires}&signature={signature}"


# Path traversal ---------------------------------------------------------------------------------
TRAVERSALS = [
    "../signing.key", "../../signing.key", "%2e%2e/signing.key", "%2E%2E%2Fsigning.key",
    "..%2Fsigning.key", "..%2F..%2Fsigning.key", "%2e%2e%5csigning.key", "..\\signing.key",
    "/etc/passwd", "%2Fetc%2Fpasswd", "%2F%2Fetc%2Fpasswd", "....//signing.key",
    "img_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png%00.key", "..", "%2e%2e", ".", "%2e",
]


def test_path_traversal_through_the_file_route(serve: Serve) -> None:
    server = serve()
    new_url(server)  # the store directory exists and holds a file
    secret = (server.settings.data_dir / "signing.key").read_bytes()
    for attempt in TRAVERSALS:
        for query in ("", "?" + signed(server, attempt)):
            target = f"/v1/files/images/{attempt}{query}"
            status, headers, body = raw_get(server, target)
            assert status in (400, 403, 404), (target, status, body[:200])
            assert secret not in body and b"root:" not in body, target
            assert headers.get("x-request-id"), target
            if headers.get("content-type", "").startswith("application/json"):
                assert b'"error"' in body


def test_planted_symlinks_and_partial_files_are_not_served(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    url = new_url(server)
    store = server.app.state.limner.delivery.store
    real_name = urlsplit(url).path.rsplit("/", 1)[1]
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG secret outside the store")
    plants = {
        "img_" + "S" * 32 + ".png": server.settings.data_dir / "signing.key",
        "img_" + "T" * 32 + ".png": outside,
        "img_" + "U" * 32 + ".png": store.root / real_name,  # a link to a real image
    }
    for name, target in plants.items():
        os.symlink(target, store.root / name)
    partial = "." + "img_" + "V" * 32 + ".png.part"
    (store.root / partial).write_bytes(b"\x89PNG half written")
    for name in [*plants, partial]:
        status, headers, body = raw_get(server, f"/v1/files/images/{name}?{signed(server, name)}")
        assert status == 404, (name, status)
        assert b"secret" not in body and b"half written" not in body
        assert headers["x-request-id"]
    # The links were refused although their names are well formed; the real file still works.
    assert httpx.get(url).status_code == 200


def test_signature_replayed_on_another_files_path(serve: Serve) -> None:
    server = serve()
    first, second = new_url(server), new_url(server)
    assert first != second
    query_first = urlsplit(first).query
    second_path = urlsplit(second).path
    replayed = httpx.get(f"{server.base_url}{second_path}?{query_first}")
    assert replayed.status_code == 403
    assert replayed.json()["error"]["code"] == "invalid_signature"
    # Same expiry, signature of one file, name of the other, the other way round too.
    params = parse_qs(urlsplit(second).query)
    swapped = httpx.get(f"{server.base_url}{urlsplit(first).path}?expires={params['expires'][0]}"
                        f"&signature={params['signature'][0]}")
    assert swapped.status_code == 403
    assert httpx.get(first).status_code == 200 and httpx.get(second).status_code == 200


# API keys in logs --------------------------------------------------------------------------------
def test_api_keys_never_reach_the_logs(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    right, wrong = "sk-right-4f1c2a9e7b", "sk-wrong-8d3b6c0e1a"
    server = serve(api_keys=(right,))
    caplog.set_level(logging.DEBUG)
    for key in (wrong, right):
        headers = {"authorization": f"Bearer {key}"}
        httpx.get(server.v1 + "/models", headers=headers)
        response = httpx.post(server.v1 + "/images/generations", headers=headers, timeout=30,
                              json={"prompt": "x", "model": "gpt-image-1", "user": "u1"})
        assert response.status_code == (200 if key == right else 401)
        assert wrong not in response.text and right not in response.text
    httpx.get(server.v1 + "/models", headers={"authorization": "Basic " + wrong})
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "/v1/models 401" in text and "/v1/images/generations 200" in text  # logs were seen
    for key in (right, wrong, right[3:], wrong[3:]):
        assert key not in text


# x-request-id everywhere ---------------------------------------------------------------------
def test_request_id_on_every_response(serve: Serve) -> None:
    keyed = serve(api_keys=("sk-k",), engines={"fake": FakeEngine(fail_on="boom")})
    auth = {"authorization": "Bearer sk-k"}
    cases: list[tuple[int, httpx.Response]] = [
        (200, httpx.get(keyed.base_url + "/healthz")),
        (200, httpx.get(keyed.v1 + "/models", headers=auth)),
        (401, httpx.get(keyed.v1 + "/models")),
        (404, httpx.get(keyed.v1 + "/models/nope", headers=auth)),
        (404, httpx.get(keyed.v1 + "/no-such-route", headers=auth)),
        (405, httpx.delete(keyed.v1 + "/images/generations", headers=auth)),
        (400, httpx.post(keyed.base_url + GEN, headers=auth, json={"prompt": ""})),
        (413, httpx.post(keyed.base_url + GEN, timeout=30,
                         headers={**auth, "content-type": "application/json"},
                         content=b'{"prompt": "' + b"x" * 1_200_000 + b'"}')),
        (415, httpx.post(keyed.base_url + GEN, headers=auth, content=b"prompt=x")),
        (500, httpx.post(keyed.base_url + GEN, headers=auth, timeout=30,
                         json={"prompt": "boom", "model": "gpt-image-1"})),
        (403, httpx.get(keyed.v1 + "/files/images/img_" + "A" * 32 + ".png")),
    ]

    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an unexpected bug")

    service = keyed.app.state.limner.service
    original = service.start
    service.start = explode
    try:
        cases.append((500, httpx.post(keyed.base_url + GEN, headers=auth, timeout=30,
                                      json={"prompt": "x", "model": "gpt-image-1"})))
    finally:
        service.start = original
    ids = set()
    for expected, response in cases:
        assert response.status_code == expected, (expected, response.text[:200])
        request_id = response.headers.get("x-request-id", "")
        assert request_id.startswith("req_"), (expected, response.request.url)
        ids.add(request_id)
        if expected >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert len(ids) == len(cases)
    echoed = httpx.get(keyed.base_url + "/healthz", headers={"x-request-id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    for bad in ("x" * 500, "a\tb"):  # ("\x7f" is refused by uvicorn's parser itself)
        replaced = httpx.get(keyed.base_url + "/healthz", headers={"x-request-id": bad})
        assert replaced.headers["x-request-id"].startswith("req_")


# Audit --------------------------------------------------------------------------------------------
def test_the_safety_identifier_is_recorded_in_the_audit_log(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """`safety_identifier` when non-empty, else the deprecated `user`, as the spec says."""
    server = serve()
    caplog.set_level(logging.INFO, logger="limner.audit")
    cases = [({"user": "alice-7"}, "alice-7"),
             ({"user": "bob\nFORGED audit line"}, "bob\nFORGED audit line"),
             ({"user": "کاربر 🦦"}, "کاربر 🦦"),
             ({"user": "old", "safety_identifier": "hash-1"}, "hash-1"),
             ({"user": "old", "safety_identifier": ""}, "old")]
    ids = []
    for fields, _ in cases:
        response = httpx.post(server.v1 + "/images/generations", timeout=30,
                              json={"prompt": "x", "model": "gpt-image-1", **fields})
        assert response.status_code == 200
        assert response.json()["safety_identifier"] == _
        ids.append(response.headers["x-request-id"])
    audit = [r.getMessage() for r in caplog.records if r.name == "limner.audit"]
    for (_, expected), request_id in zip(cases, ids, strict=True):
        line = next(m for m in audit if m.startswith(request_id))
        assert f"safety_identifier={expected!r}" in line
        assert "\n" not in line  # repr: a user cannot forge a second log line


# The file route's query is validated like a body ------------------------------------------------
@pytest.mark.parametrize("query", [
    "expires=1999999999&signature=%C3%A9",  # non-ASCII signature
    "expires=%C2%B2&signature=" + "a" * 64,  # '²'.isdigit() is true, int() refuses it
    "expires=" + "9" * 5000 + "&signature=" + "a" * 64,  # over Python's digit limit
    "expires=%EF%BC%91&signature=" + "a" * 64,  # a fullwidth digit one
    "expires=1999999999&signature=" + "A" * 64,  # not what the signer writes
    "expires=&signature=", "", "expires=1999999999",
])
def test_a_malformed_file_query_is_a_403_envelope(serve: Serve, query: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = serve()
    name = new_url(server).split("/")[-1].split("?")[0]
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(2):  # the same connection twice: it stays open after the 403
            response = client.get(f"/v1/files/images/{name}?{query}")
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error",
                                                      "invalid_signature")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
