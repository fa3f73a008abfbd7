"""Several models on one server: each loads when first asked for, the loaded ones share
`max_model_memory`, an idle one makes room or is let go after its keep-alive, and operators
with an admin key load and unload them. Real server, the official client, fake engines that
really hold their memory (so the process's RSS shows an unload)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from conftest import RunningServer
from PIL import Image

from limner.config import EngineConfig
from limner.engines.fake import FakeEngine

MIB = 1 << 20


def rss() -> int:
    """This process's resident memory (the server runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def colour(item: openai.types.Image) -> tuple[int, ...]:
    assert item.b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    pixel = image.convert("RGBA").getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return pixel


def first_image(answer: openai.types.ImagesResponse) -> openai.types.Image:
    assert answer.data
    return answer.data[0]


def body_of(error: openai.APIStatusError) -> dict[str, object]:
    assert isinstance(error.body, dict)
    return error.body


def state_of(server: RunningServer, name: str) -> dict[str, object]:
    """Its `/healthz` entry; `idle_s` (which grows as the test runs) only checked to be a
    number where the model is loaded and idle."""
    models = httpx.get(server.base_url + "/healthz").json()["models"]
    entry: dict[str, object] = models[name]
    idle = entry.pop("idle_s", None)
    assert (idle is None) == (entry["status"] != "ready") or isinstance(idle, float)
    return entry


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def client_for(server: RunningServer, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def test_the_second_model_unloads_the_first_under_a_budget_that_fits_one(
        serve: Callable[..., RunningServer]) -> None:
    first = FakeEngine(name="first", memory_bytes=96 * MIB)
    second = FakeEngine(name="second", memory_bytes=96 * MIB)
    server = serve({"first": first, "second": second}, max_model_memory=150 * MIB)
    client = client_for(server)
    assert state_of(server, "first") == {"status": "ready", "memory": {"cpu": 96 * MIB}}
    assert state_of(server, "second") == {"status": "unloaded", "memory": {}}
    assert client.models.retrieve("second").model_dump()["status"] == "unloaded"

    client.images.generate(model="first", prompt="an otter")  # the answer path's own memory
    before = rss()
    answer = client.images.generate(model="second", prompt="an otter",
                                    response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(first_image(answer).b64_json or ""))).size \
        == (1024, 1024)
    assert (first.loaded, second.loaded) == (False, True)
    assert state_of(server, "first") == {"status": "unloaded", "memory": {}}
    assert state_of(server, "second")["memory"] == {"cpu": 96 * MIB}
    # One model's memory in, one out: the process holds no more than before (it may hold
    # less: the unload's trim hands back other freed memory too), not both models' 192 MiB.
    assert rss() - before < 48 * MIB

    unloaded = rss()
    client.images.generate(model="first", prompt="an otter")
    assert (first.loaded, second.loaded) == (True, False)
    assert (first.loads, second.loads) == (2, 1)
    assert rss() - unloaded < 48 * MIB
    health = httpx.get(server.base_url + "/healthz").json()
    assert health["status"] == "ok" and health["loaded"] == ["first"]


def test_an_operator_unload_gives_the_memory_back(serve: Callable[..., RunningServer]) -> None:
    extra = FakeEngine(name="extra", memory_bytes=128 * MIB)
    server = serve({"fake": FakeEngine(), "extra": extra}, admin_keys=("root",),
                   api_keys=("user",))
    admin = server.http(headers={"authorization": "Bearer root"})
    before = rss()
    loaded = admin.post("/v1/models/extra/load")
    assert loaded.status_code == 200
    body = loaded.json()
    assert (body["id"], body["status"], body["memory"], body["engine"]) == (
        "extra", "ready", {"cpu": 128 * MIB}, "extra")
    assert rss() - before > 100 * MIB
    unloaded = admin.post("/v1/models/extra/unload")
    assert unloaded.status_code == 200
    assert unloaded.json()["status"] == "unloaded" and unloaded.json()["memory"] is None
    assert rss() - before < 32 * MIB
    assert not extra.loaded
    # The next request loads it again, on demand.
    client_for(server, "user").images.generate(model="extra", prompt="an otter")
    assert extra.loads == 2


