"""A Responses request's input -> what the image tool draws from: the prompt (the last user
message's text, `instructions` ahead of it), the pictures given with that message, and the
conversation's latest picture before it (an `image_generation_call` or `item_reference` in
the input, else the previous response's).

Pure: the stored responses it may need come through `lookup`, so this reads no files.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limner.errors import InvalidRequest
from limner.protocol.images import ImageRef
from limner.protocol.responses import CreateResponseRequest
from limner.responses.store import item_id

ROLES = ("user", "assistant", "system", "developer")
SKIPPED_ITEMS = frozenset({
    "reasoning", "function_call", "function_call_output", "custom_tool_call",
    "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call",
    "computer_call_output", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_call",
    "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "compaction",
    "code_interpreter_call", "tool_search_call", "tool_search_output"})
"""Items a client replays from an earlier turn that hold neither a prompt nor a picture."""
SKIPPED_PARTS = frozenset({"output_text", "refusal", "reasoning_text", "summary_text"})

ItemLookup = Callable[[str], dict[str, Any] | None]
"""An earlier item by id (`item_reference`), among the caller's stored responses."""


@dataclass(frozen=True)
class Picture:
    """An input picture: a reference still to fetch (`ref`), or bytes at hand (`data`, an
    earlier call's result). `param` is where it came from, for errors."""

    param: str
    ref: ImageRef | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Turn:
    prompt: str
    pictures: tuple[Picture, ...]
    """The `input_image` parts of the last user message, in order."""
    earlier: Picture | None
    """The conversation's latest picture before this turn: what a follow-up edits."""
    items: list[dict[str, Any]]
    """The input as stored and listed by `GET /v1/responses/{id}/input_items`, with ids."""


def read_turn(request: CreateResponseRequest, response_id: str,
              previous: dict[str, Any] | None, lookup: ItemLookup) -> Turn:
    """`previous`: the `Response` named by `previous_response_id`, already found."""
    raw: list[Any]
    if request.input is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    raw = [{"role": "user", "content": request.input}] if isinstance(request.input, str) \
        else request.input
    items: list[dict[str, Any]] = []
    user_text: list[str] | None = None
    pictures: list[Picture] = []
    earlier = _last_picture(previous.get("output", []), "previous_response_id") \
        if previous else None
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid type for '{where}': expected an object, but got "
                                 "another type instead.", param=where, code="invalid_type")
        kind = item.get("type", "message" if "role" in item else None)
        stored = {**item, "id": item_id(response_id, "in", index)}
        if kind == "message":
            role, parts = _message(item, where)
            stored.update(type="message", role=role, content=parts,
                          status=item.get("status", "completed"))
            if role == "user":
                user_text = [p["text"] for p in parts if p["type"] == "input_text"]
                pictures = [_input_image(p, f"{where}.content[{k}]")
                            for k, p in enumerate(parts) if p["type"] == "input_image"]
        elif kind == "image_generation_call":
            earlier = _call_picture(item, where) or earlier
        elif kind == "item_reference":
            referenced = _referenced(item, where, lookup)
            if referenced.get("type") == "image_generation_call":
                earlier = _call_picture(referenced, where) or earlier
        elif kind not in SKIPPED_ITEMS:
            raise InvalidRequest(
                f"Invalid value for '{where}.type': '{kind}' is not an input item type this "
                "server reads (message, image_generation_call, item_reference).",
                param=f"{where}.type", code="invalid_value")
        items.append(stored)
    if user_text is None:
        raise InvalidRequest(
            "Invalid 'input': it has no user message, so there is nothing to draw. Send the "
            "prompt as a string or as a user message's 'input_text'.", param="input",
            code="invalid_value")
    prompt = "\n".join(t for t in user_text if t.strip())
    if not prompt:
        raise InvalidRequest(
            "Invalid 'input': the last user message has no text, so there is nothing to "
            "draw. Add an 'input_text' part with the prompt.", param="input",
            code="invalid_value")
    if request.instructions and request.instructions.strip():
        prompt = f"{request.instructions.strip()}\n\n{prompt}"
    return Turn(prompt, tuple(pictures), earlier, items)


def _message(item: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': expected one of 'user', 'assistant', "
            f"'system' or 'developer', but got {role!r}.", param=f"{where}.role",
            code="invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        return role, [{"type": kind, "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{where}.content': expected a string or an "
                             "array of content parts.", param=f"{where}.content",
                             code="invalid_type")
    parts = []
    for k, part in enumerate(content):
        at = f"{where}.content[{k}]"
        part_kind = part.get("type") if isinstance(part, dict) else None
        if part_kind == "input_text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"Invalid type for '{at}.text': expected a string.",
                                     param=f"{at}.text", code="invalid_type")
        elif part_kind not in ("input_image", *SKIPPED_PARTS):
            raise InvalidRequest(
                f"Invalid value for '{at}.type': {part_kind!r}. This server reads 'input_text' "
                "and 'input_image' parts.", param=f"{at}.type", code="invalid_value")
        parts.append(part)
    return str(role), parts


def _input_image(part: dict[str, Any], where: str) -> Picture:
    url, file_id = part.get("image_url"), part.get("file_id")
    if (url is None) == (file_id is None) or not isinstance(url or file_id, str):
        raise InvalidRequest(f"Invalid '{where}': provide exactly one of 'image_url' or "
                             "'file_id' as a string.", param=where, code="invalid_value")
    return Picture(where, ref=ImageRef(image_url=url, file_id=file_id))


def _call_picture(item: dict[str, Any], where: str) -> Picture | None:
    """An earlier `image_generation_call`'s picture; a call without one (failed) has none."""
    result = item.get("result")
    if result is None:
        return None
    if not isinstance(result, str):
        raise InvalidRequest(f"Invalid type for '{where}.result': expected a base64 string.",
                             param=f"{where}.result", code="invalid_type")
    try:
        return Picture(f"{where}.result", data=base64.b64decode(result, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Invalid '{where}.result': it is not valid base64.",
                             param=f"{where}.result", code="invalid_value") from exc


def _referenced(item: dict[str, Any], where: str, lookup: ItemLookup) -> dict[str, Any]:
    ref = item.get("id")
    found = lookup(ref) if isinstance(ref, str) else None
    if found is None:
        raise InvalidRequest(f"Item with id '{ref}' not found.", param=f"{where}.id",
                             code="invalid_value")
    return found


def _last_picture(output: list[dict[str, Any]], where: str) -> Picture | None:
    for item in reversed(output):
        if item.get("type") == "image_generation_call" and item.get("result"):
            return _call_picture(item, where)
    return None
