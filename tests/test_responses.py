"""The Responses API's image_generation tool, with the official `openai` client against a
real server: generate, edit, mask, the stream's events in order, a three-turn edit chain,
background create-poll-cancel, a background stream followed again, and a restart."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import RunningServer, decoded, running_server
from openai import OpenAI
from PIL import Image

from limner.engines.fake import FakeEngine
from limner.responses.store import ResponseStore

TOOL: Any = {"type": "image_generation", "quality": "low"}


def tool(**options: Any) -> Any:
    """The tool as the SDK's typed parameters take it (`Any`: its TypedDicts are closed)."""
    return {**TOOL, **options}
ORDER = ["response.created", "response.in_progress", "response.output_item.added",
         "response.image_generation_call.in_progress",
         "response.image_generation_call.generating",
         "response.image_generation_call.partial_image",
         "response.image_generation_call.partial_image",
         "response.image_generation_call.completed", "response.output_item.done",
         "response.completed"]


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def client_of(server: RunningServer, key: str = "k") -> OpenAI:
    return OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def wait_status(client: OpenAI, response_id: str, statuses: tuple[str, ...]) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        time.sleep(0.05)
    raise AssertionError(f"{response_id} never reached {statuses}")


def test_generate_answers_one_image_generation_call(serve: Callable[..., RunningServer]
                                                     ) -> None:
    server = serve()
    client = client_of(server)
    response = client.responses.create(
        model="gpt-5", instructions="Watercolour.", input="a lighthouse at dawn",
        tools=[tool(size="1536x1024", output_format="webp")])
    assert response.status == "completed" and response.object == "response"
    [call] = response.output
    assert call.type == "image_generation_call" and call.status == "completed"
    assert (call.action, call.size, call.quality, call.output_format, call.background) == \
        ("generate", "1536x1024", "low", "webp", "opaque")
    assert call.revised_prompt == "Watercolour.\n\na lighthouse at dawn"
    picture = decoded(call.result)
    assert (picture.format, picture.size) == ("WEBP", (1536, 1024))
    assert response.tool_usage is not None
    assert response.tool_usage.image_gen.output_tokens > 0
    assert response.output_text == ""
    stored = client.responses.retrieve(response.id)
    assert stored.output[0].result == call.result  # type: ignore[union-attr]
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]


