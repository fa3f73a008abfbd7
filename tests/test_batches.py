"""The Batch API over real HTTP, driven by the official `openai` package: input files,
validation, the runner behind interactive work, cancel, expiry, owners and a restart."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import openai
import pytest
from conftest import RunningServer, decoded, running_server
from openai.types import Batch
from PIL import Image

from limner.batches import runner
from limner.engines.fake import FakeEngine
from limner.server.routes import images as images_route

Serve = Callable[..., RunningServer]
GENERATIONS: Final = "/v1/images/generations"
EDITS: Final = "/v1/images/edits"
WAIT_S = 30.0


def client_for(server: RunningServer, api_key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=api_key, max_retries=0)


def line(custom_id: str, body: dict[str, Any], url: str = GENERATIONS) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def small(prompt: str, **extra: Any) -> dict[str, Any]:
    """A one-step dall-e-2 generation: each takes exactly one step of a gated engine."""
    return {"prompt": prompt, "model": "dall-e-2", "size": "256x256",
            "response_format": "b64_json", "steps": 1, **extra}


def upload(client: openai.OpenAI, lines: list[dict[str, Any] | str]) -> str:
    text = "".join((item if isinstance(item, str) else json.dumps(item)) + "\n"
                   for item in lines)
    return client.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id


def start(client: openai.OpenAI, lines: list[dict[str, Any] | str],
          endpoint: Literal["/v1/images/generations", "/v1/images/edits"] = GENERATIONS
          ) -> Batch:
    return client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint,
                                 completion_window="24h")


def wait_for(client: openai.OpenAI, batch_id: str, done: Callable[[Batch], bool]) -> Batch:
    """Polls the batch until `done` holds, for at most WAIT_S (a bound, not a speed check)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch never got there: {batch}"
        time.sleep(0.05)


def finished(client: openai.OpenAI, batch_id: str) -> Batch:
    return wait_for(client, batch_id, lambda b: b.status in (
        "completed", "failed", "cancelled", "expired"))


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(text) for text in client.files.content(file_id).text.splitlines()]


def prompts(engine: FakeEngine) -> list[str]:
    return [params.prompt for batch in engine.batches for params in batch]


