"""`metadata`, as OpenAI takes it on responses and batches: up to 16 string pairs."""

from __future__ import annotations

from typing import Any

from limner.errors import InvalidRequest, expect_type

MAX_PAIRS = 16
MAX_KEY = 64
MAX_VALUE = 512


def check_metadata(value: Any) -> dict[str, str] | None:
    """The metadata as given (`None` when absent), or the 400 OpenAI answers for it."""
    if value is None:
        return None
    expect_type("metadata", value, dict)
    if len(value) > MAX_PAIRS:
        raise InvalidRequest(f"Invalid 'metadata': too many properties. Expected an object "
                             f"with at most {MAX_PAIRS} properties, but got {len(value)} "
                             "instead.", param="metadata", code="object_above_max_properties")
    for key, item in value.items():
        if len(key) > MAX_KEY:
            raise InvalidRequest(f"Invalid 'metadata': the key '{key[:MAX_KEY]}...' is longer "
                                 f"than {MAX_KEY} characters.", param="metadata",
                                 code="string_above_max_length")
        expect_type(f"metadata.{key}", item, str)
        if len(item) > MAX_VALUE:
            raise InvalidRequest(f"Invalid 'metadata.{key}': string too long. Expected a "
                                 f"string with maximum length {MAX_VALUE}, but got a string "
                                 f"with length {len(item)} instead.", param=f"metadata.{key}",
                                 code="string_above_max_length")
    return dict(value)