def test_edit_from_input_image_with_a_mask(serve: Callable[..., RunningServer]) -> None:
    engine = FakeEngine()
    server = serve({"fake": engine})
    client = client_of(server)
    start = Image.new("RGB", (96, 64), (0, 90, 200))
    mask = Image.new("RGBA", (96, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 48, 64))  # transparent: redrawn
    message: Any = {"role": "user", "content": [
        {"type": "input_text", "text": "make the sky stormy"},
        {"type": "input_image", "image_url": data_url(start)}]}
    response = client.responses.create(
        model="gpt-5", input=[message],
        tools=[tool(input_image_mask={"image_url": data_url(mask)})])
    [call] = response.output
    assert call.type == "image_generation_call" and call.action == "edit"
    params = engine.batches[-1][0]
    assert params.init_image is not None and params.mask is not None
    picture = decoded(call.result)
    # The kept half is the input's own colour, put back by the service after the drawing.
    assert picture.convert("RGB").getpixel((picture.width - 2, picture.height // 2)) == \
        (0, 90, 200)


def test_stream_sends_every_event_in_order(serve: Callable[..., RunningServer]) -> None:
    server = serve()
    client = client_of(server)
    with client.responses.stream(model="gpt-5", input="a paper boat",
                                 tools=[tool(quality="medium", partial_images=2)]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == ORDER
    assert [e.sequence_number for e in events] == list(range(len(ORDER)))
    partials = [e for e in events if e.type == "response.image_generation_call.partial_image"]
    assert [p.partial_image_index for p in partials] == [0, 1]
    for partial in partials:
        assert decoded(partial.partial_image_b64).format == "PNG"
    added = events[2]
    assert added.item.status == "in_progress" and added.item.result is None  # type: ignore[union-attr]
    done = events[8]
    assert done.item.status == "completed"  # type: ignore[union-attr]
    assert decoded(done.item.result).size == (1024, 1024)  # type: ignore[union-attr]
    assert final.status == "completed" and final.output[0].result == done.item.result  # type: ignore[union-attr]


def test_three_turn_edit_chain_by_previous_response_id(serve: Callable[..., RunningServer]
                                                       ) -> None:
    engine = FakeEngine()
    server = serve({"fake": engine})
    client = client_of(server)
    first = client.responses.create(model="gpt-5", input="a house", tools=[tool()])
    previous = first
    for prompt in ("now at night", "now in snow"):
        turn = client.responses.create(model="gpt-5", input=prompt, tools=[tool()],
                                       previous_response_id=previous.id)
        [call] = turn.output
        assert call.type == "image_generation_call" and call.action == "edit"
        assert turn.previous_response_id == previous.id
        start = engine.batches[-1][0].init_image
        assert start is not None
        earlier = decoded(previous.output[0].result)  # type: ignore[union-attr]
        assert start.convert("RGB").resize(earlier.size).getpixel((1, 1)) == \
            earlier.convert("RGB").getpixel((1, 1))
        previous = turn
    # An explicit `generate` starts afresh even with a previous response.
    fresh = client.responses.create(model="gpt-5", input="a tree", previous_response_id=first.id,
                                    tools=[tool(action="generate")])
    assert fresh.output[0].action == "generate"  # type: ignore[union-attr]
    assert engine.batches[-1][0].init_image is None


def test_earlier_call_in_the_input_and_item_reference(serve: Callable[..., RunningServer]
                                                      ) -> None:
    engine = FakeEngine()
    server = serve({"fake": engine})
    client = client_of(server)
    first = client.responses.create(model="gpt-5", input="a kite", tools=[tool()])
    call: Any = first.output[0]
    replays: list[Any] = [{"type": "item_reference", "id": call.id},
                {"type": "image_generation_call", "id": call.id, "status": "completed",
                 "result": call.result}]
    for replay in replays:
        turn = client.responses.create(
            model="gpt-5", tools=[tool()],
            input=[{"role": "user", "content": "a kite"}, replay,
                   {"role": "user", "content": "make it red"}])
        assert turn.output[0].action == "edit"  # type: ignore[union-attr]
        assert engine.batches[-1][0].prompt == "make it red"
    listed = client.responses.input_items.list(turn.id, order="asc", limit=1)
    assert listed.has_more and len(listed.data) == 1
    rest = client.responses.input_items.list(turn.id, order="asc", after=listed.data[0].id)
    assert [i.type for i in rest.data] == ["image_generation_call", "message"]
    assert not rest.has_more


def test_background_create_poll_cancel(serve: Callable[..., RunningServer]) -> None:
    engine = FakeEngine(gated=True)
    server = serve({"fake": engine})
    client = client_of(server)
    created = client.responses.create(model="gpt-5", input="a slow drawing", background=True,
                                      tools=[tool(quality="high")])
    assert created.status == "queued" and created.background is True
    assert engine.wait_for_steps(0)
    engine.release(1)
    assert engine.wait_for_steps(1, timeout=30)
    running = wait_status(client, created.id, ("in_progress",))
    assert running.output[0].status == "generating"
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    engine.release(20)
    assert client.responses.retrieve(created.id).status == "cancelled"
    # A finished one polls to completed, with its picture.
    engine.release(100)
    done = client.responses.create(model="gpt-5", input="quick", background=True, tools=[tool()])
    finished = wait_status(client, done.id, ("completed", "failed"))
    assert finished.status == "completed"
    assert decoded(finished.output[0].result).size == (1024, 1024)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(client.responses.create(model="gpt-5", input="x",
                                                        tools=[tool()]).id)
    assert refused.value.body["param"] == "response_id"  # type: ignore[index]


def test_background_stream_is_followed_from_a_sequence_number(
        serve: Callable[..., RunningServer]) -> None:
    server = serve()
    client = client_of(server)
    with client.responses.stream(model="gpt-5", input="a comet", background=True,
                                 tools=[tool(quality="medium", partial_images=2)]) as stream:
        first = list(stream)
    response_id = first[0].response.id  # type: ignore[union-attr]
    assert [e.type for e in first] == ORDER
    wait_status(client, response_id, ("completed",))
    with client.responses.stream(response_id=response_id, starting_after=4) as again:
        rest = list(again)
    assert [e.sequence_number for e in rest] == list(range(5, len(ORDER)))
    assert [e.type for e in rest] == ORDER[5:]


def test_a_finished_stream_is_followed_while_the_store_writes_it(
        serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """A response stays live until the store holds its record and events: a follower that
    comes in between, however briefly, still reads every event after its number."""
    real = ResponseStore.save_events

    def slow(self: ResponseStore, *args: Any, **kwargs: Any) -> None:
        time.sleep(1.0)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ResponseStore, "save_events", slow)
    client = client_of(serve())
    with client.responses.stream(model="gpt-5", input="a comet", background=True,
                                 tools=[tool(quality="medium", partial_images=2)]) as stream:
        first = list(stream)
    response_id = first[0].response.id  # type: ignore[union-attr]
    with client.responses.stream(response_id=response_id, starting_after=4) as again:
        rest = list(again)
    assert [e.sequence_number for e in rest] == list(range(5, len(ORDER)))
    assert client.responses.retrieve(response_id).status == "completed"


def test_background_response_survives_a_restart(tmp_path: Path) -> None:
    slow = FakeEngine(step_s=0.1)
    settings: dict[str, Any] = {"data_dir": tmp_path / "data"}
    with running_server(tmp_path, {"fake": slow}, **settings) as server:
        client = client_of(server)
        queued = client.responses.create(model="gpt-5", input="a survivor", background=True,
                                         tools=[tool(quality="high")])
        assert slow.wait_for_steps(1, timeout=30)
    assert slow.steps_run < 8  # stopped by the shutdown, not finished
    engine = FakeEngine()
    with running_server(tmp_path, {"fake": engine}, **settings) as server:
        client = client_of(server)
        finished = wait_status(client, queued.id, ("completed", "failed"))
        assert finished.status == "completed"
        assert decoded(finished.output[0].result).size == (1024, 1024)
        assert [p.prompt for batch in engine.batches for p in batch] == ["a survivor"]


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"input": "x"}, 400, "tools", "text_model_not_configured"),
    ({"input": "x", "tools": [TOOL], "tool_choice": "none"}, 400, "tool_choice",
     "text_model_not_configured"),
    ({"input": "x", "tools": [tool(size="13x13")]}, 400, "tools[0].size",
     "invalid_value"),
    ({"input": "x", "tools": [tool(colour="red")]}, 400, "tools[0].colour",
     "unknown_parameter"),
    ({"input": "x", "tools": [tool(quality=3)]}, 400, "tools[0].quality",
     "invalid_type"),
    ({"input": "x", "tools": [tool(model="dall-e-3")]}, 400, "tools[0].model",
     "invalid_value"),
    ({"input": "x", "tools": [tool(model="nope")]}, 400, "tools[0].model",
     "model_not_found"),
    ({"input": "x", "tools": [tool(action="edit")]}, 400, "tools[0].action",
     "invalid_value"),
    ({"input": "x", "tools": [TOOL], "previous_response_id": "resp_" + "0" * 48}, 400,
     "previous_response_id", "previous_response_not_found"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}],
      "tools": [TOOL]}, 400, "input", "invalid_value"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "x"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}],
      "tools": [TOOL]}, 400, "input[0].content[1]", "invalid_image_format"),
    ({"input": "x", "tools": [TOOL], "background": True, "store": False}, 400, "store",
     "invalid_value"),
    ({"tools": [TOOL]}, 400, "input", "missing_required_parameter"),
    ({"input": "x", "tools": [TOOL], "metadata": {"k": 1}}, 400, "metadata.k",
     "invalid_type"),
    ({"input": "x", "tools": [TOOL], "temprature": 1}, 400, "temprature",
     "unknown_parameter"),
])
def test_bad_requests_are_envelopes_naming_the_field(
        serve: Callable[..., RunningServer], body: dict[str, Any], status: int, param: str,
        code: str) -> None:
    server = serve()
    answer = httpx.post(server.v1 + "/responses", json={"model": "gpt-5", **body}, timeout=30)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error"


def test_responses_belong_to_their_key(serve: Callable[..., RunningServer]) -> None:
    server = serve(api_keys=("k1", "k2"))
    mine, theirs = client_of(server, "k1"), client_of(server, "k2")
    response = mine.responses.create(model="gpt-5", input="a secret", tools=[tool()])
    for call in (lambda: theirs.responses.retrieve(response.id),
                 lambda: theirs.responses.delete(response.id),
                 lambda: theirs.responses.input_items.list(response.id)):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["message"] == f"Response with id '{response.id}' not found."  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        theirs.responses.create(model="gpt-5", input="steal", tools=[tool()],
                                previous_response_id=response.id)
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    mine.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(response.id)


def test_store_false_keeps_nothing(serve: Callable[..., RunningServer]) -> None:
    server = serve()
    client = client_of(server)
    response = client.responses.create(model="gpt-5", input="ephemeral", store=False,
                                       tools=[tool()])
    assert response.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