def png_data_url(size: tuple[int, int] = (64, 64), colour: str = "green") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_restart_halfway_resumes_without_running_a_finished_line_again(
        tmp_path: Path) -> None:
    """20 lines in two batches (generations, edits), bad lines among them; the server stops
    with lines left and a second one on the same data dir answers the rest."""
    shared = tmp_path / "shared"
    first = FakeEngine(gated=True)
    colour = png_data_url((512, 512))
    gen_lines = [line(f"g{i}", small(f"gen {i}")) for i in range(8)]
    gen_lines.insert(2, line("bad-size", small("x", size="999x999")))
    gen_lines.insert(5, line("bad-field", small("x", colour="red")))
    gen_lines.insert(7, line("bad-type", {"prompt": "x", "n": "2"}))
    wide = {"prompt": "wide", "model": "gpt-image-1", "size": "1536x1024", "steps": 1}
    gen_lines.insert(9, line("g-wide", wide))
    edit_body: dict[str, Any] = {"model": "gpt-image-1", "size": "1024x1024", "steps": 1}
    with running_server(tmp_path, {"fake": first}, data_dir=shared,
                        shutdown_grace_s=0.5) as server:
        client = client_for(server)
        vision = client.files.create(file=("in.png", base64.b64decode(colour.split(",")[1]),
                                           "image/png"), purpose="vision").id
        edit_lines = [
            line("e0", {**edit_body, "prompt": "edit 0", "images": [{"image_url": colour}]},
                 EDITS),
            line("e1", {**edit_body, "prompt": "edit 1", "images": [{"file_id": vision}],
                        "mask": {"image_url": png_data_url((512, 512), "white")}}, EDITS),
            line("e-missing", {**edit_body, "prompt": "x",
                               "images": [{"file_id": "file-" + "0" * 32}]}, EDITS),
            line("e2", {**edit_body, "prompt": "edit 2", "images": [{"file_id": vision}]},
                 EDITS),
            line("e-dalle", {"prompt": "x", "model": "dall-e-2",
                             "images": [{"image_url": colour}]}, EDITS),
            line("e3", {**edit_body, "prompt": "edit 3", "images": [{"image_url": colour}]},
                 EDITS),
            line("e-stream", {**edit_body, "prompt": "x", "stream": True,
                              "images": [{"image_url": colour}]}, EDITS),
            line("e4", {**edit_body, "prompt": "edit 4", "images": [{"image_url": colour}],
                        "n": 2}, EDITS),
        ]
        assert len(gen_lines) + len(edit_lines) == 20
        gens = start(client, list(gen_lines))
        edits = start(client, list(edit_lines), EDITS)
        assert (gens.status, gens.object, gens.endpoint) == ("validating", "batch", GENERATIONS)
        first.release(4)  # g0..g3 (and the two bad lines among them); g4 then waits
        until(lambda: len(first.batches) == 5)
        progressed = client.batches.retrieve(gens.id)
        assert progressed.status == "in_progress" and progressed.request_counts is not None
        assert progressed.request_counts.model_dump() == {"total": 12, "completed": 4,
                                                          "failed": 2}
        assert client.batches.retrieve(edits.id).status == "in_progress"  # validated meanwhile
    first.release(100)  # the stopped server's engine thread may now end
    assert prompts(first) == [f"gen {i}" for i in range(5)]  # gen 4 was cut off, unwritten

    second = FakeEngine()
    with running_server(tmp_path, {"fake": second}, data_dir=shared) as server:
        client = client_for(server)
        gens_done, edits_done = finished(client, gens.id), finished(client, edits.id)
        with server.http() as http:
            answers = {item["custom_id"]: http.post(
                item["url"], json=item["body"]).json() for item in [*gen_lines, *edit_lines]
                if item["custom_id"].startswith(("bad", "e-"))
                and not item["custom_id"].endswith("stream")}  # a stream would be drawn
        outputs = jsonl(client, gens_done.output_file_id)
        errors = jsonl(client, gens_done.error_file_id)
        edit_outputs = jsonl(client, edits_done.output_file_id)
        edit_errors = jsonl(client, edits_done.error_file_id)
        assert client.files.retrieve(gens_done.output_file_id or "").purpose == "batch_output"
    assert prompts(second) == ["gen 4", "gen 5", "wide", "gen 6", "gen 7",
                               *(f"edit {i}" for i in range(5))]
    assert (gens_done.status, edits_done.status) == ("completed", "completed")
    assert gens_done.request_counts is not None and edits_done.request_counts is not None
    assert gens_done.request_counts.model_dump() == {"total": 12, "completed": 9, "failed": 3}
    assert edits_done.request_counts.model_dump() == {"total": 8, "completed": 5, "failed": 3}
    for batch in (gens_done, edits_done):
        assert None not in (batch.in_progress_at, batch.finalizing_at, batch.completed_at)
        assert batch.errors is None and batch.failed_at is None
    assert [o["custom_id"] for o in outputs] == ["g0", "g1", "g2", "g3", "g4", "g5",
                                                 "g-wide", "g6", "g7"]
    for output in [*outputs, *edit_outputs]:
        assert output["id"].startswith("batch_req_") and output["error"] is None
        assert output["response"]["status_code"] == 200
        assert output["response"]["request_id"].startswith("req_")
    sizes = {o["custom_id"]: [decoded(d["b64_json"]).size for d in o["response"]["body"]["data"]]
             for o in [*outputs, *edit_outputs]}
    assert sizes == {**{f"g{i}": [(256, 256)] for i in range(8)}, "g-wide": [(1536, 1024)],
                     **{f"e{i}": [(1024, 1024)] for i in range(4)},
                     "e4": [(1024, 1024), (1024, 1024)]}
    assert outputs[6]["response"]["body"]["size"] == "1536x1024"
    assert [e["custom_id"] for e in errors] == ["bad-size", "bad-field", "bad-type"]
    assert [e["custom_id"] for e in edit_errors] == ["e-missing", "e-dalle", "e-stream"]
    for error in [*errors, *edit_errors]:
        assert error["response"]["status_code"] == 400 and error["error"] is None
        if error["custom_id"].endswith("stream"):
            assert error["response"]["body"] == {"error": {
                "message": "Invalid 'stream': a batch line cannot stream; omit 'stream' or "
                           "set it to false.", "type": "invalid_request_error",
                "param": "stream", "code": "invalid_value"}}
        else:  # exactly what the Images API answers the same body
            assert error["response"]["body"] == answers[error["custom_id"]]
    assert errors[0]["response"]["body"]["error"]["param"] == "size"
    assert edit_errors[0]["response"]["body"]["error"]["param"] == "images[0].file_id"


