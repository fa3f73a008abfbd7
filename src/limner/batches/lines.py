"""A batch input file (JSONL) -> its requests, or every reason it cannot run.

The whole file is checked before any line runs, as OpenAI does: a line that is not a JSON
object, lacks a `custom_id`, repeats one, or names another method or endpoint fails the
batch with that line's number, and nothing is half-run. What is inside `body` is not checked
here: each line's body gets exactly the Images API's answer when it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from limner.batches.store import LineError

ENDPOINTS = ("/v1/images/generations", "/v1/images/edits")
MAX_LINES = 50_000
"""OpenAI's most requests per batch."""
MAX_ERRORS = 1000
"""Errors kept in the batch object; a file that bad needs no more to be fixed."""
MAX_CUSTOM_ID = 512
FIELDS = ("custom_id", "method", "url", "body")


@dataclass(frozen=True)
class BatchLine:
    """One request of the file: `index` counts requests from 0, `line` is its line number."""

    index: int
    line: int
    custom_id: str
    body: dict[str, Any]


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key '{key}'")
        result[key] = value
    return result


def parse_lines(data: bytes, endpoint: str) -> tuple[list[BatchLine], list[LineError]]:
    """The file's requests in order, and its errors (none means it may run). Blank lines are
    skipped but counted, so every number is the line an editor shows."""
    requests: list[BatchLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(requests) >= MAX_LINES:
            errors.append(LineError("too_many_requests", f"The input file has more than "
                                    f"{MAX_LINES:,} requests.", line=number))
            break
        line, error = _parse_line(raw, number, endpoint, seen)
        if error is not None:
            errors.append(error)
            if len(errors) >= MAX_ERRORS:
                break
        elif line is not None:
            requests.append(BatchLine(len(requests), number, line[0], line[1]))
    if not requests and not errors:
        errors.append(LineError("empty_file", "The input file has no requests."))
    return requests, errors


def _parse_line(raw: bytes, number: int, endpoint: str,
                seen: set[str]) -> tuple[tuple[str, dict[str, Any]] | None, LineError | None]:
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_object_pairs)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, LineError("invalid_json_line",
                               f"Line {number} is not a valid JSON object.", line=number)
    if not isinstance(document, dict):
        return None, LineError("invalid_json_line",
                               f"Line {number} is not a valid JSON object.", line=number)
    for key in document:
        if key not in FIELDS:
            return None, LineError("unknown_parameter", f"Unknown parameter: '{key}'.",
                                   line=number, param=key)
    for key in FIELDS:
        if key not in document:
            return None, LineError("missing_required_parameter",
                                   f"Missing required parameter: '{key}'.", line=number,
                                   param=key)
    custom_id, method, url, body = (document[key] for key in FIELDS)
    for key, value, kind in (("custom_id", custom_id, str), ("method", method, str),
                             ("url", url, str), ("body", body, dict)):
        if not isinstance(value, kind):
            expected = "an object" if kind is dict else "a string"
            return None, LineError("invalid_type", f"Invalid type for '{key}': expected "
                                   f"{expected}.", line=number, param=key)
    if not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return None, LineError("invalid_value", f"Invalid 'custom_id': expected 1 to "
                               f"{MAX_CUSTOM_ID} characters.", line=number, param="custom_id")
    if custom_id in seen:
        return None, LineError("duplicate_custom_id", f"The custom_id '{custom_id}' is "
                               "used by an earlier line; each line needs its own.",
                               line=number, param="custom_id")
    seen.add(custom_id)
    if method != "POST":
        return None, LineError("invalid_value", f"Invalid value: '{method}'. Supported "
                               "values are: 'POST'.", line=number, param="method")
    if url != endpoint:
        return None, LineError("invalid_url", f"The url '{url}' does not match the "
                               f"batch's endpoint '{endpoint}'; every line must use it.",
                               line=number, param="url")
    return (custom_id, body), None
