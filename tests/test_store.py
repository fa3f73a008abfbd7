"""The image store and URL signing: atomic files, refusals, expiry, sweeping."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import FakeClock

from limner.errors import NotFound, StorageFailed
from limner.responses.store import ResponseStore, StoredResponse, new_response_id
from limner.store.local import LocalImageStore
from limner.store.signing import Signer, load_or_create_secret


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_secret_is_created_with_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "signing.key"
    secret = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret and len(secret) == 64


def test_signatures_bind_path_and_expiry() -> None:
    signer = Signer(b"k" * 32)
    sig = signer.sign("/v1/files/images/a.png", 100)
    assert signer.verify("/v1/files/images/a.png", 100, sig)
    assert not signer.verify("/v1/files/images/b.png", 100, sig)
    assert not signer.verify("/v1/files/images/a.png", 101, sig)
    assert not Signer(b"j" * 32).verify("/v1/files/images/a.png", 100, sig)


def test_put_and_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalImageStore(tmp_path, ttl_s=3600, clock=clock)
    stored = store.put(b"png-bytes", "png")
    assert stored.expires == int(clock.now) + 3600
    assert store.path_for(stored.name).read_bytes() == b"png-bytes"
    assert not list(tmp_path.glob(".*.part"))
    clock.now += 3600
    with pytest.raises(NotFound):
        store.path_for(stored.name)
    assert store.sweep() == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../secret.png", "..%2Fsecret.png", "/etc/passwd",
                                  "img_" + "A" * 32 + ".exe", "signing.key", ""])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(NotFound):
        LocalImageStore(tmp_path).path_for(name)


def test_symlinks_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "outside.png"
    target.write_bytes(b"secret")
    root = tmp_path / "images"
    root.mkdir()
    name = "img_" + "B" * 32 + ".png"
    (root / name).symlink_to(target)
    with pytest.raises(NotFound):
        LocalImageStore(root).path_for(name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_store_fails_cleanly(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageFailed) as caught:
            LocalImageStore(tmp_path).put(b"x", "png")
        assert caught.value.status == 507
    finally:
        tmp_path.chmod(0o700)


def test_unwritable_store_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageFailed) as caught:
        LocalImageStore(blocker / "images").put(b"x", "png")
    assert caught.value.status == 507 and caught.value.code == "storage_failed"


def test_stored_responses_sweep_keeps_the_cap_and_running_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    store = ResponseStore(tmp_path, ttl_s=100, max_bytes=2500, clock=clock)

    def saved(status: str) -> str:
        response = {"id": new_response_id(), "status": status, "background": True,
                    "output": [{"result": "A" * 1000}]}
        store.save(StoredResponse("", response, {}))
        clock.advance(1)
        return str(response["id"])

    running, old, newer, newest = (saved(s) for s in
                                   ("in_progress", "completed", "completed", "completed"))
    assert store.sweep() == 2  # over the cap: the two oldest finished ones go
    for gone in (old, newer):
        with pytest.raises(NotFound):
            store.load(gone, "")
    assert store.load(running, "").response["status"] == "in_progress"
    assert store.load(newest, "").id == newest
    clock.advance(101)
    assert store.sweep() == 1  # expired; a running one never expires
    assert [r.id for r in store.unfinished()] == [running]
