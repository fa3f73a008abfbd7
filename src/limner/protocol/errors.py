"""The error envelope every non-2xx answer carries: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    """All four keys are always present; `param` and `code` may be null."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_payload(
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON body of an error, keys in OpenAI's order."""
    body: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    body.update(extra)
    return {"error": body}
