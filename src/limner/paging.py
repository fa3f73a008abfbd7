"""OpenAI's list pagination: the records after the one named `after`, at most `limit`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from limner.errors import InvalidRequest

Record = TypeVar("Record")


def page_after(records: Sequence[Record], after: str | None, limit: int, noun: str,
               id_of: Callable[[Record], str]) -> tuple[list[Record], bool]:
    """One page of `records` (already in list order) and whether more follow; an `after`
    that is not among them is a 400 naming the `noun` (`file`, `batch`, `item`)."""
    start = 0
    if after is not None:
        position = next((i for i, r in enumerate(records) if id_of(r) == after), None)
        if position is None:
            raise InvalidRequest(f"Invalid 'after': no {noun} '{after}' is in this list.",
                                 param="after", code="invalid_value")
        start = position + 1
    rest = records[start:]
    return list(rest[:limit]), len(rest) > limit
