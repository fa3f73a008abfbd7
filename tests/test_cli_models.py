"""`limner models load|unload|loras|pull --lora`, against a real server and real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from conftest import RunningServer

from limner.cli import main
from limner.engines.fake import FakeEngine

HEADER_ONLY = b"\x02" + b"\0" * 7 + b"{}"
"""The smallest safetensors file: an empty header."""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_load_and_unload_need_an_admin_key(serve: Callable[..., RunningServer]) -> None:
    extra = FakeEngine(name="extra", memory_bytes=1 << 20)
    server = serve({"fake": FakeEngine(), "extra": extra}, api_keys=("user",),
                   admin_keys=("root",))
    code, stdout, stderr = run("models", "load", "extra", "--base-url", server.v1,
                               "--api-key", "user")
    assert code == 1 and not extra.loaded
    assert "403 Forbidden" in stderr
    assert json.loads(stdout)["code"] == "admin_key_required"
    code, stdout, stderr = run("models", "load", "extra", "--base-url", server.v1,
                               "--api-key", "root")
    assert code == 0, stderr
    loaded = json.loads(stdout)
    assert (loaded["status"], loaded["memory"]) == ("ready", {"cpu": 1 << 20})
    assert extra.loaded
    code, stdout, stderr = run("models", "unload", "extra", "--base-url", server.v1,
                               "--api-key", "root")
    assert code == 0, stderr
    assert json.loads(stdout)["status"] == "unloaded" and not extra.loaded


def test_pull_a_lora_from_a_file_and_list_it(serve: Callable[..., RunningServer],
                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve({"fake": FakeEngine(adapters=True), "plain": FakeEngine(name="plain")},
                   data_dir=data)
    weights = tmp_path / "Ink-Style.safetensors"
    weights.write_bytes(HEADER_ONLY)
    code, _, stderr = run("models", "pull", "someone/ink-style", "--lora", "--source",
                          str(weights), "--as", "ink", "--data-dir", str(data))
    assert code == 0, stderr
    assert (data / "loras" / "ink.safetensors").read_bytes() == HEADER_ONLY
    assert '"lora": [{"name": "ink"}]' in stderr
    code, stdout, stderr = run("models", "loras", "--base-url", server.v1)
    assert code == 0, stderr
    assert json.loads(stdout) == {"fake": ["ink"], "plain": []}


def test_pull_a_lora_offline_says_why(tmp_path: Path) -> None:
    code, _, stderr = run("models", "pull", "someone/ink-style", "--lora", "--data-dir",
                          str(tmp_path))
    assert code == 1
    assert stderr.startswith("Error: could not fetch the LoRA someone/ink-style: ")
    assert not (tmp_path / "loras" / "ink-style.safetensors").exists()
    code, _, stderr = run("models", "pull", "x", "--lora", "--as", "../etc", "--source",
                          str(tmp_path), "--data-dir", str(tmp_path))
    assert code == 1 and "cannot name an adapter" in stderr