def test_interactive_requests_go_before_the_remaining_lines(serve: Serve) -> None:
    engine = FakeEngine(gated=True)
    server = serve({"fake": engine})
    client = client_for(server)
    batch = start(client, [line(f"b{i}", small(f"batch {i}")) for i in range(3)])
    until(lambda: len(engine.batches) == 1)  # batch 0 is in the engine
    answers: list[Any] = []
    interactive = threading.Thread(target=lambda: answers.append(client.images.generate(
        prompt="interactive", model="dall-e-2", size="512x512", response_format="b64_json")))
    interactive.start()
    scheduler = server.app.state.limner.schedulers["fake"]
    until(lambda: scheduler.queue_depth == 1)
    engine.release(100)
    interactive.join(WAIT_S)
    done = finished(client, batch.id)
    assert done.status == "completed" and len(answers) == 1
    assert prompts(engine) == ["batch 0", "interactive", "batch 1", "batch 2"]


def test_cancel_stops_the_running_line_and_keeps_what_was_answered(serve: Serve) -> None:
    engine = FakeEngine(gated=True)
    server = serve({"fake": engine})
    client = client_for(server)
    batch = start(client, [line(f"b{i}", small(f"batch {i}")) for i in range(3)])
    engine.release(1)
    until(lambda: len(engine.batches) == 2)  # b0 answered, b1 in the engine
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    done = finished(client, batch.id)
    engine.release(100)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 0}
    assert [o["custom_id"] for o in jsonl(client, done.output_file_id)] == ["b0"]
    assert done.error_file_id is None
    assert prompts(engine) == ["batch 0", "batch 1"]
    assert client.batches.cancel(batch.id).status == "cancelled"  # again: unchanged


