"""The Responses API's wire format, as far as limner answers it: the request, the
`image_generation` tool, the response object, its output items and its stream events.

Like the Images API's models, request fields are typed loosely (checks that need the model
belong to planning), and every field OpenAI accepts is accepted, so clients that send
`reasoning`, `include` or `text` (Codex, the Agents SDK) are not refused for them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr

from limner.protocol.images import SvgOptions


class ImageRefParam(BaseModel):
    """`input_image_mask`: a data URL (or an allowed http URL) or an uploaded file's id."""

    model_config = ConfigDict(extra="forbid")

    image_url: StrictStr | None = None
    file_id: StrictStr | None = None


class ImageGenerationTool(BaseModel):
    """`tools[i]` of type `image_generation`: the Images API's options, without `prompt` and
    `n` (the text model writes the one, and a call draws one picture)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_generation"]
    action: StrictStr | None = None
    background: StrictStr | None = None
    complexity: StrictStr | None = None
    frame_count: StrictInt | None = None
    frame_duration_ms: StrictInt | None = None
    input_fidelity: StrictStr | None = None
    input_image_mask: ImageRefParam | None = None
    model: StrictStr | None = None
    moderation: StrictStr | None = None
    output_compression: StrictInt | None = None
    output_format: StrictStr | None = None
    partial_images: StrictInt | None = None
    quality: StrictStr | None = None
    size: StrictStr | None = None
    svg: SvgOptions | None = None


class CreateResponseRequest(BaseModel):
    """`POST /v1/responses`. `input` and `tools` are read item by item by
    `limner.responses.conversation`, which names the offending index in its errors."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    input: StrictStr | list[Any] | None = None
    instructions: StrictStr | None = None
    tools: list[Any] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    previous_response_id: StrictStr | None = None
    stream: StrictBool | None = None
    background: StrictBool | None = None
    store: StrictBool | None = None
    metadata: dict[str, Any] | None = None
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    parallel_tool_calls: StrictBool | None = None
    # Accepted for the clients that send them; they steer a text model, which image-only
    # mode has none of (an upstream text model gets them as they came).
    access_programs: Any = None
    background_options: Any = None
    context_management: Any = None
    conversation: Any = None
    image: Any = None
    include: Any = None
    max_output_tokens: Any = None
    max_tool_calls: Any = None
    moderation: Any = None
    prompt: Any = None
    prompt_cache_key: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None
    reasoning: Any = None
    service_tier: Any = None
    stream_options: Any = None
    temperature: Any = None
    text: Any = None
    top_logprobs: Any = None
    top_p: Any = None
    truncation: Any = None


# The answer --------------------------------------------------------------------------------
class CallError(BaseModel):
    """Why an `image_generation_call` failed, as the Images API would have said it."""

    code: str | None = None
    message: str
    param: str | None = None
    type: str
    moderation_details: dict[str, Any] | None = None


class ImageGenerationCall(BaseModel):
    id: str
    type: Literal["image_generation_call"] = "image_generation_call"
    status: Literal["in_progress", "generating", "completed", "failed"]
    result: str | None = None
    action: Literal["generate", "edit"] | None = None
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    revised_prompt: str | None = None
    error: CallError | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = []


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText]


class FunctionCall(BaseModel):
    """A text model's call of a tool limner does not run itself (an upstream's own tools)."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = ImageGenerationCall | OutputMessage | FunctionCall


class TokenDetails(BaseModel):
    text_tokens: int
    image_tokens: int


class ImageGenToolUsage(BaseModel):
    input_tokens: int
    input_tokens_details: TokenDetails
    output_tokens: int
    output_tokens_details: TokenDetails
    total_tokens: int


class ToolUsage(BaseModel):
    image_gen: ImageGenToolUsage
    web_search: dict[str, int] = {"num_requests": 0}


class ResponseUsage(BaseModel):
    """The text model's tokens: zero in image-only mode, the upstream's otherwise."""

    input_tokens: int = 0
    input_tokens_details: dict[str, int] = {"cached_tokens": 0}
    output_tokens: int = 0
    output_tokens_details: dict[str, int] = {"reasoning_tokens": 0}
    total_tokens: int = 0


class ResponseError(BaseModel):
    code: str
    message: str


Status = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
TERMINAL: tuple[Status, ...] = ("completed", "failed", "cancelled", "incomplete")


class ResponseObject(BaseModel):
    """The `Response` every route answers with and every lifecycle event carries."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    background: bool
    model: str
    output: list[OutputItem]
    tools: list[Any]
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    instructions: str | None = None
    metadata: dict[str, Any] = {}
    store: bool = True
    error: ResponseError | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    usage: ResponseUsage | None = None
    tool_usage: ToolUsage | None = None
    user: str | None = None
    safety_identifier: str | None = None

    def dump(self) -> dict[str, Any]:
        """As it goes on the wire: null fields the SDK reads as absent are left out, the
        ones its model requires (`error`, `incomplete_details`) kept."""
        data = self.model_dump(exclude_none=True)
        data.setdefault("error", None)
        data.setdefault("incomplete_details", None)
        return data
