"""Spec fuzzing: schemathesis drives the official OpenAI spec against a real limner server.

Operations: `POST /images/generations`, `GET /models`, `GET /models/{model}` (the spec's paths
lack `/v1`; the base URL is `server.v1`). Checks on every generated case:

* no 5xx;
* every non-2xx body is exactly `{"error": {"message", "type", "param", "code"}}`;
* every 2xx JSON body conforms to the spec's response schema.

Both of schemathesis's generation modes run: positive (valid under the spec) and negative
(bodies, path parameters that break it).

One documented, narrow relaxation: the spec's `ImagesResponse.size` is an enum
(`1024x1024|1024x1536|1536x1024`), yet the same spec lets `gpt-image-2` draw arbitrary
`WIDTHxHEIGHT` sizes, which we echo back. The sliced spec accepts `^[0-9]+x[0-9]+$` there, and
the check asserts that a size outside the enum only comes back for a `gpt-image-2*` request
that asked for exactly that size (or `auto`/null for the default). `text/event-stream` 2xx
bodies (stream=true) are checked only for status and content type here; the SSE events are
covered by test_api_images.py.

The three operations come from tests/data (a slice of the official spec, so CI needs nothing
beside the repository); where ../shared holds the full spec, a test checks the slice against it.

Budget: `LIMNER_FUZZ_EXAMPLES` examples per operation (default 60), derandomized.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer

schemathesis = pytest.importorskip("schemathesis")
yaml = pytest.importorskip("yaml")
hypothesis = pytest.importorskip("hypothesis")

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "openai-openapi" / "openapi.yaml"
VENDORED = Path(__file__).resolve().parent / "data" / "openai-openapi-images.json"
"""The three operations of the official spec (openai/openai-openapi f85dbe22, MIT licence in
openai-openapi-LICENSE beside it), sliced by `slice_spec`."""
EXAMPLES = int(os.environ.get("LIMNER_FUZZ_EXAMPLES", "60"))
PATHS = {"/images/generations": ("post",), "/models": ("get",), "/models/{model}": ("get",)}
SIZE_ENUM = {"1024x1024", "1024x1536", "1536x1024"}
ENVELOPE_KEYS = {"message", "type", "param", "code"}

Serve = Callable[..., RunningServer]


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def slice_spec(full: dict[str, Any]) -> dict[str, Any]:
    """The spec cut down to the three operations and the components they reach."""
    paths = {path: {method: full["paths"][path][method] for method in methods}
             for path, methods in PATHS.items()}
    components: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    _refs(paths, pending)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = full["components"][kind][name]
        components.setdefault(kind, {})[name] = copy.deepcopy(node)
        _refs(node, pending)
    components["securitySchemes"] = full["components"].get("securitySchemes", {})
    return {"openapi": full["openapi"], "info": full["info"], "servers": full.get("servers", []),
            "security": full.get("security", []), "paths": paths, "components": components}


def sliced_spec() -> dict[str, Any]:
    """The vendored slice, with `ImagesResponse.size` widened to gpt-image-2's free sizes."""
    spec: dict[str, Any] = json.loads(VENDORED.read_text())
    size = spec["components"]["schemas"]["ImagesResponse"]["properties"]["size"]
    spec["components"]["schemas"]["ImagesResponse"]["properties"]["size"] = {
        "anyOf": [size, {"type": "string", "pattern": "^[0-9]+x[0-9]+$"}],
    }
    return spec


def test_the_vendored_slice_is_the_official_spec() -> None:
    """tests/data holds the slice so CI needs no shared/ folder; it must not drift."""
    if not SPEC.is_file():
        pytest.skip(f"the official OpenAI spec is not at {SPEC} (shared/ beside the repo)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open("rb") as handle:
        full = yaml.load(handle, Loader=loader)
    fresh = json.loads(json.dumps(slice_spec(full), default=str))
    assert fresh == json.loads(VENDORED.read_text())


@pytest.fixture(scope="module")
def schema() -> Any:
    return schemathesis.openapi.from_dict(sliced_spec())


def check(case: Any, response: Any) -> None:
    status = response.status_code
    assert status < 500, f"{case.method} {case.path} -> {status}: {response.text[:500]}"
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if status >= 300:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, response.text[:500]
        assert set(body["error"]) == ENVELOPE_KEYS, response.text[:500]
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    if "text/event-stream" in content_type:
        assert isinstance(case.body, dict) and case.body.get("stream") is True
        return
    case.operation.validate_response(response)
    body = response.json()
    size = body.get("size") if isinstance(body, dict) else None
    if size is not None and size not in SIZE_ENUM:
        request = case.body if isinstance(case.body, dict) else {}
        model = str(request.get("model") or "")
        assert model.startswith("gpt-image-2"), f"size {size!r} outside the spec for {model!r}"
        assert request.get("size") in (size, "auto", None), (size, request.get("size"))
        assert re.fullmatch(r"\d+x\d+", size)


def run_operation(schema: Any, server: RunningServer, path: str, method: str,
                  mode: str) -> dict[int, int]:
    operation = schema[path][method.upper()]
    statuses: dict[int, int] = {}

    @hypothesis.settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                         database=None, suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
    def fuzz(case: Any) -> None:
        response = case.call(base_url=server.v1, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check(case, response)

    fuzz()
    return statuses


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), [
    ("/images/generations", "post"), ("/models", "get"), ("/models/{model}", "get"),
])
def test_spec_fuzz(schema: Any, serve: Serve, path: str, method: str, mode: str) -> None:
    """positive: cases valid under the spec; negative: cases that break it (wrong types,
    missing `prompt`, out-of-range numbers...), which must all be 4xx envelopes."""
    server = serve(max_queue=1024)
    statuses = run_operation(schema, server, path, method, mode)
    assert sum(statuses.values()) >= 1
    if path == "/images/generations" and mode == "positive":
        assert any(200 <= s < 300 for s in statuses) and any(s >= 400 for s in statuses)
    if path == "/images/generations" and mode == "negative":
        assert any(s >= 400 for s in statuses)
    if path == "/models/{model}":  # random ids: unknown models, each a 404 envelope
        assert any(s == 404 for s in statuses)
    health = server.http().get("/healthz")
    assert health.status_code == 200, health.text
    print(json.dumps({"operation": f"{method.upper()} {path}", "mode": mode,
                      "statuses": statuses}))
