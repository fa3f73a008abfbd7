"""Which model names this server answers to, and which engine draws each.

Every OpenAI name maps to an engine through configuration (out of the box, all to the
default engine); each engine is also served under its own name with `rules.LOCAL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from limner.errors import model_not_found
from limner.rules import LOCAL, OPENAI_MODELS, ModelRules


@dataclass(frozen=True)
class ModelEntry:
    name: str
    rules: ModelRules
    engine: str
    owned_by: str


class Catalogue:
    def __init__(self, engines: list[str], default_engine: str,
                 aliases: Mapping[str, str] | None = None,
                 gpt_default: str = "gpt-image-1") -> None:
        if default_engine not in engines:
            raise ValueError(f"default engine {default_engine!r} is not among {engines}")
        aliases = dict(aliases or {})
        unknown = {e for e in aliases.values() if e not in engines}
        if unknown:
            raise ValueError(f"model aliases point at unknown engines: {sorted(unknown)}")
        self.default_engine = default_engine
        self.gpt_default = gpt_default
        self._entries: dict[str, ModelEntry] = {}
        for name, rules in OPENAI_MODELS.items():
            engine = aliases.get(name, default_engine)
            self._entries[name] = ModelEntry(name, rules, engine, "limner")
        for engine in engines:
            self._entries.setdefault(engine, ModelEntry(engine, LOCAL, engine, "limner"))
        for name, engine in aliases.items():
            self._entries.setdefault(name, ModelEntry(name, LOCAL, engine, "limner"))

    def resolve(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise model_not_found(name)
        return entry

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())