def test_only_admin_keys_load_and_unload(serve: Callable[..., RunningServer]) -> None:
    server = serve({"fake": FakeEngine(), "extra": FakeEngine(name="extra")},
                   api_keys=("user",), admin_keys=("root",))
    for key in ("user", "root"):  # an admin key is an API key too
        assert client_for(server, key).images.generate(prompt="an otter").data
    with server.http(headers={"authorization": "Bearer user"}) as user:
        for action in ("load", "unload"):
            refused = user.post(f"/v1/models/extra/{action}")
            assert refused.status_code == 403
            assert refused.json() == {"error": {
                "message": "Loading and unloading models needs an admin key (admin_keys in "
                           "the server's configuration).",
                "type": "invalid_request_error", "param": None,
                "code": "admin_key_required"}}
    with server.http() as nobody:
        assert nobody.post("/v1/models/extra/load").status_code == 401
    with server.http(headers={"authorization": "Bearer root"}) as root:
        assert root.post("/v1/models/extra/load").json()["status"] == "ready"
        missing = root.post("/v1/models/nope/load")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"


def test_requests_during_a_load_wait_for_it_and_share_it(
        serve: Callable[..., RunningServer]) -> None:
    slow = FakeEngine(name="slow", gated_load=True)
    server = serve({"fake": FakeEngine(), "slow": slow})
    client = client_for(server)
    with ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(client.images.generate, model="slow", prompt=f"otter {i}",
                               response_format="b64_json") for i in range(2)]
        assert slow.load_started.wait(10)
        assert client.models.retrieve("slow").model_dump()["status"] == "loading"
        # A stream for the loading model opens and waits too, with no invented pictures.
        streaming = pool.submit(lambda: [e.type for e in client.images.generate(
            model="slow", prompt="otter 3", stream=True, partial_images=0)])
        with httpx.stream("POST", server.v1 + "/images/generations", timeout=30,
                          json={"model": "slow", "prompt": "otter 4", "stream": True,
                                "response_format": "b64_json"}) as raw:
            lines = raw.iter_lines()
            assert next(lines) == ": loading model slow; the first events follow its load"
            assert not streaming.done() and not any(f.done() for f in waiting)
            slow.release_load()
            assert [line for line in lines if line.startswith("event:")] == [
                "event: image_generation.completed"]
        results = [f.result(timeout=30) for f in waiting]
        assert streaming.result(timeout=30) == ["image_generation.completed"]
    assert slow.loads == 1
    assert [len(r.data or []) for r in results] == [1, 1]
    assert colour(first_image(results[0])) != colour(first_image(results[1]))


def test_a_model_too_large_for_the_budget_is_refused_naming_it(
        serve: Callable[..., RunningServer]) -> None:
    huge = FakeEngine(name="huge", memory_bytes=300 * MIB)
    server = serve({"fake": FakeEngine(), "huge": huge}, max_model_memory="200MiB")
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(server).images.generate(model="huge", prompt="an otter")
    assert caught.value.body == {
        "message": "The model 'huge' needs about 300.0 MiB of memory on cpu, more than the "
                   "200.0 MiB that max_model_memory allows for all loaded models there; raise "
                   "max_model_memory or serve a smaller model.",
        "type": "invalid_request_error", "param": "model", "code": "model_too_large"}
    assert not huge.load_started.is_set()


def test_a_model_in_use_is_not_unloaded_under_its_request(
        serve: Callable[..., RunningServer]) -> None:
    busy = FakeEngine(name="busy", gated=True, memory_bytes=64 * MIB)
    other = FakeEngine(name="other", memory_bytes=64 * MIB)
    server = serve({"busy": busy, "other": other}, max_model_memory=100 * MIB,
                   admin_keys=("root",))
    client = client_for(server, "root")
    with ThreadPoolExecutor(2) as pool:
        drawing = pool.submit(client.images.generate, model="busy", prompt="an otter",
                              response_format="b64_json")
        busy.release(1)
        assert busy.wait_for_steps(1, 10)
        refused = server.http(headers={"authorization": "Bearer root"}).post(
            "/v1/models/busy/unload")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "model_in_use"
        waiting = pool.submit(client.images.generate, model="other", prompt="an otter")
        time.sleep(0.3)
        assert not waiting.done() and busy.loaded and not other.loaded
        busy.release(100)
        assert drawing.result(timeout=30).data
        assert waiting.result(timeout=30).data
    assert (busy.loaded, other.loaded) == (False, True)


