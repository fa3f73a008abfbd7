"""Failures over real HTTP: engine errors, full queues, disconnects, in-band stream errors."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import httpx
import httpx2
import openai
import pytest
from conftest import RunningServer

from limner.engines.fake import FakeEngine

Serve = Callable[..., RunningServer]


def test_engine_failure_is_a_500_envelope_and_the_next_request_works(serve: Serve) -> None:
    server = serve(engines={"fake": FakeEngine(fail_on="boom")})
    response = httpx.post(server.v1 + "/images/generations", timeout=30,
                          json={"prompt": "boom", "model": "gpt-image-1"})
    assert response.status_code == 500
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "generation_failed"
    assert set(error) == {"message", "type", "param", "code"}
    ok = httpx.post(server.v1 + "/images/generations", timeout=30,
                    json={"prompt": "fine", "model": "gpt-image-1"})
    assert ok.status_code == 200


def test_failure_after_the_stream_opened_is_an_error_event(serve: Serve) -> None:
    server = serve(engines={"fake": FakeEngine(fail_on="boom")})
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    stream = client.images.generate(prompt="boom", model="gpt-image-1", stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "could not be generated" in caught.value.message
    with httpx.stream("POST", server.v1 + "/images/generations", timeout=30,
                      json={"prompt": "boom", "model": "gpt-image-1", "stream": True}) as raw:
        assert raw.status_code == 200
        text = raw.read().decode()
    assert text.startswith("event: error\ndata: {\"type\":\"error\",\"error\":{")
    assert text.endswith("\n\n")


def test_full_queue_answers_429_with_retry_after(serve: Serve) -> None:
    server = serve(engines={"fake": FakeEngine(step_s=0.2, max_batch_images=1)}, max_queue=1)
    body = {"prompt": "x", "model": "gpt-image-1", "quality": "low"}

    def send(_: int) -> httpx.Response:
        return httpx.post(server.v1 + "/images/generations", json=body, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2
    limited = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 120
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"


def test_models_and_health_stay_instant_during_generation(serve: Serve) -> None:
    server = serve(engines={"fake": FakeEngine(step_s=0.3)})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, server.v1 + "/images/generations", timeout=60,
                              json={"prompt": "x", "model": "gpt-image-1", "quality": "high"})
        time.sleep(0.3)
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        assert httpx.get(server.v1 + "/models").status_code == 200
        # Answered while the 8-step (2.4 s) generation is still running: the loop is free.
        assert not pending.done()
        assert pending.result().status_code == 200


def test_client_disconnect_cancels_generation(serve: Serve) -> None:
    engine = FakeEngine(step_s=0.2)
    server = serve(engines={"fake": engine})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.v1 + "/images/generations", timeout=0.5,
                   json={"prompt": "x", "model": "gpt-image-1", "quality": "high"})
    time.sleep(1.0)
    assert engine.steps_run < 8


def test_stream_disconnect_cancels_generation(serve: Serve) -> None:
    engine = FakeEngine(step_s=0.2)
    server = serve(engines={"fake": engine})
    with httpx.stream("POST", server.v1 + "/images/generations", timeout=30,
                      json={"prompt": "x", "model": "gpt-image-1", "quality": "high",
                            "stream": True, "partial_images": 3}) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # first partial image arrived; hang up
    time.sleep(1.2)
    assert engine.steps_run < 8


def test_metrics_in_prometheus_format(serve: Serve) -> None:
    server = serve()
    for body in ({"prompt": "x", "model": "gpt-image-1", "n": 2}, {"prompt": "x", "n": 99}):
        httpx.post(server.v1 + "/images/generations", json=body, timeout=30)
    text = httpx.get(server.base_url + "/metrics").text
    assert 'limner_images_total{model="gpt-image-1"} 2' in text
    assert 'limner_requests_total{status="200"} 1' in text
    assert 'limner_requests_total{status="400"} 1' in text
    assert 'limner_queue_depth{model="fake"} 0' in text
    assert 'limner_batch_images_count{model="fake"} 1' in text
    assert 'limner_step_seconds_count{model="fake"} 4' in text
    assert "# TYPE limner_queue_seconds histogram" in text


def test_a_burst_through_the_sdk_loses_nothing_it_was_told_to_retry(serve: Serve) -> None:
    """48 calls at once into a queue of 4: the 429s' `Retry-After` spreads the retries so
    that the official client's two default retries are enough for every call."""
    server = serve(engines={"fake": FakeEngine(step_s=0.03, max_batch_images=2)}, max_queue=4)
    client = openai.OpenAI(base_url=server.v1, api_key="k")  # max_retries: the default, 2
    client.images.generate(prompt="warm-up", model="gpt-image-1", quality="low")
    refusals: list[httpx2.Response] = []

    def call(i: int) -> int:
        raw = client.images.with_raw_response.generate(prompt=f"otter {i}",
                                                      model="gpt-image-1", quality="low")
        return raw.retries_taken

    def record(response: httpx2.Response) -> None:
        if response.status_code == 429:
            refusals.append(response)

    # The SDK's own HTTP package (httpx2), with a hook that sees every answer, 429s included.
    client = client.with_options(http_client=httpx2.Client(event_hooks={"response": [record]}))
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        retries = list(pool.map(call, range(48)))  # raises RateLimitError if one is lost
    assert len(retries) == 48
    assert refusals, "the burst never filled the queue: the test proves nothing"
    waits = [float(r.headers["retry-after-ms"]) / 1000 for r in refusals]
    assert all(0 < w <= 120 for w in waits)
    assert all(int(r.headers["retry-after"]) >= w for r, w in zip(refusals, waits, strict=True))
    assert max(waits) > 2 * min(waits), "every refused client was told the same moment"


def test_a_url_request_whose_client_left_keeps_no_file(serve: Serve) -> None:
    server = serve()
    store = server.app.state.limner.delivery.store
    real_put = store.put

    def slow_put(data: bytes, output_format: str):  # type: ignore[no-untyped-def]
        time.sleep(0.6)
        return real_put(data, output_format)

    store.put = slow_put
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.v1 + "/images/generations", timeout=0.4,
                   json={"prompt": "x", "model": "dall-e-2", "size": "256x256", "n": 2})
    time.sleep(2.0)  # the writes finish in their thread after the client has gone
    assert not store.root.exists() or list(store.root.iterdir()) == []