def test_a_malformed_file_fails_the_batch_with_each_line_number(serve: Serve) -> None:
    engine = FakeEngine()
    server = serve({"fake": engine})
    client = client_for(server)
    ok = line("a", small("a"))
    batch = start(client, [ok, "{not json", {"method": "POST", "url": GENERATIONS,
                                             "body": {"prompt": "p"}},
                           "", line("a", small("again")), line("b", small("b"), EDITS),
                           {**line("c", small("c")), "method": "GET"}, "[1, 2]"])
    done = finished(client, batch.id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.object == "list"
    assert [e.model_dump() for e in done.errors.data or []] == [
        {"code": "invalid_json_line", "line": 2, "message": "Line 2 is not a valid JSON object.",
         "param": None},
        {"code": "missing_required_parameter", "line": 3,
         "message": "Missing required parameter: 'custom_id'.", "param": "custom_id"},
        {"code": "duplicate_custom_id", "line": 5, "message": "The custom_id 'a' is used by an "
         "earlier line; each line needs its own.", "param": "custom_id"},
        {"code": "invalid_url", "line": 6, "message": f"The url '{EDITS}' does not match the "
         f"batch's endpoint '{GENERATIONS}'; every line must use it.", "param": "url"},
        {"code": "invalid_value", "line": 7,
         "message": "Invalid value: 'GET'. Supported values are: 'POST'.", "param": "method"},
        {"code": "invalid_json_line", "line": 8, "message": "Line 8 is not a valid JSON object.",
         "param": None},
    ]
    assert done.request_counts is not None and done.request_counts.total == 0
    assert (done.output_file_id, done.error_file_id, done.in_progress_at) == (None, None, None)
    empty = finished(client, start(client, [""]).id)
    assert empty.errors is not None and [e.code for e in empty.errors.data or []] == [
        "empty_file"]
    assert engine.batches == []  # nothing was half-run


def error(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": code}}


def test_every_bad_create_is_an_error_envelope(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    batch_file = upload(client, [line("a", small("a"))])
    image = client.files.create(file=("a.png", b"\x89PNG\r\n\x1a\n", "image/png"),
                                purpose="vision").id
    good = {"input_file_id": batch_file, "endpoint": GENERATIONS, "completion_window": "24h"}
    cases: list[tuple[Any, int, dict[str, Any]]] = [
        ({**good, "completion_window": "1h"}, 400, error(
            "Invalid value: '1h'. Supported values are: '24h'.", "completion_window",
            "invalid_value")),
        ({**good, "endpoint": "/v1/chat/completions"}, 400, error(
            "Invalid value: '/v1/chat/completions'. Supported values are: "
            "'/v1/images/generations', and '/v1/images/edits'.", "endpoint", "invalid_value")),
        ({**good, "input_file_id": "file-nope"}, 400, error(
            "Invalid 'input_file_id': no file 'file-nope' exists.", "input_file_id",
            "invalid_value")),
        ({**good, "input_file_id": image}, 400, error(
            f"Invalid 'input_file_id': the file '{image}' has purpose 'vision', but a batch's "
            "input file must have purpose 'batch'.", "input_file_id", "invalid_value")),
        ({**good, "metadata": {f"k{i}": "v" for i in range(17)}}, 400, error(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            "properties, but got 17 instead.", "metadata", "object_above_max_properties")),
        ({**good, "metadata": {"k": "v" * 513}}, 400, error(
            "Invalid 'metadata.k': string too long. Expected a string with maximum length "
            "512, but got a string with length 513 instead.", "metadata.k",
            "string_above_max_length")),
        ({**good, "metadata": {"k": 1}}, 400, error(
            "Invalid type for 'metadata.k': expected a string, but got an integer instead.",
            "metadata.k", "invalid_type")),
        ({**good, "colour": "red"}, 400, error("Unknown parameter: 'colour'.", "colour",
                                               "unknown_parameter")),
        ({"endpoint": GENERATIONS, "completion_window": "24h"}, 400, error(
            "Missing required parameter: 'input_file_id'.", "input_file_id",
            "missing_required_parameter")),
        ({**good, "endpoint": 5}, 400, error(
            "Invalid type for 'endpoint': expected a string, but got an integer instead.",
            "endpoint", "invalid_type")),
    ]
    with server.http() as http:
        for body, status, expected in cases:
            response = http.post("/v1/batches", json=body)
            assert (response.status_code, response.json()) == (status, expected), body
        not_json = http.post("/v1/batches", content=b"{", headers={
            "content-type": "application/json"})
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
        bad_limit = http.get("/v1/batches", params={"limit": "0"})
        assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"
    assert client.batches.list().data == []  # nothing was half-written


def test_another_keys_batch_is_a_404_like_an_unknown_one(serve: Serve) -> None:
    server = serve(api_keys=("k1", "k2"))
    mine, theirs = client_for(server, "k1"), client_for(server, "k2")
    batch = finished(mine, start(mine, [line("a", small("a"))]).id)
    assert batch.status == "completed" and batch.output_file_id is not None
    unknown = "batch_" + "0" * 32
    with server.http(headers={"authorization": "Bearer k2"}) as http:
        for batch_id in (batch.id, unknown):
            for method, path in (("GET", f"/v1/batches/{batch_id}"),
                                 ("POST", f"/v1/batches/{batch_id}/cancel")):
                response = http.request(method, path)
                assert (response.status_code, response.json()) == (404, error(
                    f"No batch found with id '{batch_id}'.", "batch_id", None))
        assert http.get(f"/v1/files/{batch.output_file_id}/content").status_code == 404
        stolen = http.post("/v1/batches", json={"input_file_id": batch.input_file_id,
                                                "endpoint": GENERATIONS,
                                                "completion_window": "24h"})
        assert stolen.status_code == 400 and stolen.json()["error"]["param"] == "input_file_id"
    assert theirs.batches.list().data == []
    assert [b.id for b in mine.batches.list().data] == [batch.id]
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(batch.id)


def test_list_pages_newest_first(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    ids = [start(client, [""]).id for _ in range(3)]  # empty files: they fail at once
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:0:-1] and page.has_more
    rest = client.batches.list(limit=2, after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]] and not rest.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    with server.http() as http:
        raw = http.get("/v1/batches", params={"limit": "1"}).json()
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == (
        "list", ids[2], ids[2], True)


def test_a_batch_not_done_in_24_hours_expires(serve: Serve) -> None:
    engine = FakeEngine(gated=True)
    server = serve({"fake": engine})
    client = client_for(server)
    batch = start(client, [line(f"b{i}", small(f"batch {i}")) for i in range(3)])
    engine.release(1)
    until(lambda: len(engine.batches) == 2)
    server.clock.advance(24 * 3600)
    engine.release(1)  # b1 is answered; b2 never starts
    done = finished(client, batch.id)
    engine.release(100)
    assert done.status == "expired" and done.expired_at is not None
    assert [o["custom_id"] for o in jsonl(client, done.output_file_id)] == ["b0", "b1"]
    expired = jsonl(client, done.error_file_id)
    assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in expired] == [
        ("b2", None, "batch_expired")]
    assert prompts(engine) == ["batch 0", "batch 1"]


def test_the_sdk_and_raw_bodies_match_openais_batch_object(serve: Serve) -> None:
    server = serve()
    client = client_for(server)
    created = client.batches.create(input_file_id=upload(client, [line("a", small("a"))]),
                                    endpoint=GENERATIONS, completion_window="24h",
                                    metadata={"project": "otters"})
    done = finished(client, created.id)
    with server.http() as http:
        raw = http.get(f"/batches/{created.id}").json()  # also without /v1
    assert raw == {
        "id": created.id, "object": "batch", "endpoint": GENERATIONS, "errors": None,
        "input_file_id": created.input_file_id, "completion_window": "24h",
        "status": "completed", "output_file_id": done.output_file_id, "error_file_id": None,
        "created_at": created.created_at, "in_progress_at": done.in_progress_at,
        "expires_at": created.created_at + 24 * 3600, "finalizing_at": done.finalizing_at,
        "completed_at": done.completed_at, "failed_at": None, "expired_at": None,
        "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 1, "completed": 1, "failed": 0},
        "metadata": {"project": "otters"}}
    assert not (server.settings.data_dir / "batches" / created.id / "results").exists()
    with server.http() as http:
        refused = http.post(f"/v1/batches/{created.id}/cancel")
    assert (refused.status_code, refused.json()) == (409, error(
        f"Cannot cancel the batch '{created.id}': it is already completed.", "batch_id",
        "batch_not_cancellable"))
    assert httpx.get(f"{server.v1}/files", params={"purpose": "batch_output"}).json()[
        "data"][0]["id"] == done.output_file_id


def test_a_failing_line_is_its_envelope_and_the_runner_goes_on(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve({"fake": FakeEngine(fail_on="boom")})
    client = client_for(server)
    real = images_route.plan_generation

    def planned(document: dict[str, Any], state: Any) -> Any:
        if document["prompt"] == "crash":
            raise RuntimeError("a bug in planning")
        return real(document, state)

    monkeypatch.setattr(runner, "plan_generation", planned)
    batch = start(client, [line("crash", small("crash")), line("boom", small("boom")),
                           line("ok", small("ok"))])
    done = finished(client, batch.id)
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}
    failures = {e["custom_id"]: e["response"] for e in jsonl(client, done.error_file_id)}
    assert failures["crash"]["status_code"] == 500
    assert failures["crash"]["body"] == {"error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": "internal_error"}}
    with server.http() as http:
        interactive = http.post(GENERATIONS, json=small("boom"))
    assert failures["boom"]["status_code"] == interactive.status_code == 500
    assert failures["boom"]["body"] == interactive.json()
    assert [o["custom_id"] for o in jsonl(client, done.output_file_id)] == ["ok"]


