"""A model whose load failed says so, with the reason, for as long as the server runs:
requests get 503 `model_unavailable` (not "still loading"), `/healthz` and
`GET /v1/models/{id}` show the reason."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest
from conftest import RunningServer

from limner.engines.fake import FakeEngine


class BrokenEngine(FakeEngine):
    def load(self) -> None:
        raise RuntimeError("the folder has no model_index.json")


def test_a_failed_load_is_unavailable_with_its_reason(
        serve: Callable[..., RunningServer]) -> None:
    server = serve({"fake": FakeEngine(), "broken": BrokenEngine(name="broken")},
                   models={"broken-model": "broken"})
    client = openai.OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="broken-model", prompt="an otter")
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.body == {
        "message": "The model 'broken-model' failed to load and is not available: "
                   "RuntimeError: the folder has no model_index.json",
        "type": "server_error", "param": None, "code": "model_unavailable"}
    health = httpx.get(server.base_url + "/healthz").json()
    assert health["status"] == "ok"
    assert health["errors"] == {"broken": "RuntimeError: the folder has no model_index.json"}
    model = client.models.retrieve("broken-model").model_dump()
    assert (model["id"], model["status"], model["status_reason"]) == (
        "broken-model", "failed", "RuntimeError: the folder has no model_index.json")
    ready = httpx.get(server.v1 + "/models/gpt-image-1").json()
    assert ready["status"] == "ready" and ready.get("status_reason") is None
    # The working model still draws.
    assert client.images.generate(model="gpt-image-1", prompt="an otter").data