def test_an_idle_model_is_unloaded_after_its_keep_alive(
        serve: Callable[..., RunningServer]) -> None:
    brief = FakeEngine(name="brief", memory_bytes=8 * MIB)
    server = serve({"fake": FakeEngine(), "brief": brief},
                   tables=(EngineConfig("fake", "fake"),
                            EngineConfig("brief", "fake", keep_alive="1s")))
    client_for(server).images.generate(model="brief", prompt="an otter")
    assert state_of(server, "brief")["keep_alive_s"] == 1.0
    wait_for(lambda: state_of(server, "brief")["status"] == "unloaded")
    assert not brief.loaded
    assert state_of(server, "fake")["status"] == "ready"  # -1 by default: kept


def test_preload_loads_at_start(serve: Callable[..., RunningServer]) -> None:
    early, late = FakeEngine(name="early"), FakeEngine(name="late")
    server = serve({"fake": FakeEngine(), "early": early, "late": late},
                   tables=(EngineConfig("early", "fake", preload=True),))
    wait_for(lambda: early.loaded)
    assert not late.loaded
    assert state_of(server, "early")["status"] == "ready"


def test_a_failed_load_is_tried_again_by_an_operator(
        serve: Callable[..., RunningServer]) -> None:
    class FlakyEngine(FakeEngine):
        failures = 1

        def load(self) -> None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("the disk was not mounted yet")
            super().load()

    flaky = FlakyEngine(name="flaky")
    server = serve({"fake": FakeEngine(), "flaky": flaky})
    client = client_for(server)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="flaky", prompt="an otter")
    assert body_of(caught.value)["message"] == (
        "The model 'flaky' failed to load and is not available: RuntimeError: the disk was "
        "not mounted yet")
    assert client.models.retrieve("flaky").model_dump()["status"] == "failed"
    again = server.http().post("/v1/models/flaky/load")  # no keys: everyone is an operator
    assert again.status_code == 200 and again.json()["status"] == "ready"
    assert client.images.generate(model="flaky", prompt="an otter").data


def test_requests_with_different_adapters_are_drawn_apart(
        serve: Callable[..., RunningServer], tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    for name in ("ink", "paper"):
        (loras / f"{name}.safetensors").write_bytes(b"\x02" + b"\0" * 7 + b"{}")
    engine = FakeEngine(name="fake", adapters=True, step_s=0.05)
    server = serve({"fake": engine}, data_dir=tmp_path,
                   models={"dall-e-3": {"engine": "fake", "lora": [{"name": "ink",
                                                                    "scale": 0.5}]}})
    client = client_for(server)
    listed = {m.id: m.model_dump() for m in client.models.list()}
    assert listed["fake"]["adapters"] == ["ink", "paper"]
    assert listed["dall-e-3"]["lora"] == [{"name": "ink", "scale": 0.5}]

    def draw(lora: object) -> tuple[int, ...]:
        extra: dict[str, object] = {"seed": 7} if lora is None else {"seed": 7, "lora": lora}
        answer = client.images.generate(model="gpt-image-1", prompt="an otter",
                                        response_format="b64_json", extra_body=extra)
        return colour(first_image(answer))

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(draw, lora) for lora in (
            [{"name": "ink", "scale": 0.8}], [{"name": "paper"}], None)]
        drawn = [f.result(timeout=30) for f in futures]
    assert len(set(drawn)) == 3
    assert all(len({tuple((a.name, a.scale) for a in p.adapters) for p in batch}) == 1
               for batch in engine.batches)
    assert draw([{"name": "ink", "scale": 0}]) == draw(None)
    assert draw([{"name": "ink", "scale": 0.8}]) == drawn[0]
    # The OpenAI name with its own adapter draws with it; the request may change its scale.
    styled = client.images.generate(model="dall-e-3", prompt="an otter",
                                    response_format="b64_json", extra_body={"seed": 7})
    assert colour(first_image(styled)) not in drawn
    rescaled = client.images.generate(
        model="dall-e-3", prompt="an otter", response_format="b64_json",
        extra_body={"seed": 7, "lora": {"name": "ink", "scale": 0.8}})
    assert colour(first_image(rescaled)) == drawn[0]


