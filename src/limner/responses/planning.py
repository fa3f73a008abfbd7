"""The `image_generation` tool's options + a turn's prompt and pictures -> the very
`GenerationPlan` the Images API would make for them.

The tool's options become an Images API request (a generation, or a JSON edit when there is
a picture to start from) and meet the same per-model rules and 400s; only the `param` each
error names is moved to where the field sits in a Responses request (`size` ->
`tools[0].size`, `prompt` -> `input`). Runs in a worker thread: an edit decodes pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from limner.catalogue import Catalogue
from limner.edit_planning import plan_edit
from limner.errors import InvalidRequest, NotFound
from limner.input_images import Upload
from limner.planning import GenerationPlan, plan_request
from limner.protocol.images import CreateImageEditRequest, CreateImageRequest
from limner.protocol.responses import CreateResponseRequest, ImageGenerationTool
from limner.responses.conversation import Turn
from limner.server.parsing import parse_as

TOOL_DEFAULT_MODEL = "gpt-image-2.6-sunburst"
"""The tool's `model` when omitted, as the newest SDK documents it."""
ACTIONS = ("generate", "edit", "auto")
TEXT_MODEL_HINT = ("limner answers /v1/responses with its own image_generation tool only, "
                   "unless a text model is configured ([responses] upstream in the config "
                   "file)")
_TOOL_FIELDS = ("background", "complexity", "frame_count", "frame_duration_ms", "moderation",
                "output_compression", "output_format", "quality", "size", "svg")
"""The tool options that are Images API fields of the same name."""

Action = Literal["generate", "edit"]


@dataclass(frozen=True)
class ImageCall:
    """One `image_generation_call` to run: its plan and what it does."""

    plan: GenerationPlan
    action: Action
    prompt: str


def image_tool(request: CreateResponseRequest, *, text_model: bool = False
               ) -> tuple[int, ImageGenerationTool] | None:
    """The request's `image_generation` tool and its index in `tools`. Without a text model
    (`text_model=False`) a request that cannot be answered by drawing is a 400 that says what
    to configure; with one, `None` means "no image tool here"."""
    found: list[tuple[int, ImageGenerationTool]] = []
    for index, tool in enumerate(request.tools or []):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"Invalid type for 'tools[{index}]': expected an object.",
                                 param=f"tools[{index}]", code="invalid_type")
        if tool.get("type") == "image_generation":
            found.append((index, parse_as(ImageGenerationTool, tool, at=f"tools[{index}]")))
    if len(found) > 1:
        raise InvalidRequest("Invalid 'tools': at most one 'image_generation' tool may be "
                             "given.", param="tools", code="invalid_value")
    choice = request.tool_choice
    if text_model:
        return found[0] if found else None
    if not found:
        raise InvalidRequest(
            f"{TEXT_MODEL_HINT}: add {{\"type\": \"image_generation\"}} to 'tools'.",
            param="tools", code="text_model_not_configured")
    if choice == "none" or (isinstance(choice, dict)
                            and choice.get("type") not in ("image_generation", "allowed_tools")):
        raise InvalidRequest(
            f"{TEXT_MODEL_HINT}, so 'tool_choice' must leave the image_generation tool "
            "callable.", param="tool_choice", code="text_model_not_configured")
    return found[0]


def wanted_action(tool: ImageGenerationTool, index: int, turn: Turn) -> Action:
    """`generate` or `edit`: `auto` edits when the turn has a picture to start from."""
    asked = tool.action or "auto"
    if asked not in ACTIONS:
        raise InvalidRequest(
            f"Invalid value: '{asked}'. Supported values are: 'generate', 'edit', and "
            "'auto'.", param=f"tools[{index}].action", code="invalid_value")
    has_picture = bool(turn.pictures) or turn.earlier is not None
    if asked == "edit" and not has_picture:
        raise InvalidRequest(
            f"Invalid 'tools[{index}].action': 'edit' needs a picture to edit: an "
            "'input_image' in the input, or a previous response with an image.",
            param=f"tools[{index}].action", code="invalid_value")
    return "edit" if asked == "edit" or (asked == "auto" and has_picture) else "generate"


def plan_call(request: CreateResponseRequest, tool: ImageGenerationTool, index: int,
              prompt: str, action: Action, pictures: list[Upload], mask: Upload | None,
              catalogue: Catalogue, *, stream: bool, auto_size: str) -> ImageCall:
    """`pictures` (an edit's, resolved and in order) name their own place in the input as
    `Upload.param`, so a bad one's 400 points there."""
    document: dict[str, Any] = {"prompt": prompt, "model": tool.model or TOOL_DEFAULT_MODEL}
    document.update(tool.model_dump(include=set(_TOOL_FIELDS), exclude_none=True))
    if request.user is not None:
        document["user"] = request.user
    if request.safety_identifier is not None:
        document["safety_identifier"] = request.safety_identifier
    if tool.partial_images is not None and (stream or tool.partial_images == 0):
        document["partial_images"] = tool.partial_images
    if stream and tool.output_format not in ("gif", "svg"):
        document["stream"] = True  # gif and svg come whole: the call streams no partials
    try:
        entry = catalogue.resolve(document["model"])
        if not entry.rules.is_gpt:
            raise InvalidRequest(
                f"Invalid value: '{entry.name}'. The image_generation tool draws with GPT "
                "image models (or a model served under its own name), which "
                f"'{entry.name}' is not.", param="model", code="invalid_value")
        if action == "generate":
            plan = plan_request(parse_as(CreateImageRequest, document), catalogue, auto_size)
        else:
            if tool.input_fidelity is not None:
                document["input_fidelity"] = tool.input_fidelity
            edit = parse_as(CreateImageEditRequest, document)
            plan = plan_edit(edit, pictures, mask, catalogue, json_body=True)
    except NotFound as exc:  # the tool's model: a bad option, not a missing resource
        raise _at_tool(InvalidRequest(exc.message, param="model", code=exc.code),
                       index) from None
    except InvalidRequest as exc:
        raise _at_tool(exc, index) from None
    return ImageCall(plan, action, prompt)


def _at_tool(exc: InvalidRequest, index: int) -> InvalidRequest:
    """The error with its `param` where the field sits in the Responses request."""
    param = exc.param
    if param is None or param.startswith(("input", "tools[", "previous_response_id")):
        return exc
    head = param.split(".", 1)[0].split("[", 1)[0]
    moved = {"prompt": "input", "image": "input", "images": "input",
             "mask": f"tools[{index}].input_image_mask",
             "user": "user", "safety_identifier": "safety_identifier"}.get(
        head, f"tools[{index}].{param}")
    exc.message = exc.message.replace(f"'{param}'", f"'{moved}'")
    exc.param = moved
    return exc
