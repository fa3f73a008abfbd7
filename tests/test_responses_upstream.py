"""`/v1/responses` with a text model upstream: a scripted Chat Completions server calls the
image tool twice (a drawing, then an edit of it), then answers in text."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import RunningServer, decoded
from openai import OpenAI

from limner.engines.fake import FakeEngine


def tool_call(call_id: str, prompt: str, action: str | None = None) -> dict[str, Any]:
    arguments = {"prompt": prompt, **({"action": action} if action else {})}
    return {"id": call_id, "type": "function",
            "function": {"name": "image_generation", "arguments": json.dumps(arguments)}}


def completion(content: str | None, calls: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


class ScriptedModel:
    """Answers each chat completion with the next scripted reply and keeps every request."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                script.requests.append({"path": self.path, "auth": self.headers.get(
                    "authorization"), "body": json.loads(body)})
                answer = json.dumps(script.replies.pop(0)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def scripted() -> Iterator[Callable[[list[dict[str, Any]]], ScriptedModel]]:
    made: list[ScriptedModel] = []

    def make(replies: list[dict[str, Any]]) -> ScriptedModel:
        model = ScriptedModel(replies)
        threading.Thread(target=model.server.serve_forever, daemon=True).start()
        made.append(model)
        return model

    yield make
    for model in made:
        model.server.shutdown()
        model.server.server_close()


def test_text_model_calls_the_image_tool_twice(
        serve: Callable[..., RunningServer],
        scripted: Callable[[list[dict[str, Any]]], ScriptedModel]) -> None:
    model = scripted([
        completion(None, [tool_call("call_1", "a red fox in a meadow")]),
        completion("Here it is; now at night.",
                   [tool_call("call_2", "the same fox at night", "edit")]),
        completion("Two foxes: one by day, one by night."),
    ])
    engine = FakeEngine()
    server = serve({"fake": engine}, responses_upstream={
        "base_url": model.url, "model": "scripted", "api_key": "upstream-key"})
    client = OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    tools: Any = [{"type": "image_generation", "quality": "low"}]
    with client.responses.stream(model="gpt-5", input="draw me a fox, then at night",
                                 tools=tools) as stream:
        events = list(stream)
        response = stream.get_final_response()
    kinds = [item.type for item in response.output]
    assert kinds == ["image_generation_call", "message", "image_generation_call", "message"]
    first, _, second, _ = response.output
    assert first.type == "image_generation_call" and second.type == "image_generation_call"
    assert (first.action, second.action) == ("generate", "edit")
    assert decoded(first.result).size == decoded(second.result).size == (1024, 1024)
    assert response.output_text == "Here it is; now at night.Two foxes: one by day, one by night."
    assert [p.prompt for batch in engine.batches for p in batch] == [
        "a red fox in a meadow", "the same fox at night"]
    assert engine.batches[1][0].init_image is not None  # the edit started from the first
    assert response.usage is not None and response.usage.input_tokens == 30
    # The upstream saw the tool declared, the user's words, and each call's result.
    first_request, second_request, third_request = (r["body"] for r in model.requests)
    assert model.requests[0]["auth"] == "Bearer upstream-key"
    assert model.requests[0]["path"] == "/v1/chat/completions"
    assert first_request["tools"][0]["function"]["name"] == "image_generation"
    assert first_request["messages"][-1]["content"] == [
        {"type": "text", "text": "draw me a fox, then at night"}]
    assert second_request["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_1",
        "content": "The picture was drawn and is shown to the user."}
    assert third_request["messages"][-1]["tool_call_id"] == "call_2"
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.image_generation_call.completed") == 2
    assert types.count("response.output_text.delta") == 2


def test_a_client_tool_call_ends_the_response(
        serve: Callable[..., RunningServer],
        scripted: Callable[[list[dict[str, Any]]], ScriptedModel]) -> None:
    call = {"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}
    model = scripted([completion(None, [call]), completion("It is sunny in Oslo.")])
    server = serve(responses_upstream={"base_url": model.url, "model": "scripted"})
    client = OpenAI(base_url=server.v1, api_key="k", max_retries=0)
    tools: Any = [{"type": "function", "name": "get_weather",
                   "parameters": {"type": "object", "properties": {}}}]
    first = client.responses.create(model="gpt-5", input="weather in Oslo?", tools=tools)
    [item] = first.output
    assert item.type == "function_call"
    assert (item.name, item.call_id, item.arguments) == ("get_weather", "call_9",
                                                        "{\"city\": \"Oslo\"}")
    follow: Any = [{"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
                   {"role": "user", "content": "thanks"}]
    second = client.responses.create(model="gpt-5", previous_response_id=first.id,
                                     input=follow, tools=tools)
    assert second.output_text == "It is sunny in Oslo."
    messages = model.requests[1]["body"]["messages"]
    assert {"role": "tool", "tool_call_id": "call_9", "content": "sunny"} in messages
