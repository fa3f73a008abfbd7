"""Faults not covered by test_api_faults.py (issue 4, item 4): the image store's disk full or
unwritable during a `response_format=url` request, and SIGTERM during a generation of a real
`limner serve` process."""

from __future__ import annotations

import concurrent.futures
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, free_port, wait_until_healthy

from limner.engines.fake import FakeEngine

Serve = Callable[..., RunningServer]
URL_BODY = {"prompt": "an otter", "model": "dall-e-2", "size": "256x256",
            "response_format": "url"}


def assert_507(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error" and error["code"] == "storage_failed"
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"]
    assert "url" not in response.text.replace("storage_failed", "")


def test_disk_full_is_a_507_and_leaves_no_partial_file(serve: Serve,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve()
    store = server.app.state.limner.delivery.store
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    response = httpx.post(server.v1 + "/images/generations", json=URL_BODY, timeout=30)
    assert_507(response)
    assert "No space left on device" in response.json()["error"]["message"]
    assert list(store.root.iterdir()) == []  # the partial write was removed, nothing to serve
    monkeypatch.setattr(os, "fsync", real_fsync)
    again = httpx.post(server.v1 + "/images/generations", json=URL_BODY, timeout=30)
    assert again.status_code == 200
    assert httpx.get(again.json()["data"][0]["url"]).status_code == 200


def test_unwritable_store_is_a_507_and_b64_still_works(serve: Serve) -> None:
    server = serve()
    store = server.app.state.limner.delivery.store
    # Unwritable for any user, root included: the store directory's place is taken by a file.
    shutil.rmtree(store.root, ignore_errors=True)
    store.root.parent.mkdir(parents=True, exist_ok=True)
    store.root.write_bytes(b"not a directory")
    response = httpx.post(server.v1 + "/images/generations", json=URL_BODY, timeout=30)
    assert_507(response)
    b64 = httpx.post(server.v1 + "/images/generations", timeout=30,
                     json={**URL_BODY, "response_format": "b64_json"})
    assert b64.status_code == 200  # only storing is broken, not generating
    assert httpx.get(server.base_url + "/healthz").status_code == 200
    store.root.unlink()
    assert httpx.post(server.v1 + "/images/generations", json=URL_BODY,
                      timeout=30).status_code == 200


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_store_directory_is_a_507(serve: Serve) -> None:
    server = serve()
    store = server.app.state.limner.delivery.store
    store.root.mkdir(parents=True, exist_ok=True)
    store.root.chmod(0o555)
    try:
        assert_507(httpx.post(server.v1 + "/images/generations", json=URL_BODY, timeout=30))
        assert list(store.root.iterdir()) == []
    finally:
        store.root.chmod(0o755)


def test_storage_failure_fails_only_its_own_request(serve: Serve,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests batched together: the url one fails on the disk, the b64 one is fine."""
    server = serve(engines={"fake": FakeEngine(step_s=0.05)}, batch_wait_ms=200)
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = pool.submit(httpx.post, server.v1 + "/images/generations", json=URL_BODY,
                          timeout=30)
        b64 = pool.submit(httpx.post, server.v1 + "/images/generations", timeout=30,
                          json={**URL_BODY, "response_format": "b64_json"})
        assert_507(url.result())
        assert b64.result().status_code == 200


# SIGTERM during a generation -------------------------------------------------------------------
def limner_process(tmp_path: Path, toml: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `limner serve` process with this config file, once it answers `/healthz`."""
    config = tmp_path / "limner.toml"
    config.write_text(toml)
    port = free_port()
    env = {**os.environ, "LIMNER_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "limner", "serve", "--port", str(port), "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, polls=1200)
    except BaseException:
        process.kill()
        raise
    return process, base


@pytest.mark.slow
def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(tmp_path: Path) -> None:
    # A grace far beyond the waits below: exiting within them shows the server stopped once
    # the request was answered, not when the grace ran out.
    process, base = limner_process(tmp_path, 'default_engine = "fake"\nshutdown_grace_s = 300\n\n'
                                   '[engines.fake]\nkind = "fake"\nstep_s = 0.2\n')
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # quality=high: 8 steps x 0.2 s = 1.6 s of generation.
            pending = pool.submit(httpx.post, base + "/v1/images/generations", timeout=30,
                                  json={"prompt": "x", "model": "gpt-image-1",
                                        "quality": "high", "response_format": "b64_json"})
            time.sleep(0.5)
            assert not pending.done()
            process.send_signal(signal.SIGTERM)
            response = pending.result(timeout=25)
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["b64_json"]
        assert process.wait(timeout=25) == 0
        _, stderr = process.communicate(timeout=5)
        assert "limner stopped" in stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()


def test_disk_full_in_the_middle_of_a_request_keeps_none_of_its_files(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve()
    store = server.app.state.limner.delivery.store
    real_fsync = os.fsync
    calls = {"n": 0}

    def fills_up(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    response = httpx.post(server.v1 + "/images/generations", json={**URL_BODY, "n": 4},
                          timeout=30)
    assert_507(response)
    assert calls["n"] == 3, "two images were written before the disk filled up"
    assert list(store.root.iterdir()) == []


@pytest.mark.slow
def test_past_the_grace_period_every_waiting_request_gets_503_shutting_down(
        tmp_path: Path) -> None:
    process, base = limner_process(
        tmp_path, 'default_engine = "fake"\nshutdown_grace_s = 1\n\n'
        '[engines.fake]\nkind = "fake"\nstep_s = 1.0\nmax_batch_images = 1\n')
    body = {"prompt": "x", "model": "gpt-image-1", "quality": "high"}  # 8 steps of 1 s

    def stream() -> str:
        with httpx.stream("POST", base + "/v1/images/generations", timeout=60,
                          json={**body, "stream": True}) as response:
            assert response.status_code == 200
            return response.read().decode()

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            plain = [pool.submit(httpx.post, base + "/v1/images/generations", json=body,
                                 timeout=60) for _ in range(3)]
            streamed = pool.submit(stream)
            time.sleep(0.8)
            process.send_signal(signal.SIGTERM)
            for future in plain:
                response = future.result(timeout=30)
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/json"
                error = response.json()["error"]
                assert (error["type"], error["code"]) == ("server_error", "shutting_down")
            events = streamed.result(timeout=30)
            assert events.startswith("event: error\ndata: "), events[:200]
            assert '"code":"shutting_down"' in events
        assert process.wait(timeout=30) == 0
        _, stderr = process.communicate(timeout=5)
        assert "Traceback" not in stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