def test_bad_adapters_are_refused_naming_lora(serve: Callable[..., RunningServer],
                                              tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    for name in ("ink", "paper", "moss"):
        (loras / f"{name}.safetensors").write_bytes(b"\x02" + b"\0" * 7 + b"{}")
    server = serve({"fake": FakeEngine(adapters=True), "plain": FakeEngine(name="plain")},
                   data_dir=tmp_path, max_request_loras=2)
    client = client_for(server)
    cases = [
        ({"lora": [{"name": "nope"}]}, "gpt-image-1", "lora_not_found",
         "Invalid 'lora': the server has no adapter named 'nope'. Offered: ink, moss, paper."),
        ({"lora": [{"name": n} for n in ("ink", "paper", "moss")]}, "gpt-image-1",
         "invalid_value", "Invalid 'lora': at most 2 adapters per request, but got 3."),
        ({"lora": [{"name": "ink"}, {"name": "ink", "scale": 0.5}]}, "gpt-image-1",
         "invalid_value", "Invalid 'lora': the adapter 'ink' is named twice."),
        ({"lora": [{"name": "ink", "scale": 9}]}, "gpt-image-1", "invalid_value",
         "Invalid 'lora[0].scale': expected a number between -4 and 4, but got 9 instead."),
        ({"lora": [{"name": "ink"}]}, "plain", "unsupported_parameter",
         "Unsupported parameter: 'lora' is not supported by the engine that draws 'plain' "
         "(it takes adapters per request only on the plain torch path; see request_loras in "
         "the README)."),
    ]
    for extra, model, code, message in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model=model, prompt="an otter", extra_body=extra)
        assert caught.value.body == {"message": message, "type": "invalid_request_error",
                                     "param": "lora", "code": code}
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="an otter", extra_body={"lora": [{"name": "ink",
                                                                        "path": "/etc"}]})
    assert body_of(caught.value)["code"] == "unknown_parameter"
    assert body_of(caught.value)["param"] == "lora[0].path"
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="an otter", extra_body={"lora": "ink"})
    assert body_of(caught.value)["code"] == "invalid_type"
    # An edit through multipart takes the short form.
    png = io.BytesIO()
    Image.new("RGBA", (64, 64), (9, 9, 9, 255)).save(png, "PNG")
    edited = httpx.post(server.v1 + "/images/edits",
                        files={"image": ("a.png", png.getvalue(), "image/png")},
                        data={"prompt": "an otter", "lora": "nope:0.5"}, timeout=30)
    assert edited.status_code == 400 and edited.json()["error"]["code"] == "lora_not_found"


def test_a_busy_loaded_model_does_not_starve_a_waiting_load(
        serve: Callable[..., RunningServer]) -> None:
    """While one model draws request after request, a load waiting for its room gets it at
    the end of the current batch."""
    steady = FakeEngine(name="steady", memory_bytes=16 * MIB, step_s=0.02)
    late = FakeEngine(name="late", memory_bytes=16 * MIB)
    server = serve({"steady": steady, "late": late}, max_model_memory=24 * MIB)
    client = client_for(server)
    stop = threading.Event()

    def keep_drawing() -> int:
        count = 0
        while not stop.is_set():
            client.images.generate(model="steady", prompt="an otter")
            count += 1
        return count

    with ThreadPoolExecutor(3) as pool:
        loops = [pool.submit(keep_drawing) for _ in range(2)]
        time.sleep(0.2)
        assert client.images.generate(model="late", prompt="an otter").data
        stop.set()
        assert all(f.result(timeout=30) > 0 for f in loops)
