"""A configurable prompt policy for `moderation=auto|low`.

A policy is a list of categories, each with regular expressions and the strictest level
it applies at. `auto` applies every category; `low` only those marked `low`. An operator
can switch moderation off in the config file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Level = Literal["auto", "low"]


@dataclass(frozen=True)
class Category:
    """A category applies when every one of its `patterns` is found, in any order.

    Patterns are searched one by one rather than joined as `a.*b`: that form backtracks
    quadratically on a long prompt of repeated words (3.4 s for `"kid " * 8000`).
    """

    name: str
    patterns: tuple[str, ...]
    applies_at_low: bool = False


_MINORS = r"\b(child|children|kid|kids|minor|minors|underage|preteen|toddler)\b"
_SEXUAL = r"\b(nude|naked|sexual|sex|porn|erotic)\b"

DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category("sexual/minors", (_MINORS, _SEXUAL), applies_at_low=True),
    Category("sexual", (r"\b(porn|pornographic|explicit sex|sexually explicit|hardcore sex)\b",)),
    Category(
        "violence/graphic",
        (r"\b(gore|gory|dismember(ed|ment)?|decapitat(ed|ion)|mutilat(ed|ion))\b",),
    ),
    Category(
        "self-harm",
        (r"\b(self[- ]harm|suicide instructions|how to kill myself)\b",),
        applies_at_low=True,
    ),
)


class PromptPolicy:
    """Checks a prompt; returns the categories it violates at the given level."""

    def __init__(self, categories: Sequence[Category] = DEFAULT_CATEGORIES,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self._compiled = [
            (c, [re.compile(p, re.IGNORECASE) for p in c.patterns])
            for c in categories
        ]

    def violations(self, prompt: str, level: Level) -> list[str]:
        if not self.enabled:
            return []
        found: list[str] = []
        for category, patterns in self._compiled:
            if level == "low" and not category.applies_at_low:
                continue
            if all(p.search(prompt) for p in patterns):
                found.append(category.name)
        return found