def test_an_answer_that_would_overflow_the_output_file_goes_to_the_error_file(
        serve: Serve) -> None:
    same = small("same", seed=7)  # the same picture every time, so the same size
    client = client_for(serve())
    probe = finished(client, start(client, [line("probe", same)]).id)
    size = len(client.files.content(probe.output_file_id or "").content)
    limited = serve(max_upload_bytes=size + size // 2)  # room for one answer, not two
    client = client_for(limited)
    done = finished(client, start(client, [line("a", same), line("b", same)]).id)
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
    assert [o["custom_id"] for o in jsonl(client, done.output_file_id)] == ["a"]
    [overflow] = jsonl(client, done.error_file_id)
    assert overflow["custom_id"] == "b" and overflow["response"]["status_code"] == 413
    assert overflow["response"]["body"] == {"error": {
        "message": "This answer would make the batch's output file larger than the limit of "
                   f"{size + size // 2} bytes, so it was not kept.",
        "type": "invalid_request_error", "param": None, "code": "batch_output_too_large"}}


def test_a_waiting_batch_is_validated_and_cancelled_while_another_runs(serve: Serve) -> None:
    engine = FakeEngine(gated=True)
    client = client_for(serve({"fake": engine}))
    running = start(client, [line(f"a{i}", small(f"a {i}")) for i in range(2)])
    until(lambda: len(engine.batches) == 1)  # a0 is in the engine
    waiting = start(client, [line("b0", small("b 0"))])
    malformed = start(client, ["{"])
    assert client.batches.cancel(waiting.id).status == "cancelling"
    engine.release(1)  # a0 is answered; between it and a1 the other two are seen to
    cancelled = finished(client, waiting.id)
    failed = finished(client, malformed.id)
    assert (cancelled.status, failed.status) == ("cancelled", "failed")
    assert cancelled.output_file_id is None and cancelled.request_counts is not None
    assert cancelled.request_counts.total == 0
    assert client.batches.retrieve(running.id).status == "in_progress"
    engine.release(100)
    assert finished(client, running.id).status == "completed"
    assert prompts(engine) == ["a 0", "a 1"]
