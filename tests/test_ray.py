"""limner on Ray Serve: a local Ray instance (2 CPUs, no dashboard), started once for the module,
serving the fake engine on two replicas, driven by the official `openai` client."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import openai
import pytest
from conftest import decoded, free_port, images_of
from PIL import Image

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow
SECRET = "a-shared-signing-secret-of-32-bytes"


class Served(NamedTuple):
    base_url: str
    pid: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`limner serve --ray --replicas 2` itself, in its own process with its own local Ray."""
    folder = tmp_path_factory.mktemp("ray")
    config = folder / "limner.toml"
    config.write_text(f'signing_secret = "{SECRET}"\nmax_queue = 8\n'
                      '[engines.fake]\nkind = "fake"\nstep_s = 0.05\n')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "limner", "serve", "--ray", "--replicas", "2", "--port",
         str(port), "--config", str(config), "--data-dir", str(folder / "data")],
        stdout=subprocess.DEVNULL, stderr=(folder / "serve.log").open("wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (folder / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "limner serve --ray did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield Served(base, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def base_url(served: Served) -> str:
    return served.base_url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0, timeout=60)



def test_the_api_through_ray(client: openai.OpenAI, base_url: str) -> None:
    result = client.images.generate(prompt="a fox", model="gpt-image-1", size="1024x1536",
                                    output_format="webp")
    picture = decoded(images_of(result)[0].b64_json)
    assert (picture.format, picture.size) == ("WEBP", (1024, 1536))
    by_url = client.images.generate(prompt="a fox", model="dall-e-2", size="256x256", n=2)
    for image in images_of(by_url):
        assert image.url is not None and image.url.startswith(base_url)
        assert Image.open(io.BytesIO(httpx.get(image.url).content)).size == (256, 256)
    events = list(client.images.generate(prompt="a fox", model="gpt-image-1", stream=True,
                                         partial_images=2))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"]
    edit = client.images.edit(prompt="a hat", model="gpt-image-1",
                              image=_png(Image.new("RGB", (64, 64), "red")))
    assert decoded(images_of(edit)[0].b64_json).size == (1024, 1024)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a fox", model="gpt-image-1", size="13x13")
    assert caught.value.body == {
        "message": "Invalid value: '13x13'. Supported values are: '1024x1024', '1024x1536', "
                   "'1536x1024', and 'auto'.",
        "type": "invalid_request_error", "param": "size", "code": "invalid_value"}
    health = httpx.get(base_url + "/healthz").json()
    assert health["status"] == "ok" and health["replicas"] == {"fake": 2}


def test_both_replicas_answer(client: openai.OpenAI, base_url: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.images.generate(
            prompt=f"a fox {i}", model="gpt-image-1", quality="high"), range(8)))
    assert all(len(images_of(r)) == 1 for r in results)
    metrics = httpx.get(base_url + "/metrics").text
    replicas = [line for line in metrics.splitlines()
                if line.startswith('limner_replica_answers{model="fake"')]
    assert len(replicas) == 2, replicas
    assert 'limner_replicas{model="fake"} 2' in metrics


def test_a_killed_replica_leaves_no_request_hanging(client: openai.OpenAI,
                                                    served: Served) -> None:
    base_url = served.base_url
    def one(i: int) -> int:
        try:
            client.images.generate(prompt=f"a fox {i}", model="gpt-image-2.5-flare",
                                   quality="max")
        except openai.APIStatusError as exc:
            assert exc.status_code in (429, 503), exc.body
            assert isinstance(exc.body, dict) and "message" in exc.body
            assert exc.response.headers.get("retry-after"), "a refusal says when to retry"
            return exc.status_code
        return 200

    replicas = _replica_pids("model-fake", served.pid)
    assert len(replicas) == 2
    with ThreadPoolExecutor(12) as pool:
        answers = [pool.submit(one, i) for i in range(24)]
        time.sleep(0.5)  # load is running: kill one replica's process mid-request
        os.kill(replicas[0], signal.SIGKILL)
        statuses = [answer.result(timeout=90) for answer in answers]
    # Every request answered, none hung: drawn, or refused with the time to come back.
    assert set(statuses) <= {200, 429, 503} and 200 in statuses
    # Ray brings the replica back, and the service answers again.
    deadline = time.monotonic() + 60
    while httpx.get(base_url + "/healthz").json().get("replicas") != {"fake": 2}:
        assert time.monotonic() < deadline, "the replica did not come back"
        time.sleep(0.5)
    assert len(images_of(client.images.generate(prompt="again", model="gpt-image-1"))) == 1


def _replica_pids(deployment: str, root: int) -> list[int]:
    """Ray names a replica's worker process after it (`ray::ServeReplica:app:deployment`);
    only those under `root` (our server's own Ray), not another Ray's on the machine."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def under_root(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, command in commands.items()
            if command.startswith(b"ray::ServeReplica:") and deployment.encode() in command
            and under_root(pid)]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_without_ray_the_flag_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    from click.testing import CliRunner

    from limner.cli import main

    real_find_spec = __import__("importlib.util").util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name.startswith("ray") else real_find_spec(name, *args)

    monkeypatch.setattr("importlib.util.find_spec", missing)
    result = CliRunner().invoke(main, ["serve", "--ray", "--data-dir", str(tmp_path),
                                       "--port", str(free_port())])
    assert result.exit_code == 1
    assert "pip install 'limner[ray]'" in result.output


def test_the_builder_reads_the_config_as_serve_run_does(tmp_path: Path) -> None:
    from ray.serve import Application

    from limner.ray import app

    config = tmp_path / "limner.toml"
    config.write_text('[engines.fake]\nkind = "fake"\nnum_cpus = 0.5\n'
                      'autoscaling = {min = 1, max = 3, target_ongoing_requests = 2}\n')
    built = app({"config": str(config)})
    assert isinstance(built, Application)
    from limner.config import load_settings
    from limner.ray.deployments import _model_deployment

    [engine] = load_settings(config).engines
    assert engine.options == {} and engine.ray["num_cpus"] == 0.5
    deployment = _model_deployment(engine, load_settings(config), None)
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 3)
    assert deployment.ray_actor_options["num_cpus"] == 0.5
