"""limner's exceptions. Each knows its HTTP status and OpenAI error type; only
`limner.server.errors` turns them into responses.

    LimnerError
    ├── InvalidRequest          400 invalid_request_error (bad field, names the param)
    │   └── ModerationBlocked   400 content_policy_violation (dall-e)
    │       └── ImageModerationBlocked  400 moderation_blocked (GPT image models)
    ├── AuthenticationFailed    401 invalid_api_key
    ├── Forbidden               403 (a tampered file URL)
    ├── NotFound                404 (unknown model, unknown file, unknown batch)
    ├── Conflict                409 (cancelling a batch that already finished)
    ├── Gone                    410 (an expired file URL)
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415
    ├── QueueFull               429 rate_limit_exceeded + Retry-After
    ├── GenerationFailed        500 server_error (the engine raised)
    ├── StorageFailed           507 server_error (the image store could not write)
    ├── Unavailable             503 (shutting down, model not loaded)
    │   └── ModelUnavailable    503 model_unavailable (its load failed)
    └── TimedOut                504 (the per-request deadline passed)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class LimnerError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    should_retry: ClassVar[bool | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


class InvalidRequest(LimnerError):
    status = 400
    type = "invalid_request_error"


class ModerationBlocked(InvalidRequest):
    """dall-e's `content_policy_violation`."""


class ImageModerationBlocked(ModerationBlocked):
    """GPT image models' `moderation_blocked`."""

    type = "image_generation_user_error"


class AuthenticationFailed(LimnerError):
    status = 401
    type = "invalid_request_error"


class NotFound(LimnerError):
    status = 404
    type = "invalid_request_error"


class Conflict(LimnerError):
    status = 409
    type = "invalid_request_error"


class Forbidden(LimnerError):
    status = 403
    type = "invalid_request_error"


class Gone(LimnerError):
    status = 410
    type = "invalid_request_error"


class UnsupportedMediaType(LimnerError):
    status = 415
    type = "invalid_request_error"


class PayloadTooLarge(LimnerError):
    status = 413
    type = "invalid_request_error"


class QueueFull(LimnerError):
    status = 429
    type = "requests"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        # Both headers: `retry-after` in whole seconds (rounded up, as HTTP requires), and
        # `retry-after-ms`, which the official SDKs prefer, for waits under a second.
        super().__init__(
            message,
            code="rate_limit_exceeded",
            headers={"retry-after": str(math.ceil(retry_after_s)),
                     "retry-after-ms": str(math.ceil(retry_after_s * 1000))},
        )
        self.retry_after_s = retry_after_s


class GenerationFailed(LimnerError):
    status = 500
    should_retry = False


class StorageFailed(LimnerError):
    status = 507
    should_retry = False


class Unavailable(LimnerError):
    status = 503


class ModelUnavailable(Unavailable):
    """A model whose load failed: retrying does not help until an operator acts."""

    should_retry = False

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"The model '{model}' failed to load and is not available: "
                         f"{reason}", code="model_unavailable")
        self.reason = reason

    def named(self, model: str) -> ModelUnavailable:
        """The same failure, told under the name the request used."""
        return ModelUnavailable(model, self.reason)


class TimedOut(LimnerError):
    status = 504
    should_retry = False


def invalid_value(param: str, value: object, supported: list[str]) -> InvalidRequest:
    """OpenAI's wording for a value outside an enum."""
    quoted = [f"'{s}'" for s in supported]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    return InvalidRequest(
        f"Invalid value: '{value}'. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


JSON_TYPES: dict[type, str] = {str: "a string", bool: "a boolean", int: "an integer",
                               float: "a number", list: "an array", dict: "an object",
                               type(None): "null"}
"""How OpenAI's type errors name a JSON value's type."""


def expect_type(param: str, value: Any, kind: type) -> None:
    """OpenAI's `invalid_type` 400 unless `value` is a `kind` (a bool is no integer)."""
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        got = JSON_TYPES.get(type(value), "a value of another type")
        raise InvalidRequest(f"Invalid type for '{param}': expected {JSON_TYPES[kind]}, but "
                             f"got {got} instead.", param=param, code="invalid_type")


def unsupported_parameter(param: str, model: str) -> InvalidRequest:
    return InvalidRequest(
        f"Unsupported parameter: '{param}' is not supported with the model '{model}'.",
        param=param,
        code="unsupported_parameter",
    )


def model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )
