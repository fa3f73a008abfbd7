"""A text model behind `/v1/responses`: any server that speaks OpenAI's Chat Completions
(Ollama, vLLM, llama.cpp's server, OpenAI itself), named by `[responses] upstream`.

limner declares its image tool to that model as a function, `image_generation(prompt,
action)`; the service runs the calls it gets back on its own engines and returns their
results to the model, until the model answers in text or calls a tool of the client's.
This module only speaks to the upstream and translates items to chat messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from limner.errors import GenerationFailed

IMAGE_FUNCTION = "image_generation"
TIMEOUT_S = 300.0
IMAGE_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": IMAGE_FUNCTION,
    "description": "Draw a picture, or edit the latest one of the conversation, and show it "
                   "to the user. Write a complete, self-contained description of the "
                   "picture as the prompt.",
    "parameters": {"type": "object", "properties": {
        "prompt": {"type": "string", "description": "What to draw, in full."},
        "action": {"type": "string", "enum": ["generate", "edit"],
                   "description": "edit: change the latest picture; generate: a new one."}},
        "required": ["prompt"]}}}


@dataclass(frozen=True)
class Upstream:
    base_url: str
    model: str
    api_key: str | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> Upstream:
        base_url, model = table.get("base_url"), table.get("model")
        if not isinstance(base_url, str) or not isinstance(model, str):
            raise ValueError("[responses] upstream needs a 'base_url' and a 'model'")
        api_key = table.get("api_key")
        return cls(base_url.rstrip("/"), model, api_key if isinstance(api_key, str) else None)


@dataclass(frozen=True)
class Reply:
    """One answer of the text model: its text, its tool calls, its token counts."""

    text: str | None
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int


class TextModel:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        headers = {"authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
        self._client = httpx.AsyncClient(base_url=upstream.base_url, headers=headers,
                                         timeout=TIMEOUT_S, trust_env=False)

    async def reply(self, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]]) -> Reply:
        body = {"model": self.upstream.model, "messages": messages, "tools": tools}
        try:
            answer = await self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise GenerationFailed(f"The text model at {self.upstream.base_url} could not be "
                                   f"reached: {exc}.", code="upstream_unreachable") from exc
        if answer.status_code != 200:
            raise GenerationFailed(
                f"The text model at {self.upstream.base_url} answered "
                f"{answer.status_code}: {answer.text[:500]}", code="upstream_error")
        try:
            document = answer.json()
            message = document["choices"][0]["message"]
            usage = document.get("usage") or {}
            return Reply(message.get("content"), list(message.get("tool_calls") or []),
                         int(usage.get("prompt_tokens", 0)),
                         int(usage.get("completion_tokens", 0)))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GenerationFailed(f"The text model at {self.upstream.base_url} sent an "
                                   "answer that is not a chat completion.",
                                   code="upstream_error") from exc

    async def close(self) -> None:
        await self._client.aclose()


def client_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The client's own function tools, declared to the text model as they came; calls of
    them end the response as `function_call` items for the client to run."""
    declared = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("name"):
            declared.append({"type": "function", "function": {
                key: tool[key] for key in ("name", "description", "parameters", "strict")
                if key in tool}})
    return declared


def chat_messages(instructions: str | None, history: list[dict[str, Any]],
                  items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat for the text model: `instructions`, the earlier turns' messages, then this
    turn's input items as messages (pictures as `image_url` parts)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] \
        if instructions else []
    messages += history
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item))
        elif kind == "image_generation_call":
            note = f"(A picture was drawn: {item.get('revised_prompt') or 'an image'}.)"
            messages.append({"role": "assistant", "content": note})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str)
                             else json.dumps(output)})
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role", "user")
    content = item.get("content")
    if isinstance(content, str) or role == "assistant":
        text = content if isinstance(content, str) else "".join(
            part.get("text", "") for part in content or [] if isinstance(part, dict))
        return {"role": role, "content": text}
    parts: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "input_text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    return {"role": "system" if role == "developer" else role, "content": parts}
